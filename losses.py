"""Pure loss functions for the autoencoders, written with `keras.ops`.

This is the one place where the formulas live: `models.VAE.compute_loss` calls
`vae_loss`, `models.AE.compute_loss` calls `reconstruction_mse`, and the models
average them over the batch. Every function returns one value per image (shape
`(batch,)`). The maths is done in float32 even when the model runs in a
mixed-precision policy, so bfloat16 rounding never reaches the loss.
"""

from keras import ops

DEFAULT_RECONSTRUCTION_WEIGHT = 1000.0


def _per_image_axes(tensor):
    """All axes but the batch axis: (1, 2, 3) for images of shape (batch, H, W, C)."""
    return tuple(range(1, len(tensor.shape)))


def reconstruction_mse(images, reconstructions):
    """Mean squared reconstruction error of each image.

    Reduction: mean over height, width and channel, one value per image:
    `mse_i = 1 / (H * W * C) * sum_{h, w, c} (x_ihwc - x̂_ihwc)^2`.

    Args:
        images: originals, shape `(batch, H, W, C)`, values in [0, 1].
        reconstructions: the model's output, same shape.

    Returns:
        A float32 tensor of shape `(batch,)`.
    """
    images = ops.cast(images, "float32")
    reconstructions = ops.cast(reconstructions, "float32")
    return ops.mean(ops.square(images - reconstructions), axis=_per_image_axes(images))


def squared_error_map(images, reconstructions):
    """Where an image's MSE comes from: its per-pixel terms, shape `(batch, H, W)`.

    `map_ihw = 1 / (H * W * C) * sum_c (x_ihwc - x̂_ihwc)^2`, so that the sum of
    each map over height and width is `reconstruction_mse`.
    """
    images = ops.cast(images, "float32")
    reconstructions = ops.cast(reconstructions, "float32")
    height, width, channels = images.shape[1:]
    return ops.sum(ops.square(images - reconstructions), axis=-1) / (height * width * channels)


def _pooled_with_ink(images, reconstructions, pool_size):
    """Both images in float32, averaged over `pool_size` blocks, and their ink, shape (batch,):
    `sum x^2 + sum x̂^2` over height, width and channel."""
    images = ops.cast(images, "float32")
    reconstructions = ops.cast(reconstructions, "float32")
    if pool_size > 1:
        images, reconstructions = (ops.average_pool(tensor, pool_size, strides=pool_size,
                                                    padding="valid")
                                   for tensor in (images, reconstructions))
    axes = _per_image_axes(images)
    ink = ops.sum(ops.square(images), axis=axes) + ops.sum(ops.square(reconstructions), axis=axes)
    return images, reconstructions, ink


def relative_squared_error_map(images, reconstructions, pool_size=2, epsilon=1e-6):
    """Where an image's relative squared error comes from: shape `(batch, H, W)`.

    The per-block terms of `relative_squared_error`, `sum_c (x̄ - x̂̄)^2 / (ink +
    epsilon)` for each `pool_size` x `pool_size` block, spread evenly over the
    block's pixels, so that the sum of each map over height and width is the
    image's `relative_squared_error`.
    """
    images, reconstructions, ink = _pooled_with_ink(images, reconstructions, pool_size)
    blocks = ops.sum(ops.square(images - reconstructions), axis=-1)  # (batch, H / p, W / p)
    blocks = blocks / ops.reshape(ink + epsilon, (-1, 1, 1))
    if pool_size > 1:
        blocks = ops.repeat(ops.repeat(blocks, pool_size, axis=1), pool_size, axis=2)
        blocks = blocks / (pool_size * pool_size)
    return blocks


def relative_squared_error(images, reconstructions, pool_size=2, epsilon=1e-6):
    """Squared reconstruction error of each image, relative to the ink of both images.

    Both images are first averaged over `pool_size` x `pool_size` blocks, so a
    stroke drawn one pixel off costs less than a stroke that is missing. Then
    `rel_i = sum (x_i - x̂_i)^2 / (sum x_i^2 + sum x̂_i^2 + epsilon)`, the sums
    over height, width and channel: 0 for a perfect reconstruction, 1 for one
    that shares no ink with the image (2 at most). Unlike the MSE, it does not
    call an image with little ink (a thin 1) normal only because it has few
    pixels to get wrong, which makes it the better anomaly score
    (docs/anomaly-detection.md).

    Args:
        images: originals, shape `(batch, H, W, C)`, values in [0, 1]; H and W
            divisible by `pool_size`.
        reconstructions: the model's output, same shape.
        pool_size: the side of the averaged blocks; 1 compares pixel by pixel.
        epsilon: keeps the ratio finite for two blank images.

    Returns:
        A float32 tensor of shape `(batch,)`.
    """
    images, reconstructions, ink = _pooled_with_ink(images, reconstructions, pool_size)
    return (ops.sum(ops.square(images - reconstructions), axis=_per_image_axes(images))
            / (ink + epsilon))


def kl_divergence(z_mean, z_log_var):
    """KL divergence from the encoder's Gaussian to the standard normal prior.

    Closed form for `KL(N(mu, sigma^2) || N(0, I))` (Kingma and Welling 2014,
    "Auto-Encoding Variational Bayes", Appendix B):
    `kl_i = -0.5 * sum_j (1 + log sigma_ij^2 - mu_ij^2 - sigma_ij^2)`.

    Reduction: sum over the latent dimensions, one value per image.

    Args:
        z_mean: `mu`, shape `(batch, latent_dim)`.
        z_log_var: `log sigma^2`, shape `(batch, latent_dim)`.

    Returns:
        A float32 tensor of shape `(batch,)`; 0 exactly where mean = 0 and
        log-variance = 0.
    """
    z_mean = ops.cast(z_mean, "float32")
    z_log_var = ops.cast(z_log_var, "float32")
    return -0.5 * ops.sum(1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=-1)


def vae_loss(images, reconstructions, z_mean, z_log_var,
             reconstruction_weight=DEFAULT_RECONSTRUCTION_WEIGHT):
    """The VAE's training loss of each image, as in the original scripts.

    `loss_i = reconstruction_weight * reconstruction_mse_i + kl_divergence_i`,
    with the reductions of those two functions (mean over pixels, sum over
    latent dimensions). The weight of 1000 makes the reconstruction term
    dominate, which keeps the 2-D latent space sharp enough to read digits from.

    Args:
        images: originals, shape `(batch, H, W, C)`.
        reconstructions: the model's output, same shape.
        z_mean: shape `(batch, latent_dim)`.
        z_log_var: shape `(batch, latent_dim)`.
        reconstruction_weight: the factor on the mean squared error.

    Returns:
        A float32 tensor of shape `(batch,)`.
    """
    return (reconstruction_weight * reconstruction_mse(images, reconstructions)
            + kl_divergence(z_mean, z_log_var))
