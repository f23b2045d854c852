"""Model builders: shapes, the Sampling layer, config round trips and save/reload."""

import keras
import numpy as np
import pytest

import models
import run_folder
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


def _conv_then_batch_norm(batch_norm_class, **batch_norm_kwargs):
    """A tiny Conv2D -> batch norm -> mean model, with fixed initial weights."""
    images = keras.Input((6, 6, 2))
    features = keras.layers.Conv2D(3, 3, padding="same",
                                   kernel_initializer=keras.initializers.GlorotUniform(seed=1),
                                   bias_initializer=keras.initializers.RandomNormal(seed=2))(images)
    features = batch_norm_class(name="norm", **batch_norm_kwargs)(features)
    model = keras.Model(images, keras.layers.GlobalAveragePooling2D()(features))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


@pytest.mark.parametrize("batch_norm_kwargs", [{}, {"momentum": 0.5, "epsilon": 1e-2}])
def test_batch_normalization_trains_like_keras_own(batch_norm_kwargs):
    # Same start, same batches: outputs, gradients (through the weights after SGD
    # steps) and moving statistics must match keras.layers.BatchNormalization.
    rng = np.random.default_rng(0)
    images = rng.normal(2.0, 3.0, (5, 8, 6, 6, 2)).astype("float32")  # 5 batches of 8
    targets = rng.normal(size=(5, 8, 3)).astype("float32")
    ours = _conv_then_batch_norm(models.BatchNormalization, **batch_norm_kwargs)
    keras_own = _conv_then_batch_norm(keras.layers.BatchNormalization, **batch_norm_kwargs)
    keras_own.set_weights(ours.get_weights())
    for batch_images, batch_targets in zip(images, targets):
        losses = [model.train_on_batch(batch_images, batch_targets) for model in (ours, keras_own)]
        np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)
    for our_weight, keras_weight in zip(ours.get_weights(), keras_own.get_weights()):
        np.testing.assert_allclose(our_weight, keras_weight, rtol=1e-4, atol=1e-5)
    moving_variance = ours.get_layer("norm").moving_variance
    assert not np.allclose(keras.ops.convert_to_numpy(moving_variance), 1.0)  # it did update
    for training in (True, False):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(ours(images[0], training=training)),
            keras.ops.convert_to_numpy(keras_own(images[0], training=training)),
            rtol=1e-4, atol=1e-5)


def test_batch_normalization_in_bfloat16_matches_float32():
    features = np.random.default_rng(1).normal(1.0, 2.0, (4, 5, 5, 3)).astype("float32")
    full = models.BatchNormalization()
    half = models.BatchNormalization(dtype="mixed_bfloat16")
    for training in (True, False):
        expected = keras.ops.convert_to_numpy(full(features, training=training))
        result = half(keras.ops.cast(features, "bfloat16"), training=training)
        assert keras.backend.standardize_dtype(result.dtype) == "bfloat16"
        np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.cast(result, "float32")),
                                   expected, atol=0.05)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(half.moving_mean),
                               keras.ops.convert_to_numpy(full.moving_mean), rtol=1e-2)


def test_batch_normalization_config_round_trips_and_shares_keras_weights(tmp_path):
    layer = models.BatchNormalization(momentum=0.9, epsilon=1e-2, name="norm")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, models.BatchNormalization)
    assert restored.get_config() == layer.get_config()
    # Weights are filed under Keras' own layer name, so either class loads the other's.
    ours = _conv_then_batch_norm(models.BatchNormalization)
    ours.get_layer("norm").moving_mean.assign([0.5, -1.0, 2.0])
    ours.save_weights(tmp_path / "ours.weights.h5")
    keras_own = _conv_then_batch_norm(keras.layers.BatchNormalization)
    keras_own.load_weights(tmp_path / "ours.weights.h5")
    for our_weight, keras_weight in zip(ours.get_weights(), keras_own.get_weights()):
        np.testing.assert_array_equal(our_weight, keras_weight)


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
    training.compile_model(model, 5e-4, 1000.0)
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
    model = training.compile_model(models.VAE(seed=0), 5e-4, 1000.0)
    images = np.random.default_rng(0).random((32, 28, 28, 1)).astype("float32")
    history = model.fit(images, images, batch_size=16, epochs=1, verbose=0,
                        validation_data=(images, images)).history
    assert {"loss", "mse", "kl", "val_loss", "val_mse", "val_kl"} <= set(history)
    results = model.evaluate(images, images, batch_size=32, return_dict=True, verbose=0)
    # With one batch the logged total is exactly 1000 * batch-mean MSE + batch-mean KL.
    assert results["kl"] > 0
    np.testing.assert_allclose(results["loss"], 1000.0 * results["mse"] + results["kl"],
                               rtol=1e-4)


def test_ae_loss_is_the_mse():
    model = training.compile_model(models.AE(), 5e-4)
    images = np.random.default_rng(0).random((32, 28, 28, 1)).astype("float32")
    results = model.evaluate(images, images, batch_size=32, return_dict=True, verbose=0)
    assert "kl" not in results
    np.testing.assert_allclose(results["loss"], results["mse"], rtol=1e-5)
