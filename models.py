"""Model builders: the convolutional encoder and decoder, the VAE and the vanilla AE.

The defaults are the original scripts' architecture:

    encoder  (28, 28, 1) -> 4 x [Conv2D 3x3 -> ReLU -> BatchNorm]   filters 32, 64, 64, 64
                                                                    strides  1,  2,  2,  1
             -> (7, 7, 64) -> Flatten -> Dense mean, Dense log-variance -> Sampling (VAE)
                                      -> Dense bottleneck                            (AE)
    decoder  z -> Dense(7 * 7 * 64) -> Reshape (7, 7, 64)
             -> 3 x [Conv2DTranspose 3x3 -> ReLU -> BatchNorm]      filters 64, 64, 64
                                                                    strides  1,  2,  2
             -> Conv2DTranspose(1, 3x3) -> sigmoid -> (28, 28, 1)

Everything is written with `keras.ops` and `keras.random`, so it runs under the
TensorFlow, JAX and PyTorch backends. The one backend-specific code in this
module is the fast path of `BatchNormalization`: under TensorFlow it calls TensorFlow's
fused kernel, and elsewhere it is Keras' own layer.
"""

import math

import keras
from keras import layers, ops

import losses

IMAGE_SHAPE = (28, 28, 1)
ENCODER_FILTERS = (32, 64, 64, 64)
ENCODER_STRIDES = (1, 2, 2, 1)
DECODER_FILTERS = (64, 64, 64)
DECODER_STRIDES = (1, 2, 2)
PACKAGE = "vae_mnist"


@keras.saving.register_keras_serializable(package=PACKAGE)
class Sampling(layers.Layer):
    """Draws `z = mean + exp(log_var / 2) * eps` with `eps ~ N(0, I)`.

    This is the reparameterization trick (Kingma and Welling 2014): the noise is
    an input to the computation, so gradients flow through `mean` and `log_var`.
    The layer owns a `keras.random.SeedGenerator`, so it draws fresh noise on
    every call under every backend (JAX included) and is reproducible from
    `seed`.

    Args:
        seed: integer seed for the noise, or None for a random one.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: a pair `(z_mean, z_log_var)`, each of shape `(batch, latent_dim)`.

    Returns:
        `z`, shape `(batch, latent_dim)`.
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        z_mean, z_log_var = inputs
        epsilon = keras.random.normal(ops.shape(z_mean), dtype=z_mean.dtype,
                                      seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * epsilon

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        config = super().get_config()
        config.update({"seed": self.seed})
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class BatchNormalization(layers.BatchNormalization):
    """Keras' `BatchNormalization`, run as one fused kernel under TensorFlow.

    Keras 3 builds batch normalization from separate ops (moments, subtract,
    rsqrt, multiply, add). Under TensorFlow each of them, and each of their
    gradients, is its own pass over the feature map; on a 2-core CPU the
    layer after the 28 x 28 x 64 Conv2DTranspose then costs about as much as
    the convolution. TensorFlow's `FusedBatchNormV3` kernel does the forward
    pass in one kernel and the backward pass in another, and takes bfloat16
    feature maps directly while keeping the statistics in float32.

    The maths, variables, config and weights are those of
    `keras.layers.BatchNormalization`: normalize with the batch's mean and
    biased variance while training, with the moving averages otherwise, and
    update `moving_mean` and `moving_variance` as
    `moving = moving * momentum + batch_statistic * (1 - momentum)`.
    Under JAX (whose XLA compiler fuses the ops itself) and PyTorch, and for
    settings the fused kernel does not cover (an axis other than the last,
    inputs that are not 4-D, masks, renorm, synchronized statistics, no
    `center` or `scale`, an epsilon below 1.001e-5), it runs Keras' own code.

    The class keeps Keras' name because Keras files weights under the
    snake-cased class name (`batch_normalization`): weights saved with either
    layer load into the other.

    Args:
        **kwargs: the arguments of `keras.layers.BatchNormalization`, such as
            `momentum`, `epsilon` and `name`.
    """

    def _fused_kernel_applies(self, inputs, mask):
        return (keras.backend.backend() == "tensorflow" and mask is None
                and len(inputs.shape) == 4 and self.axis in (-1, 3) and self.center
                and self.scale and not self.renorm and not self.synchronized
                and self.epsilon >= 1.001e-5)

    def call(self, inputs, training=None, mask=None):
        if not self._fused_kernel_applies(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf  # only reached under the TensorFlow backend

        features = inputs
        if features.dtype not in (tf.float32, tf.bfloat16):
            features = tf.cast(features, tf.float32)
        gamma = tf.cast(self.gamma, tf.float32)
        beta = tf.cast(self.beta, tf.float32)
        if training and self.trainable:
            # mean, variance: (channels,); the kernel returns the unbiased variance.
            outputs, mean, unbiased_variance = tf.compat.v1.nn.fused_batch_norm(
                features, gamma, beta, epsilon=self.epsilon, is_training=True)
            values_per_channel = tf.cast(tf.size(features) // tf.shape(features)[-1], tf.float32)
            variance = unbiased_variance * (values_per_channel - 1.0) / values_per_channel
            self.moving_mean.assign(self.moving_mean * self.momentum
                                    + mean * (1.0 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum
                                        + variance * (1.0 - self.momentum))
        else:
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                features, gamma, beta, mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon,
                is_training=False)
        return tf.cast(outputs, self.compute_dtype)


def _check_architecture(image_shape, encoder_strides, decoder_strides):
    """Raises ValueError unless the strides take 28 x 28 down and back up again."""
    encoder_scale = math.prod(encoder_strides)
    if image_shape[0] % encoder_scale or image_shape[1] % encoder_scale:
        raise ValueError(f"encoder strides {tuple(encoder_strides)} do not divide the image size "
                         f"{image_shape[:2]}")
    if math.prod(decoder_strides) != encoder_scale:
        raise ValueError(f"decoder strides {tuple(decoder_strides)} must upsample by the factor "
                         f"the encoder strides {tuple(encoder_strides)} downsample ({encoder_scale})")


def build_encoder(latent_dim=2, filters=ENCODER_FILTERS, strides=ENCODER_STRIDES,
                  variational=True, image_shape=IMAGE_SHAPE, seed=None):
    """Builds the convolutional encoder as a functional `keras.Model`.

    Args:
        latent_dim: size of the latent code.
        filters: filters of each Conv2D block.
        strides: stride of each Conv2D block (same length as `filters`).
        variational: True for the VAE encoder (outputs `[z_mean, z_log_var, z]`),
            False for the AE encoder (outputs the bottleneck `z`).
        image_shape: `(height, width, channels)` of the input.
        seed: seed of the `Sampling` layer (VAE only).

    Returns:
        A `keras.Model` named "encoder".
    """
    images = keras.Input(shape=image_shape, name="images")
    features = images
    for block, (block_filters, block_strides) in enumerate(zip(filters, strides)):
        features = layers.Conv2D(block_filters, 3, strides=block_strides, padding="same",
                                 name=f"conv_{block}")(features)
        features = layers.ReLU(name=f"relu_{block}")(features)
        features = BatchNormalization(name=f"batch_norm_{block}")(features)
    features = layers.Flatten(name="flatten")(features)
    if not variational:
        z = layers.Dense(latent_dim, name="z", dtype="float32")(features)
        return keras.Model(images, z, name="encoder")
    # The latent statistics stay in float32 under mixed precision: exp(log_var) is sensitive.
    z_mean = layers.Dense(latent_dim, name="z_mean", dtype="float32")(features)
    z_log_var = layers.Dense(latent_dim, name="z_log_var", dtype="float32")(features)
    z = Sampling(seed=seed, name="z", dtype="float32")([z_mean, z_log_var])
    return keras.Model(images, [z_mean, z_log_var, z], name="encoder")


def build_decoder(latent_dim=2, filters=DECODER_FILTERS, strides=DECODER_STRIDES,
                  image_shape=IMAGE_SHAPE, start_channels=ENCODER_FILTERS[-1]):
    """Builds the convolutional decoder as a functional `keras.Model`.

    Args:
        latent_dim: size of the latent code it takes.
        filters: filters of each Conv2DTranspose block.
        strides: stride of each Conv2DTranspose block (same length as `filters`).
        image_shape: `(height, width, channels)` of the output.
        start_channels: channels of the feature map the Dense layer is reshaped to.

    Returns:
        A `keras.Model` named "decoder" mapping `(batch, latent_dim)` to
        `(batch, *image_shape)` with values in (0, 1).
    """
    scale = math.prod(strides)
    start_shape = (image_shape[0] // scale, image_shape[1] // scale, start_channels)
    z = keras.Input(shape=(latent_dim,), name="z")
    features = layers.Dense(math.prod(start_shape), name="dense")(z)
    features = layers.Reshape(start_shape, name="reshape")(features)  # (batch, 7, 7, 64)
    for block, (block_filters, block_strides) in enumerate(zip(filters, strides)):
        features = layers.Conv2DTranspose(block_filters, 3, strides=block_strides,
                                          padding="same", name=f"deconv_{block}")(features)
        features = layers.ReLU(name=f"relu_{block}")(features)
        features = BatchNormalization(name=f"batch_norm_{block}")(features)
    logits = layers.Conv2DTranspose(image_shape[-1], 3, strides=1, padding="same",
                                    name="deconv_out")(features)
    # float32 output: the loss compares it with the images at full precision.
    images = layers.Activation("sigmoid", name="sigmoid", dtype="float32")(logits)
    return keras.Model(z, images, name="decoder")


class _Autoencoder(keras.Model):
    """Shared constructor and config of `VAE` and `AE`; `call` maps images to reconstructions."""

    variational = None  # set by subclasses

    def __init__(self, latent_dim=2, encoder_filters=ENCODER_FILTERS,
                 encoder_strides=ENCODER_STRIDES, decoder_filters=DECODER_FILTERS,
                 decoder_strides=DECODER_STRIDES, image_shape=IMAGE_SHAPE, seed=None, **kwargs):
        super().__init__(**kwargs)
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be at least 1, got {latent_dim}")
        _check_architecture(image_shape, encoder_strides, decoder_strides)
        self.latent_dim = int(latent_dim)
        self.encoder_filters = tuple(encoder_filters)
        self.encoder_strides = tuple(encoder_strides)
        self.decoder_filters = tuple(decoder_filters)
        self.decoder_strides = tuple(decoder_strides)
        self.image_shape = tuple(image_shape)
        self.seed = seed
        self.encoder = build_encoder(latent_dim, encoder_filters, encoder_strides,
                                     variational=self.variational, image_shape=image_shape,
                                     seed=seed)
        self.decoder = build_decoder(latent_dim, decoder_filters, decoder_strides,
                                     image_shape=image_shape, start_channels=encoder_filters[-1])
        # The encoder and decoder are functional models, so all weights exist now:
        # weights can be loaded straight after construction.
        self.built = True

    def get_config(self):
        return {
            "name": self.name,
            "latent_dim": self.latent_dim,
            "encoder_filters": list(self.encoder_filters),
            "encoder_strides": list(self.encoder_strides),
            "decoder_filters": list(self.decoder_filters),
            "decoder_strides": list(self.decoder_strides),
            "image_shape": list(self.image_shape),
            "seed": self.seed,
        }

    def encode(self, images, batch_size=256):
        """Latent codes of `images` in one batched predict: the means for the VAE.

        Args:
            images: shape `(N, 28, 28, 1)`, values in [0, 1].
        Returns:
            A NumPy array of shape `(N, latent_dim)`.
        """
        codes = self.encoder.predict(images, batch_size=batch_size, verbose=0)
        return codes[0] if self.variational else codes

    def decode(self, latents, batch_size=256):
        """Images the decoder draws at `latents` (shape `(N, latent_dim)`), in one predict."""
        return self.decoder.predict(latents, batch_size=batch_size, verbose=0)

    def reconstruct(self, images, batch_size=256):
        """Deterministic reconstructions: the decoded latent means (VAE) or codes (AE)."""
        return self.decode(self.encode(images, batch_size), batch_size)



@keras.saving.register_keras_serializable(package=PACKAGE)
class VAE(_Autoencoder):
    """Convolutional variational autoencoder.

    `call` encodes, samples `z` and decodes, so `predict` returns
    reconstructions. It also adds the batch-mean KL divergence with `add_loss`,
    so the total loss that `fit` and `evaluate` minimize and report is
    `reconstruction_weight * MSE + KL` when compiled with
    `loss=losses.reconstruction_mse, loss_weights=reconstruction_weight`
    (see `training.compile_model`). The KL is also logged on its own as `kl`.

    Args:
        latent_dim: size of the latent code.
        encoder_filters, encoder_strides: the Conv2D blocks.
        decoder_filters, decoder_strides: the Conv2DTranspose blocks.
        image_shape: `(height, width, channels)`.
        seed: seed of the sampling noise.
    """

    variational = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.kl_tracker = keras.metrics.Mean(name="kl")

    def call(self, images, training=False):
        z_mean, z_log_var, z = self.encoder(images, training=training)
        self.add_loss(ops.mean(losses.kl_divergence(z_mean, z_log_var)))
        return self.decoder(z, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        # Keras adds the compiled (weighted) reconstruction loss and the KL from add_loss.
        total_loss = super().compute_loss(x, y, y_pred, sample_weight, training)
        # self.losses holds the KL that call() added; it is empty only while Keras
        # builds the metrics symbolically before the first step.
        if self.losses:
            self.kl_tracker.update_state(ops.sum(ops.stack(self.losses)))
        return total_loss


@keras.saving.register_keras_serializable(package=PACKAGE)
class AE(_Autoencoder):
    """Convolutional vanilla autoencoder: the same encoder ending in a Dense bottleneck.

    Args:
        latent_dim: size of the bottleneck.
        encoder_filters, encoder_strides: the Conv2D blocks.
        decoder_filters, decoder_strides: the Conv2DTranspose blocks.
        image_shape: `(height, width, channels)`.
        seed: unused (the AE draws no noise); kept so both models share a config.
    """

    variational = False

    def call(self, images, training=False):
        return self.decoder(self.encoder(images, training=training), training=training)


MODEL_CLASSES = {"vae": VAE, "ae": AE}


def build_model(kind, **config):
    """Builds a `VAE` (`kind="vae"`) or `AE` (`kind="ae"`) from its config."""
    return MODEL_CLASSES[kind](**config)
