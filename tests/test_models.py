"""Model builders: shapes, the Sampling layer, config round trips and save/reload."""

import json
import pathlib
import shutil

import keras
import numpy as np
import pytest

import fused_batch_norm
import losses
import models
import run_folder
import settings
import training


def test_sampling_draws_with_the_given_mean_and_std():
    layer = models.Sampling(seed=3)
    count = 20000
    z_mean = np.tile(np.array([[1.0, -2.0]], dtype="float32"), (count, 1))
    z_log_var = np.tile(np.log(np.array([[0.25, 4.0]], dtype="float32")), (count, 1))
    z = keras.ops.convert_to_numpy(layer([z_mean, z_log_var]))
    np.testing.assert_allclose(z.mean(axis=0), [1.0, -2.0], atol=0.05)
    np.testing.assert_allclose(z.std(axis=0), [0.5, 2.0], rtol=0.03)


def test_sampling_draws_fresh_noise_on_each_call():
    layer = models.Sampling(seed=3)
    zeros = np.zeros((4, 2), dtype="float32")
    first = keras.ops.convert_to_numpy(layer([zeros, zeros]))
    second = keras.ops.convert_to_numpy(layer([zeros, zeros]))
    assert not np.allclose(first, second)


def test_sampling_config_round_trips():
    layer = models.Sampling(seed=7, name="z")
    config = layer.get_config()
    assert config["seed"] == 7
    rebuilt = models.Sampling.from_config(config)
    assert rebuilt.seed == 7 and rebuilt.name == "z"
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, models.Sampling) and restored.get_config() == config
    zeros = np.zeros((3, 2), dtype="float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer([zeros, zeros])),
                                  keras.ops.convert_to_numpy(rebuilt([zeros, zeros])))


@pytest.mark.parametrize("latent_dim", [2, 5])
def test_vae_encoder_and_decoder_shapes(latent_dim):
    encoder = models.build_encoder(latent_dim, variational=True)
    decoder = models.build_decoder(latent_dim)
    images = np.zeros((3, 28, 28, 1), dtype="float32")
    z_mean, z_log_var, z = encoder(images)
    assert z_mean.shape == z_log_var.shape == z.shape == (3, latent_dim)
    assert decoder(z).shape == (3, 28, 28, 1)


def test_ae_encoder_ends_in_a_dense_bottleneck():
    encoder = models.build_encoder(3, variational=False)
    assert encoder.layers[-1].name == "z"
    assert encoder(np.zeros((2, 28, 28, 1), dtype="float32")).shape == (2, 3)


def test_default_architecture_is_the_original():
    encoder = models.build_encoder()
    convolutions = [layer for layer in encoder.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [layer.filters for layer in convolutions] == [32, 64, 64, 64]
    assert [layer.strides for layer in convolutions] == [(1, 1), (2, 2), (2, 2), (1, 1)]
    decoder = models.build_decoder()
    transposed = [layer for layer in decoder.layers
                  if isinstance(layer, keras.layers.Conv2DTranspose)]
    assert [layer.filters for layer in transposed] == [64, 64, 64, 1]
    assert [layer.strides for layer in transposed] == [(1, 1), (2, 2), (2, 2), (1, 1)]
    assert decoder.layers[-1].get_config()["activation"] == "sigmoid"


def test_under_mixed_precision_the_latent_code_enters_the_decoder_in_float32():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    for model in (models.VAE(), models.AE()):
        compute_dtypes = {layer.name: layer.compute_dtype
                          for part in (model.encoder, model.decoder) for layer in part.layers}
        # The convolutions run in bfloat16; the dense layer that takes the code, in float32.
        assert compute_dtypes["conv_1"] == compute_dtypes["deconv_1"] == "bfloat16"
        assert compute_dtypes["deconv_out"] == "bfloat16"
        assert compute_dtypes["dense"] == compute_dtypes["sigmoid"] == "float32"


def test_mismatched_strides_are_refused():
    with pytest.raises(ValueError, match="decoder strides"):
        models.VAE(encoder_strides=(1, 2, 2, 1), decoder_strides=(1, 2))


@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_model_config_round_trips(kind):
    model = models.build_model(kind, latent_dim=3, seed=5)
    rebuilt = type(model).from_config(model.get_config())
    assert rebuilt.get_config() == model.get_config()


@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_saved_weights_reload_to_identical_outputs(kind, tmp_path):
    model = models.build_model(kind, seed=1)
    images = np.random.default_rng(0).random((16, 28, 28, 1)).astype("float32")
    training.compile_model(model, 5e-4)
    model.fit(images, images, batch_size=8, epochs=1, verbose=0)  # move BN statistics too
    run_folder.save_weights(model, tmp_path / "model.weights.h5")
    reloaded = models.build_model(kind, **model.get_config())
    reloaded.load_weights(tmp_path / "model.weights.h5")
    np.testing.assert_array_equal(model.encode(images), reloaded.encode(images))
    latents = model.encode(images)
    np.testing.assert_array_equal(model.decode(latents), reloaded.decode(latents))


@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_keras_file_reloads_to_identical_outputs(kind, tmp_path):
    model = models.build_model(kind, seed=1)
    images = np.random.default_rng(0).random((4, 28, 28, 1)).astype("float32")
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    assert type(reloaded) is type(model)
    np.testing.assert_array_equal(model.encode(images), reloaded.encode(images))


def test_vae_logs_total_reconstruction_and_kl_separately():
    model = training.compile_model(models.VAE(seed=0), 5e-4)
    images = np.random.default_rng(0).random((32, 28, 28, 1)).astype("float32")
    history = model.fit(images, images, batch_size=16, epochs=1, verbose=0,
                        validation_data=(images, images)).history
    assert {"loss", "mse", "kl", "val_loss", "val_mse", "val_kl"} <= set(history)
    results = model.evaluate(images, images, batch_size=32, return_dict=True, verbose=0)
    # With one batch the logged total is exactly 1000 * batch-mean MSE + batch-mean KL.
    assert results["kl"] > 0
    np.testing.assert_allclose(results["loss"], 1000.0 * results["mse"] + results["kl"],
                               rtol=1e-4)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="tracing a tf.function twice is TensorFlow's")
def test_compile_model_builds_the_optimizer_so_the_training_step_is_traced_once():
    model = training.compile_model(models.VAE(seed=0), 5e-4)
    assert model.optimizer.built and len(model.optimizer.variables) > 1
    traced = []
    train_step = model.train_step
    model.train_step = lambda batch: traced.append(1) or train_step(batch)
    images = np.random.default_rng(0).random((16, 28, 28, 1)).astype("float32")
    model.fit(images, batch_size=8, epochs=2, verbose=0)
    assert len(traced) == 1  # twice when fit's first step makes the optimizer's variables


def test_ae_loss_is_the_mse():
    model = training.compile_model(models.AE(), 5e-4)
    images = np.random.default_rng(0).random((32, 28, 28, 1)).astype("float32")
    results = model.evaluate(images, images, batch_size=32, return_dict=True, verbose=0)
    assert "kl" not in results
    np.testing.assert_allclose(results["loss"], results["mse"], rtol=1e-5)


LEGACY_RUNS = pathlib.Path(__file__).resolve().parent / "data" / "legacy_runs"


def _real_digits(mnist_arrays, count, split="train"):
    return (mnist_arrays[f"x_{split}"][:count].astype("float32") / 255.0)[..., None]


@pytest.mark.parametrize("kind", ["vae", "ae"])
@pytest.mark.parametrize("with_targets", [False, True])
def test_the_notebook_habit_trains_the_whole_loss(kind, with_targets, mnist_arrays):
    # What the keras.io VAE example teaches: compile with an optimizer only, then fit.
    # If the model's loss lost its reconstruction term, the decoder would get no
    # gradient and keep its initial weights, and the error would not fall.
    train_images = _real_digits(mnist_arrays, 512)
    test_images = _real_digits(mnist_arrays, 256, "test")
    keras.utils.set_random_seed(0)
    model = models.build_model(kind, seed=0)
    initial_decoder = [np.array(weight) for weight in model.decoder.get_weights()]
    untrained_error = np.mean((model.reconstruct(test_images) - test_images) ** 2)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    targets = (train_images,) if with_targets else ()
    model.fit(train_images, *targets, epochs=2, batch_size=32, verbose=0)
    for before, after in zip(initial_decoder, model.decoder.get_weights()):
        assert not np.allclose(before, after), "a decoder weight did not train"
    trained_error = np.mean((model.reconstruct(test_images) - test_images) ** 2)
    assert trained_error < 0.7 * untrained_error


@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_uint8_pixels_give_what_their_floats_give(kind, mnist_arrays):
    # Training holds its images as uint8; the model divides each batch by 255 itself.
    pixels = mnist_arrays["x_test"][:40, ..., np.newaxis]  # uint8, (40, 28, 28, 1)
    floats = pixels.astype("float32") / 255.0
    model = training.compile_model(models.build_model(kind, seed=0), 5e-4)
    # The VAE's forward pass samples: each pair of calls draws the same noise.
    noise_states = [layer.seed_generator.state for layer in model.encoder.layers
                    if isinstance(layer, models.Sampling)]
    noise_at_start = [state.numpy() for state in noise_states]

    def draw_the_same_noise_again():
        for state, value in zip(noise_states, noise_at_start):
            state.assign(value)

    model.recompute_batch_norm_statistics(pixels, batch_size=16)
    statistics = [weight.numpy() for weight in model.weights]
    draw_the_same_noise_again()
    model.recompute_batch_norm_statistics(floats, batch_size=16)
    for before, after in zip(statistics, model.weights):
        np.testing.assert_allclose(before, after.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.anomaly_scores(pixels), model.anomaly_scores(floats),
                               rtol=1e-5)
    np.testing.assert_allclose(model.anomaly_maps(pixels), model.anomaly_maps(floats),
                               rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(model.encode(pixels), model.encode(floats), rtol=1e-5, atol=1e-6)
    draw_the_same_noise_again()
    pixel_outputs = model.predict(pixels, verbose=0)
    draw_the_same_noise_again()
    # To the bit, in the compiled graph too: training on uint8 trains as on the floats.
    np.testing.assert_array_equal(pixel_outputs, model.predict(floats, verbose=0))
    # The loss's target too (compute_loss), not only the forward pass.
    draw_the_same_noise_again()
    pixel_loss = model.evaluate(pixels, pixels, batch_size=20, verbose=0, return_dict=True)
    draw_the_same_noise_again()
    float_loss = model.evaluate(floats, floats, batch_size=20, verbose=0, return_dict=True)
    assert pixel_loss == float_loss


def test_vae_loss_is_the_weighted_mse_plus_kl_of_losses_py():
    images = np.random.default_rng(0).random((8, 28, 28, 1)).astype("float32")
    for weight in (1000.0, 0.0):
        model = models.VAE(seed=0, reconstruction_weight=weight)
        model.compile(optimizer="adam")
        results = model.evaluate(images, batch_size=8, return_dict=True, verbose=0)
        np.testing.assert_allclose(results["loss"], weight * results["mse"] + results["kl"],
                                   rtol=1e-5)


def test_a_target_given_to_fit_is_the_reconstruction_target():
    # fit(x, y) reconstructs y (a denoising set-up, say); fit(x) reconstructs x.
    images = np.random.default_rng(0).random((8, 28, 28, 1)).astype("float32")
    model = models.AE()
    model.compile(optimizer="adam")
    against_input = model.evaluate(images, batch_size=8, return_dict=True, verbose=0)["mse"]
    against_zeros = model.evaluate(images, np.zeros_like(images), batch_size=8,
                                   return_dict=True, verbose=0)["mse"]
    reconstructions = model.predict(images, verbose=0)
    np.testing.assert_allclose(against_zeros, np.mean(reconstructions ** 2), rtol=1e-4)
    np.testing.assert_allclose(against_input, np.mean((reconstructions - images) ** 2), rtol=1e-4)


def test_reconstruction_weight_and_batch_norm_are_in_the_config():
    model = models.VAE(reconstruction_weight=250.0, batch_norm="keras")
    config = model.get_config()
    assert config["reconstruction_weight"] == 250.0 and config["batch_norm"] == "keras"
    assert models.VAE.from_config(config).reconstruction_weight == 250.0


def test_batch_norm_auto_is_keras_own_layer_where_no_fused_kernel_exists():
    norms = [layer for layer in models.build_decoder(batch_norm="auto").layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    expected = (fused_batch_norm.BatchNormalization if fused_batch_norm.AVAILABLE
                else keras.layers.BatchNormalization)
    assert len(norms) == 3 and all(type(layer) is expected for layer in norms)
    if not fused_batch_norm.AVAILABLE:
        with pytest.raises(ValueError, match="TensorFlow"):
            models.build_decoder(batch_norm="fused")
    with pytest.raises(ValueError, match="batch_norm"):
        models.build_decoder(batch_norm="fast")


@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_run_folders_written_before_the_redesign_still_load(kind):
    # Written by the code of commit a07cf10 (tests/data/legacy_runs/make_legacy_runs.py).
    model, config = run_folder.load_model(LEGACY_RUNS / kind)
    with np.load(LEGACY_RUNS / kind / "expected_outputs.npz") as expected:
        np.testing.assert_allclose(model.encode(expected["images"]), expected["latents"],
                                   rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(model.reconstruct(expected["images"]),
                                   expected["reconstructions"], rtol=1e-4, atol=1e-5)
    assert config["settings"].model == kind and config["settings"].learning_rate == 1e-3
    if kind == "vae":
        assert model.reconstruction_weight == 1000.0


@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_a_keras_file_loads_with_keras_own_loader_and_keeps_its_methods(kind, tmp_path):
    model = models.build_model(kind, latent_dim=3, seed=1)
    images = np.random.default_rng(0).random((4, 28, 28, 1)).astype("float32")
    model.compile(optimizer="adam")
    model.fit(images, batch_size=4, epochs=1, verbose=0)  # move the BN statistics
    run_folder.save_model(model, tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    assert type(reloaded) is type(model) and reloaded.get_config() == model.get_config()
    codes = reloaded.encode(images)
    assert codes.shape == (4, 3)
    np.testing.assert_allclose(codes, model.encode(images), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(reloaded.decode(codes), model.decode(codes), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(reloaded.reconstruct(images), model.reconstruct(images),
                               rtol=1e-5, atol=1e-6)
    if kind == "vae":
        samples = reloaded.sample(5, seed=2)
        assert samples.shape == (5, 28, 28, 1) and 0 <= samples.min() and samples.max() <= 1
        np.testing.assert_array_equal(samples, reloaded.sample(5, seed=2))
    # The reloaded model trains on: its optimizer and loss came with it.
    reloaded.fit(images, batch_size=4, epochs=1, verbose=0)


def test_a_legacy_vae_config_keeps_a_reconstruction_weight_of_zero(tmp_path):
    # Old configs stored the weight only under "training"; 0 is a weight, not "missing".
    run_dir = tmp_path / "vae"
    shutil.copytree(LEGACY_RUNS / "vae", run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    config["training"]["reconstruction_weight"] = 0.0
    (run_dir / "config.json").write_text(json.dumps(config))
    model, _ = run_folder.load_model(run_dir)
    assert model.reconstruction_weight == 0.0


@pytest.mark.skipif(fused_batch_norm.AVAILABLE, reason="TensorFlow has the fused kernel")
def test_asking_for_the_fused_batch_norm_without_tensorflow_is_a_one_line_user_error():
    run_settings = settings.TrainingSettings(batch_norm="fused")
    with pytest.raises(settings.SettingsError, match="--batch-norm auto"):
        training.build_model(run_settings)


def test_recomputed_batch_norm_statistics_match_training_mode_after_a_short_run(mnist_arrays):
    """A run of 48 steps: its moving averages lag; recomputed statistics score as training does.

    The training images are sorted by digit, as an image folder's are, so statistics
    taken batch by batch in file order would be per-digit ones.
    """
    order = np.argsort(mnist_arrays["y_train"][:512], kind="stable")
    images = (mnist_arrays["x_train"][:512][order] / 255.0).astype("float32")[..., None]
    test_images = (mnist_arrays["x_test"][:256] / 255.0).astype("float32")[..., None]
    keras.utils.set_random_seed(0)
    model = models.AE(batch_norm="keras")
    model.compile(optimizer=keras.optimizers.Adam(5e-4))
    model.fit(images, epochs=3, batch_size=32, shuffle=True, verbose=0)

    lagging = model.reconstruction_errors(test_images).mean()
    model.recompute_batch_norm_statistics(images, batch_size=32)  # 51 images per digit
    recomputed = model.reconstruction_errors(test_images).mean()
    # Last: a training-mode call also moves the averages a little.
    training_mode = float(keras.ops.mean(
        models.losses.reconstruction_mse(test_images, model(test_images, training=True))))
    assert abs(recomputed - training_mode) <= 0.10 * training_mode, (recomputed, training_mode)
    assert abs(lagging - training_mode) > 0.10 * training_mode, (lagging, training_mode)


@pytest.mark.parametrize("kind,score", [("vae", "mse"), ("ae", "mse"), ("ae", "relative")])
def test_anomaly_threshold_is_a_percentile_of_the_given_errors_and_survives_saving(
        kind, score, tmp_path, mnist_arrays):
    images = (mnist_arrays["x_test"][:64] / 255.0).astype("float32")[..., None]
    model = models.build_model(kind, seed=0, anomaly_score=score)
    with pytest.raises(ValueError, match="no anomaly threshold"):
        model.detect_anomalies(images)
    threshold = model.set_anomaly_threshold(images[:32], percentile=90)
    score_function = {"mse": losses.reconstruction_mse,
                      "relative": losses.relative_squared_error}[score]
    expected = np.asarray(score_function(images[:32], model.reconstruct(images[:32])))
    assert threshold == pytest.approx(np.percentile(expected, 90))
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    errors, is_anomaly = loaded.detect_anomalies(images)
    assert loaded.anomaly_score == score
    assert loaded.anomaly_threshold == threshold and loaded.threshold_percentile == 90
    np.testing.assert_array_equal(is_anomaly, errors > threshold)
    assert is_anomaly[:32].sum() == 4  # 10 % of the 32 images the threshold came from (rounded up)


def test_recomputed_statistics_are_those_of_the_whole_data_even_when_it_is_sorted(mnist_arrays):
    """The first batch norm's input is fixed by the images: its recomputed variance must be
    that input's variance over all images, not the smaller one within each digit's batches."""
    labels = mnist_arrays["y_train"][:1024]
    order = np.argsort(labels, kind="stable")
    # A background as bright as the digit is large (0: black, 9: 72 % gray), so that the
    # digits' feature statistics differ, as the classes of a user's folder may.
    background = (0.08 * labels[order]).astype("float32")[:, None, None, None]
    images = background + 0.2 * (mnist_arrays["x_train"][:1024][order] / 255.0)[..., None]
    model = models.AE(batch_norm="keras", seed=0)
    model.recompute_batch_norm_statistics(images, batch_size=32)
    first_input = keras.Model(model.encoder.input, model.encoder.get_layer("relu_0").output)
    features = first_input.predict(images, verbose=0)  # (N, 28, 28, 32)
    batch_norm = model.encoder.get_layer("batch_norm_0")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(batch_norm.moving_mean),
                               features.mean(axis=(0, 1, 2)), rtol=1e-2, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(batch_norm.moving_variance),
                               features.var(axis=(0, 1, 2)), rtol=0.05, atol=1e-6)


@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_resize_upsampling_decodes_to_the_image_shape_with_the_same_weights_count(kind, tmp_path):
    original = models.build_model(kind, image_shape=(32, 32, 3))
    resized = models.build_model(kind, image_shape=(32, 32, 3), upsampling="resize")
    upsampling_layers = [layer.name for layer in resized.decoder.layers
                         if isinstance(layer, keras.layers.UpSampling2D)]
    assert upsampling_layers == ["upsample_1", "upsample_2"]  # the two stride-2 blocks
    assert not any(isinstance(layer, keras.layers.UpSampling2D) for layer in original.decoder.layers)
    assert resized.decode(np.zeros((2, resized.latent_dim))).shape == (2, 32, 32, 3)
    assert resized.count_params() == original.count_params()
    resized.save(tmp_path / "model.keras")
    assert keras.saving.load_model(tmp_path / "model.keras").upsampling == "resize"
    with pytest.raises(ValueError, match="upsampling must be one of"):
        models.build_model(kind, upsampling="bicubic")


@pytest.mark.parametrize("kind", ["vae", "ae"])
@pytest.mark.parametrize("upsampling, size", [("transpose4x4", 4), ("transpose2x2", 2)])
def test_a_transposed_upsampling_sets_the_kernel_of_the_stride_2_blocks_only(kind, upsampling,
                                                                             size, tmp_path):
    model = models.build_model(kind, image_shape=(32, 32, 3), upsampling=upsampling)
    kernels = {layer.name: layer.kernel_size for layer in model.decoder.layers
               if isinstance(layer, keras.layers.Conv2DTranspose)}
    # Block 0 has stride 1 and the output layer too: they keep the 3x3 kernel.
    assert kernels == {"deconv_0": (3, 3), "deconv_1": (size, size), "deconv_2": (size, size),
                       "deconv_out": (3, 3)}
    assert model.decode(np.zeros((2, model.latent_dim))).shape == (2, 32, 32, 3)
    original = models.build_model(kind, image_shape=(32, 32, 3))
    extra_weights = 2 * (size * size - 9) * 64 * 64  # two blocks, 64 -> 64 filters
    assert model.count_params() == original.count_params() + extra_weights
    model.save(tmp_path / "model.keras")
    assert keras.saving.load_model(tmp_path / "model.keras").upsampling == upsampling


def test_the_flags_offer_the_options_the_models_build():
    # settings.py names them without importing Keras, so that --help is instant.
    assert settings.UPSAMPLINGS == models.UPSAMPLINGS
    assert settings.BATCH_NORMS == models.BATCH_NORMS


def test_a_2x2_transposed_convolution_at_stride_2_gives_each_output_pixel_one_input_pixel():
    """Why transpose2x2 cannot draw the original's checkerboard: no two input pixels overlap
    in its output, so an output pixel is its input pixel times the tap of its phase."""
    model = models.build_model("ae", upsampling="transpose2x2")
    layer = model.decoder.get_layer("deconv_2")
    features = np.random.default_rng(0).normal(size=(1, 14, 14, 64)).astype("float32")
    outputs = keras.ops.convert_to_numpy(layer(features))  # (1, 28, 28, 64)
    kernel = keras.ops.convert_to_numpy(layer.kernel)  # (2, 2, filters out, channels in)
    bias = keras.ops.convert_to_numpy(layer.bias)
    for row, column in [(0, 0), (5, 9), (13, 13)]:
        for phase_row in (0, 1):
            for phase_column in (0, 1):
                expected = kernel[phase_row, phase_column] @ features[0, row, column] + bias
                np.testing.assert_allclose(
                    outputs[0, 2 * row + phase_row, 2 * column + phase_column], expected,
                    rtol=1e-5, atol=1e-5)


def test_recomputed_statistics_come_from_a_seeded_sample_of_at_most_max_images(mnist_arrays):
    images = (mnist_arrays["x_train"][:96] / 255.0).astype("float32")[..., None]
    sampled, subset = models.AE(batch_norm="keras", seed=0), models.AE(batch_norm="keras", seed=0)
    subset.set_weights(sampled.get_weights())
    sampled.recompute_batch_norm_statistics(images, batch_size=16, seed=3, max_images=32)
    # The same pass over the 32 images that the seeded order starts with, and no others.
    chosen = images[np.random.default_rng(3).permutation(len(images))[:32]]
    subset.recompute_batch_norm_statistics(chosen, batch_size=16, seed=3, max_images=32)
    everything = models.AE(batch_norm="keras", seed=0)
    everything.set_weights(sampled.get_weights())
    everything.recompute_batch_norm_statistics(images, batch_size=16, seed=3, max_images=96)
    name = "batch_norm_0"
    sampled_mean = sampled.encoder.get_layer(name).moving_mean.numpy()
    assert not np.allclose(sampled_mean, everything.encoder.get_layer(name).moving_mean.numpy())
    # The subset pass reorders the 32 images by its own permutation: the mean of equal batch
    # means is the same whatever the order.
    np.testing.assert_allclose(sampled_mean, subset.encoder.get_layer(name).moving_mean.numpy(),
                               rtol=1e-4, atol=1e-6)
