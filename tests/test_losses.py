"""The loss functions against NumPy on small hand-made arrays."""

import numpy as np
import pytest
from keras import ops

import losses


def to_numpy(tensor):
    return np.asarray(ops.convert_to_numpy(tensor))


def test_reconstruction_mse_is_the_mean_over_pixels_of_each_image():
    images = np.zeros((2, 2, 2, 1), dtype="float32")
    reconstructions = np.array([[[[1.0], [0.0]], [[0.0], [0.0]]],
                                [[[0.5], [0.5]], [[0.5], [0.5]]]], dtype="float32")
    result = to_numpy(losses.reconstruction_mse(images, reconstructions))
    np.testing.assert_allclose(result, [0.25, 0.25], rtol=1e-6)


def test_reconstruction_mse_matches_numpy_on_random_arrays():
    rng = np.random.default_rng(0)
    images = rng.random((3, 4, 5, 2)).astype("float32")
    reconstructions = rng.random((3, 4, 5, 2)).astype("float32")
    expected = ((images - reconstructions) ** 2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(to_numpy(losses.reconstruction_mse(images, reconstructions)),
                               expected, rtol=1e-5)


def test_relative_squared_error_by_hand():
    images = np.zeros((3, 2, 2, 1), dtype="float32")
    reconstructions = np.zeros((3, 2, 2, 1), dtype="float32")
    images[0, 0, 0] = 1.0                     # all ink missed: 1 / (1 + 0) = 1
    images[1, :, :] = 1.0                     # half the ink on each pixel: 4 * 0.25 / (4 + 1)
    reconstructions[1, :, :] = 0.5
    images[2, 0, 0] = reconstructions[2, 1, 1] = 1.0  # ink in the wrong place: 2 / (1 + 1)
    result = to_numpy(losses.relative_squared_error(images, reconstructions, pool_size=1))
    np.testing.assert_allclose(result, [1.0, 0.2, 1.0], rtol=1e-5)
    # Averaged over 2 x 2 blocks, ink one pixel off is no error; missing ink still is.
    pooled = to_numpy(losses.relative_squared_error(images, reconstructions, pool_size=2))
    np.testing.assert_allclose(pooled, [1.0, 0.2, 0.0], atol=1e-4)
    # Two blank images are a perfect reconstruction, not 0 / 0.
    assert to_numpy(losses.relative_squared_error(np.zeros((1, 2, 2, 1)),
                                                  np.zeros((1, 2, 2, 1))))[0] == 0.0


def test_relative_squared_error_ignores_the_amount_of_ink_that_the_mse_counts():
    # The same relative mistake on a faint and on a dark image: same score, MSE 4x apart.
    rng = np.random.default_rng(0)
    dark = rng.random((1, 4, 5, 2)).astype("float32")
    faint = dark / 2
    pairs = np.concatenate([dark, faint]), np.concatenate([dark * 0.8, faint * 0.8])
    relative = to_numpy(losses.relative_squared_error(*pairs, pool_size=1))
    mse = to_numpy(losses.reconstruction_mse(*pairs))
    np.testing.assert_allclose(relative[0], relative[1], rtol=1e-5)
    np.testing.assert_allclose(mse[0], 4 * mse[1], rtol=1e-5)
    images, reconstructions = pairs
    expected = ((images - reconstructions) ** 2).sum(axis=(1, 2, 3)) / (
        (images ** 2).sum(axis=(1, 2, 3)) + (reconstructions ** 2).sum(axis=(1, 2, 3)))
    np.testing.assert_allclose(relative, expected, rtol=1e-5)


def test_relative_squared_error_pools_like_numpy():
    rng = np.random.default_rng(1)
    images, reconstructions = rng.random((2, 3, 4, 6, 2)).astype("float32")

    def pooled(x):  # 2 x 2 block means: (3, 4, 6, 2) -> (3, 2, 3, 2)
        return x.reshape(3, 2, 2, 3, 2, 2).mean(axis=(2, 4))

    x, r = pooled(images), pooled(reconstructions)
    expected = ((x - r) ** 2).sum(axis=(1, 2, 3)) / ((x ** 2).sum(axis=(1, 2, 3))
                                                      + (r ** 2).sum(axis=(1, 2, 3)))
    np.testing.assert_allclose(to_numpy(losses.relative_squared_error(images, reconstructions)),
                               expected, rtol=1e-5)


def test_kl_is_zero_at_the_prior():
    zeros = np.zeros((4, 2), dtype="float32")
    np.testing.assert_array_equal(to_numpy(losses.kl_divergence(zeros, zeros)), np.zeros(4))


def test_kl_matches_the_closed_form_by_hand():
    # mean (1, 2), log-variance (0, log 4): -0.5 * [(1 + 0 - 1 - 1) + (1 + log 4 - 4 - 4)]
    z_mean = np.array([[1.0, 2.0]], dtype="float32")
    z_log_var = np.array([[0.0, np.log(4.0)]], dtype="float32")
    expected = -0.5 * ((1 + 0 - 1 - 1) + (1 + np.log(4.0) - 4 - 4))
    np.testing.assert_allclose(to_numpy(losses.kl_divergence(z_mean, z_log_var)), [expected],
                               rtol=1e-6)


def test_kl_sums_over_latent_dimensions_and_matches_numpy():
    rng = np.random.default_rng(1)
    z_mean = rng.normal(size=(5, 3)).astype("float32")
    z_log_var = rng.normal(size=(5, 3)).astype("float32")
    expected = -0.5 * np.sum(1 + z_log_var - z_mean ** 2 - np.exp(z_log_var), axis=1)
    np.testing.assert_allclose(to_numpy(losses.kl_divergence(z_mean, z_log_var)), expected,
                               rtol=1e-5)


@pytest.mark.parametrize("weight", [1000.0, 1.0, 0.0])
def test_vae_loss_is_weighted_mse_plus_kl(weight):
    rng = np.random.default_rng(2)
    images = rng.random((2, 3, 3, 1)).astype("float32")
    reconstructions = rng.random((2, 3, 3, 1)).astype("float32")
    z_mean = rng.normal(size=(2, 2)).astype("float32")
    z_log_var = rng.normal(size=(2, 2)).astype("float32")
    mse = ((images - reconstructions) ** 2).mean(axis=(1, 2, 3))
    kl = -0.5 * np.sum(1 + z_log_var - z_mean ** 2 - np.exp(z_log_var), axis=1)
    result = losses.vae_loss(images, reconstructions, z_mean, z_log_var, weight)
    np.testing.assert_allclose(to_numpy(result), weight * mse + kl, rtol=1e-5)


def test_losses_are_float32_for_bfloat16_inputs():
    images = ops.cast(np.full((1, 2, 2, 1), 0.5, dtype="float32"), "bfloat16")
    assert ops.convert_to_numpy(losses.reconstruction_mse(images, images)).dtype == np.float32
