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
