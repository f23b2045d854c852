"""Property-based tests of the loss functions (hypothesis)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from keras import ops

import losses

PIXELS = st.floats(0.0, 1.0, width=32)
LATENT_MEANS = st.floats(-20.0, 20.0, width=32)
LOG_VARIANCES = st.floats(-20.0, 20.0, width=32)


def image_pairs():
    shapes = st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 6), st.integers(1, 2))
    return shapes.flatmap(lambda shape: st.tuples(arrays(np.float32, shape, elements=PIXELS),
                                                  arrays(np.float32, shape, elements=PIXELS)))


def latent_pairs():
    shapes = st.tuples(st.integers(1, 4), st.integers(1, 8))
    return shapes.flatmap(lambda shape: st.tuples(arrays(np.float32, shape, elements=LATENT_MEANS),
                                                  arrays(np.float32, shape, elements=LOG_VARIANCES)))


@settings(max_examples=60, deadline=None)
@given(image_pairs())
def test_reconstruction_mse_is_finite_non_negative_and_at_most_one(pair):
    images, reconstructions = pair
    mse = ops.convert_to_numpy(losses.reconstruction_mse(images, reconstructions))
    assert mse.shape == (images.shape[0],)
    assert np.all(np.isfinite(mse)) and np.all(mse >= 0) and np.all(mse <= 1.0 + 1e-6)


@settings(max_examples=60, deadline=None)
@given(latent_pairs())
def test_kl_is_finite_and_non_negative(pair):
    z_mean, z_log_var = pair
    kl = ops.convert_to_numpy(losses.kl_divergence(z_mean, z_log_var))
    assert kl.shape == (z_mean.shape[0],)
    # Each term exp(v) - 1 - v + m^2 is >= 0; float32 rounding can leave tiny negatives.
    assert np.all(np.isfinite(kl)) and np.all(kl >= -1e-4 * (1 + np.abs(kl)))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5), st.integers(1, 8))
def test_kl_is_exactly_zero_at_the_prior(batch, latent_dim):
    zeros = np.zeros((batch, latent_dim), np.float32)
    assert np.all(ops.convert_to_numpy(losses.kl_divergence(zeros, zeros)) == 0.0)


@settings(max_examples=40, deadline=None)
@given(image_pairs(), st.floats(0.0, 1e4))
def test_vae_loss_is_finite_and_non_negative(pair, weight):
    images, reconstructions = pair
    batch = images.shape[0]
    z = np.zeros((batch, 2), np.float32)
    loss = ops.convert_to_numpy(losses.vae_loss(images, reconstructions, z, z, weight))
    assert np.all(np.isfinite(loss)) and np.all(loss >= 0)
