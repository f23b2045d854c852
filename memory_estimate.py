"""Will a run fit in memory? An estimate from the settings, made before any weight exists.

A latent size of 100,000 makes the Dense layers around the latent code hold
about 940 million weights; building and training that needs some 28 GiB, and
on a smaller machine the kernel kills the process (exit 137) with no word.
`refuse_if_too_big` turns that into one line, before the model is built.

The estimate counts, in bytes:
  - the model state: every weight 4 bytes (float32 master copies, also under
    mixed precision) times STATE_COPIES: the weights, their gradients, Adam's
    two moments, and the host copies of weights and moments that each
    checkpoint and the saved model make;
  - the activations of one batch: the output of every convolution, ReLU and
    batch norm of the encoder and decoder, kept for the backward pass.
It leaves out what is already in memory (the data set) and the framework's
own overhead, so it errs low: it refuses only what surely cannot fit.
"""

import math
import os
import pathlib

import models
import settings as run_settings

BYTES_PER_NUMBER = 4
STATE_COPIES = 8       # weights, gradients, 2 Adam moments, 4 host copies (checkpoint, save)
ACTIVATION_COPIES = 1  # forward values kept for the backward pass (gradients come and go)
GIB = 1024 ** 3


def readable_size(size):
    """'28.1 GiB', '87 MiB': a byte count for a person."""
    if size >= GIB:
        return f"{size / GIB:,.1f} GiB"
    return f"{size / 1024 ** 2:,.0f} MiB"


def parameter_count(kind, latent_dim, image_shape=models.IMAGE_SHAPE,
                    encoder_filters=models.ENCODER_FILTERS,
                    decoder_filters=models.DECODER_FILTERS):
    """The number of weights of `models.build_model(kind, latent_dim=...)`, counted on paper.

    Batch norm layers count 4 per channel (scale, offset, moving mean and
    variance), as `model.count_params()` does.
    """
    height, width, channels = image_shape
    scale = math.prod(models.ENCODER_STRIDES)
    flat = (height // scale) * (width // scale) * encoder_filters[-1]
    count, previous = 0, channels
    for filters in encoder_filters:  # 3 x 3 convolution + bias, then batch norm
        count += 9 * previous * filters + filters + 4 * filters
        previous = filters
    heads = 2 if kind == "vae" else 1  # the VAE's mean and log-variance, the AE's bottleneck
    count += heads * (flat * latent_dim + latent_dim)
    count += latent_dim * flat + flat  # the decoder's Dense layer
    previous = encoder_filters[-1]
    for filters in decoder_filters:
        count += 9 * previous * filters + filters + 4 * filters
        previous = filters
    count += 9 * previous * channels + channels  # the last transposed convolution
    return count


def activations_per_image(image_shape=models.IMAGE_SHAPE,
                          encoder_filters=models.ENCODER_FILTERS,
                          encoder_strides=models.ENCODER_STRIDES,
                          decoder_filters=models.DECODER_FILTERS,
                          decoder_strides=models.DECODER_STRIDES):
    """Numbers one image leaves in the feature maps: 3 per block (convolution, ReLU, batch norm)."""
    height, width, channels = image_shape
    count = height * width * channels
    for filters, stride in zip(encoder_filters, encoder_strides):
        height, width = math.ceil(height / stride), math.ceil(width / stride)
        count += 3 * height * width * filters
    for filters, stride in zip(decoder_filters, decoder_strides):
        height, width = height * stride, width * stride
        count += 3 * height * width * filters
    return count + 2 * height * width * channels  # the output's logits and sigmoid


def bytes_needed(kind, latent_dim, batch_size, image_shape=models.IMAGE_SHAPE):
    """Bytes that training needs beyond the data: model state plus one batch's activations."""
    state = parameter_count(kind, latent_dim, image_shape) * BYTES_PER_NUMBER * STATE_COPIES
    activations = (activations_per_image(image_shape) * batch_size * BYTES_PER_NUMBER
                   * ACTIVATION_COPIES)
    return state + activations


def available_bytes():
    """Memory this process may still use: the least of the machine's free memory and its cgroup's.

    None where neither can be read (not Linux).
    """
    limits = []
    try:
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limits.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:  # a container's limit (cgroup v2) is often below the machine's
        limit = pathlib.Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = pathlib.Path("/sys/fs/cgroup/memory.current").read_text().strip()
        if limit != "max":
            limits.append(int(limit) - int(used))
    except (OSError, ValueError):
        pass
    if not limits and hasattr(os, "sysconf"):
        try:
            limits.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError):
            pass
    return min(limits) if limits else None


def refuse_if_too_big(settings, train_images, image_shape=models.IMAGE_SHAPE, available=None):
    """Raises SettingsError, with the memory the run would need, if it cannot fit.

    Args:
        settings: the run's `settings.TrainingSettings`.
        train_images: how many images it trains on (a batch is at most that many).
        image_shape: (height, width, channels) of the images.
        available: bytes available; None: ask the machine (`available_bytes`).
    """
    batch = min(settings.batch_size, train_images)
    needed = bytes_needed(settings.model, settings.latent_dim, batch, image_shape)
    available = available_bytes() if available is None else available
    if available is None or needed <= available:
        return
    parameters = parameter_count(settings.model, settings.latent_dim, image_shape)
    raise run_settings.SettingsError(
        f"--latent-dim {settings.latent_dim} with --batch-size {settings.batch_size} needs about "
        f"{readable_size(needed)} of memory to train ({parameters:,} weights), but "
        f"{readable_size(available)} is available: lower --latent-dim or --batch-size")
