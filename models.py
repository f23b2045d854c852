"""The convolutional VAE and vanilla AE, as Keras models that compute their own loss.

The defaults are the original scripts' architecture:

    encoder  (28, 28, 1) -> 4 x [Conv2D 3x3 -> ReLU -> BatchNorm]   filters 32, 64, 64, 64
                                                                    strides  1,  2,  2,  1
             -> (7, 7, 64) -> Flatten -> Dense mean, Dense log-variance -> Sampling (VAE)
                                      -> Dense bottleneck                            (AE)
    decoder  z -> Dense(7 * 7 * 64) -> Reshape (7, 7, 64)
             -> 3 x [Conv2DTranspose 3x3 -> ReLU -> BatchNorm]      filters 64, 64, 64
                                                                    strides  1,  2,  2
             -> Conv2DTranspose(1, 3x3) -> sigmoid -> (28, 28, 1)

    loss     VAE: reconstruction_weight * MSE + KL   (losses.vae_loss, weight 1000)
             AE:  MSE                                 (losses.reconstruction_mse)

Other images take `image_shape=(H, W, C)`: any H and W divisible by 4 (the
strides' product), C 1 or 3; the decoder then starts from (H / 4, W / 4, 64).

Each model computes its loss in `compute_loss`, so `compile` needs only an
optimizer:

    model = models.VAE()
    model.compile(optimizer="adam")
    model.fit(images, epochs=2)          # or model.fit(images, images)

Images are float in [0, 1], or uint8 pixels 0..255, which the models divide by
255 themselves, batch by batch: training holds its images as uint8, a quarter
of the memory of float32.

The module reads top-down: the layers the architecture needs, the encoder and
decoder builders, then the two models. It is written with `keras.ops` and
`keras.random`, so it runs under TensorFlow, JAX and PyTorch; the one
backend-specific speed path, TensorFlow's fused batch norm, lives in
`fused_batch_norm.py` and is chosen by the `batch_norm` option.
"""

import math

import keras
import numpy as np
from keras import layers, ops

import fused_batch_norm
import losses

IMAGE_SHAPE = (28, 28, 1)
ENCODER_FILTERS = (32, 64, 64, 64)
ENCODER_STRIDES = (1, 2, 2, 1)
DECODER_FILTERS = (64, 64, 64)
DECODER_STRIDES = (1, 2, 2)
BATCH_NORMS = ("auto", "keras", "fused")
# How the decoder's stride-2 blocks upsample: the original's 3x3 transposed convolution; a
# nearest-neighbour resize followed by a 3x3 convolution (Odena et al. 2016, "Deconvolution and
# checkerboard artifacts"), whose every output pixel sees the same number of weights; or a 4x4
# transposed convolution, whose kernel the stride divides, so that every output pixel also
# sees the same number of weights (2 x 2 of the input's pixels), at 16/36 of the resize's
# multiply-adds: the resize and its 3x3 convolution are a 4x4 transposed convolution whose
# kernel is tied across the 4 output phases. A 2x2 transposed convolution at stride 2 is the
# cheapest whose kernel the stride divides: each output pixel sees one input pixel, through
# the one of the kernel's 4 taps that its phase picks (4/9 of the original's multiply-adds).
UPSAMPLINGS = ("transpose", "resize", "transpose4x4", "transpose2x2")
# The kernel size of each transposed-convolution upsampling in the stride-2 blocks.
TRANSPOSED_KERNELS = {"transpose": 3, "transpose4x4": 4, "transpose2x2": 2}
# Anomaly scores of an image and its reconstruction (see _Autoencoder.anomaly_scores).
ANOMALY_SCORES = {"mse": losses.reconstruction_mse, "relative": losses.relative_squared_error}
# Each score's per-pixel terms: a map of shape (N, H, W) whose sum over H and W is the score.
ANOMALY_MAPS = {"mse": losses.squared_error_map, "relative": losses.relative_squared_error_map}
# The training scores kept with a threshold, at these percentiles, to put any score on the
# training images' scale: 0, 0.1, ..., 100.
SCORE_PERCENTILES = np.linspace(0.0, 100.0, 1001)
# Images of the batch-norm pass after training (see recompute_batch_norm_statistics).
BATCH_NORM_IMAGES = 2048
# Images scored per predict call, so that uint8 images are converted to float32 a chunk at a
# time (see _Autoencoder.anomaly_scores).
SCORING_CHUNK = 8192


# Each uint8 pixel value as float32 in [0, 1], divided as NumPy divides. Looked up, not divided
# in the graph, where TensorFlow may turn the division into a multiplication by 1/255, which
# rounds a few values differently from the float32 images that analysis.py and detect.py score.
PIXEL_VALUES = np.arange(256, dtype=np.float32) / np.float32(255.0)


def unit_range(images):
    """A batch in the graph as float32 in [0, 1]: uint8 pixels divided by 255, floats as given."""
    if keras.backend.standardize_dtype(images.dtype) == "uint8":
        return ops.take(PIXEL_VALUES, ops.cast(images, "int32"))
    return images


def unit_floats(images):
    """A NumPy array as float32 in [0, 1]: uint8 pixels divided by 255, floats as given."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    return images.astype(np.float32, copy=False)


def score_quantiles(scores):
    """The scores at `SCORE_PERCENTILES`, as the list a model's config keeps."""
    return [float(value) for value in np.percentile(scores, SCORE_PERCENTILES)]
ANOMALY_SCORE_NAMES = {"mse": "per-image MSE", "relative": "relative squared error"}
PACKAGE = "vae_mnist"


# --- The layers the architecture needs -------------------------------------------------------

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


def batch_norm_layer(batch_norm, name):
    """A batch-normalization layer: Keras' own, or TensorFlow's fused kernel (same maths).

    Args:
        batch_norm: "keras" for `keras.layers.BatchNormalization`; "fused" for
            `fused_batch_norm.BatchNormalization` (TensorFlow only); "auto" for
            the fused one where the backend has it, Keras' elsewhere.
        name: the layer's name.
    """
    if batch_norm not in BATCH_NORMS:
        raise ValueError(f"batch_norm must be one of {BATCH_NORMS}, got {batch_norm!r}")
    if batch_norm == "keras" or (batch_norm == "auto" and not fused_batch_norm.AVAILABLE):
        return layers.BatchNormalization(name=name)
    return fused_batch_norm.BatchNormalization(name=name)


# --- The encoder and decoder -----------------------------------------------------------------

def build_encoder(latent_dim=2, filters=ENCODER_FILTERS, strides=ENCODER_STRIDES,
                  variational=True, image_shape=IMAGE_SHAPE, seed=None, batch_norm="auto"):
    """Builds the convolutional encoder as a functional `keras.Model`.

    Args:
        latent_dim: size of the latent code.
        filters: filters of each Conv2D block.
        strides: stride of each Conv2D block (same length as `filters`).
        variational: True for the VAE encoder (outputs `[z_mean, z_log_var, z]`),
            False for the AE encoder (outputs the bottleneck `z`).
        image_shape: `(height, width, channels)` of the input.
        seed: seed of the `Sampling` layer (VAE only).
        batch_norm: which batch-normalization layer to use (see `batch_norm_layer`).

    Returns:
        A `keras.Model` named "encoder".
    """
    images = keras.Input(shape=image_shape, name="images")
    features = images
    for block, (block_filters, block_strides) in enumerate(zip(filters, strides)):
        features = layers.Conv2D(block_filters, 3, strides=block_strides, padding="same",
                                 name=f"conv_{block}")(features)
        features = layers.ReLU(name=f"relu_{block}")(features)
        features = batch_norm_layer(batch_norm, f"batch_norm_{block}")(features)
    features = layers.Flatten(name="flatten")(features)  # (batch, 7 * 7 * 64)
    if not variational:
        z = layers.Dense(latent_dim, name="z", dtype="float32")(features)
        return keras.Model(images, z, name="encoder")
    # The latent statistics stay in float32 under mixed precision: exp(log_var) is sensitive.
    z_mean = layers.Dense(latent_dim, name="z_mean", dtype="float32")(features)
    z_log_var = layers.Dense(latent_dim, name="z_log_var", dtype="float32")(features)
    z = Sampling(seed=seed, name="z", dtype="float32")([z_mean, z_log_var])
    return keras.Model(images, [z_mean, z_log_var, z], name="encoder")


def build_decoder(latent_dim=2, filters=DECODER_FILTERS, strides=DECODER_STRIDES,
                  image_shape=IMAGE_SHAPE, start_channels=ENCODER_FILTERS[-1], batch_norm="auto",
                  upsampling="transpose"):
    """Builds the convolutional decoder as a functional `keras.Model`.

    Args:
        latent_dim: size of the latent code it takes.
        filters: filters of each Conv2DTranspose block.
        strides: stride of each Conv2DTranspose block (same length as `filters`).
        image_shape: `(height, width, channels)` of the output.
        start_channels: channels of the feature map the Dense layer is reshaped to.
        batch_norm: which batch-normalization layer to use (see `batch_norm_layer`).
        upsampling: "transpose" (the original: a 3x3 Conv2DTranspose with the
            block's stride), "resize" (UpSampling2D by the stride, then a 3x3
            Conv2D), "transpose4x4" or "transpose2x2" (a 4x4 or 2x2
            Conv2DTranspose with the block's stride) for blocks of stride above 1.

    Returns:
        A `keras.Model` named "decoder" mapping `(batch, latent_dim)` to
        `(batch, *image_shape)` with values in (0, 1).
    """
    scale = math.prod(strides)
    start_shape = (image_shape[0] // scale, image_shape[1] // scale, start_channels)
    z = keras.Input(shape=(latent_dim,), name="z")
    # float32 under mixed precision, as the encoder's latent layers: in bfloat16 the code
    # would enter the decoder rounded to 8 significant bits.
    features = layers.Dense(math.prod(start_shape), name="dense", dtype="float32")(z)
    features = layers.Reshape(start_shape, name="reshape")(features)  # (batch, 7, 7, 64)
    if upsampling not in UPSAMPLINGS:
        raise ValueError(f"upsampling must be one of {UPSAMPLINGS}, got {upsampling!r}")
    for block, (block_filters, block_strides) in enumerate(zip(filters, strides)):
        if upsampling == "resize" and block_strides > 1:
            features = layers.UpSampling2D(block_strides, name=f"upsample_{block}")(features)
            features = layers.Conv2D(block_filters, 3, padding="same",
                                     name=f"deconv_{block}")(features)
        else:
            kernel_size = TRANSPOSED_KERNELS[upsampling] if block_strides > 1 else 3
            features = layers.Conv2DTranspose(block_filters, kernel_size, strides=block_strides,
                                              padding="same", name=f"deconv_{block}")(features)
        features = layers.ReLU(name=f"relu_{block}")(features)
        features = batch_norm_layer(batch_norm, f"batch_norm_{block}")(features)
    logits = layers.Conv2DTranspose(image_shape[-1], 3, strides=1, padding="same",
                                    name="deconv_out")(features)
    # float32 output: the loss compares it with the images at full precision.
    images = layers.Activation("sigmoid", name="sigmoid", dtype="float32")(logits)
    return keras.Model(z, images, name="decoder")


def _check_architecture(image_shape, encoder_strides, decoder_strides):
    """Raises ValueError unless the strides take the image down and back up again."""
    encoder_scale = math.prod(encoder_strides)
    if image_shape[0] % encoder_scale or image_shape[1] % encoder_scale:
        raise ValueError(f"encoder strides {tuple(encoder_strides)} do not divide the image size "
                         f"{image_shape[:2]}")
    if math.prod(decoder_strides) != encoder_scale:
        raise ValueError(f"decoder strides {tuple(decoder_strides)} must upsample by the factor "
                         f"the encoder strides {tuple(encoder_strides)} downsample ({encoder_scale})")


# --- The two models --------------------------------------------------------------------------

def image_size_multiple(encoder_strides=ENCODER_STRIDES):
    """The number that an image's height and width must be multiples of (4 by default)."""
    return math.prod(encoder_strides)


def _predict(network, inputs, batch_size):
    """`network.predict(inputs)`; up to one batch goes through `predict_on_batch`, the same
    compiled step without building a dataset per call (detect.py calls once per batch)."""
    if 0 < len(inputs) <= batch_size:
        return network.predict_on_batch(inputs)
    return network.predict(inputs, batch_size=batch_size, verbose=0)


class _Autoencoder(keras.Model):
    """What `VAE` and `AE` share: construction, config, encode/decode/reconstruct, and
    anomaly scoring by reconstruction error.

    `call` maps images to reconstructions, so `predict` returns them. Subclasses
    define `compute_loss`; the target is `y` when `fit(x, y)` gives one, else
    the input itself.

    `anomaly_threshold` (None until set) is the reconstruction error above which
    `detect_anomalies` calls an image an anomaly; training sets it to the
    `threshold_percentile`-th percentile of the training images' errors, and the
    config stores both.
    """

    variational = None  # set by subclasses

    def __init__(self, latent_dim=2, encoder_filters=ENCODER_FILTERS,
                 encoder_strides=ENCODER_STRIDES, decoder_filters=DECODER_FILTERS,
                 decoder_strides=DECODER_STRIDES, image_shape=IMAGE_SHAPE, seed=None,
                 batch_norm="auto", anomaly_threshold=None, threshold_percentile=None,
                 upsampling="transpose", anomaly_score="mse", score_quantiles=None, **kwargs):
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
        self.batch_norm = batch_norm
        self.anomaly_threshold = anomaly_threshold
        self.threshold_percentile = threshold_percentile
        self.score_quantiles = None if score_quantiles is None else list(score_quantiles)
        self.upsampling = upsampling
        if anomaly_score not in ANOMALY_SCORES:
            raise ValueError(f"anomaly_score must be one of {sorted(ANOMALY_SCORES)}, "
                             f"got {anomaly_score!r}")
        self.anomaly_score = anomaly_score
        self.encoder = build_encoder(latent_dim, encoder_filters, encoder_strides,
                                     variational=self.variational, image_shape=image_shape,
                                     seed=seed, batch_norm=batch_norm)
        self.decoder = build_decoder(latent_dim, decoder_filters, decoder_strides,
                                     image_shape=image_shape, start_channels=encoder_filters[-1],
                                     batch_norm=batch_norm, upsampling=upsampling)
        self.mse_tracker = keras.metrics.Mean(name="mse")
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
            "batch_norm": self.batch_norm,
            "anomaly_threshold": self.anomaly_threshold,
            "threshold_percentile": self.threshold_percentile,
            "upsampling": self.upsampling,
            "anomaly_score": self.anomaly_score,
            "score_quantiles": self.score_quantiles,
        }

    def _mean_over_batch(self, per_image, sample_weight):
        """The batch mean of a per-image loss, weighted as Keras weighs losses."""
        if sample_weight is not None:
            per_image = per_image * ops.cast(ops.reshape(sample_weight, (-1,)), per_image.dtype)
        total = ops.mean(per_image)
        if self.losses:  # regularization losses a user may have added to a layer
            total = total + ops.sum(ops.stack(self.losses))
        return total

    def encode(self, images, batch_size=256):
        """Latent codes of `images` in one batched predict: the means for the VAE.

        Args:
            images: shape `(N, *image_shape)`, values in [0, 1] (or uint8 pixels).
        Returns:
            A NumPy array of shape `(N, latent_dim)`.
        """
        codes = _predict(self.encoder, unit_floats(images), batch_size)
        return codes[0] if self.variational else codes

    def decode(self, latents, batch_size=256):
        """Images the decoder draws at `latents` (shape `(N, latent_dim)`), in one predict."""
        return _predict(self.decoder, np.asarray(latents, dtype="float32"), batch_size)

    def reconstruct(self, images, batch_size=256):
        """Deterministic reconstructions: the decoded latent means (VAE) or codes (AE)."""
        return self.decode(self.encode(images, batch_size), batch_size)

    def recompute_batch_norm_statistics(self, images, batch_size=256, seed=0,
                                        max_images=BATCH_NORM_IMAGES):
        """Sets each batch-norm layer's moving mean and variance from `images`, for the final weights.

        Training leaves moving averages (momentum 0.99) that lag the weights, so a
        short run scores worse in inference mode than in training mode. Here one
        pass over `images` in training mode, with each layer's momentum set to
        `i / (i + 1)` at batch `i`, makes its moving statistics the mean of the
        batch statistics over all batches ("precise BN", Wu and Johnson 2021).

        Args:
            images: shape `(N, *image_shape)`, normally the training images.
            batch_size: images per batch of the pass.
            seed: seed of the order in which the images are batched.
            max_images: use at most this many of `images`, a seeded random sample: per-channel
                means and variances over thousands of images (times every pixel position)
                are already exact to a few parts in a thousand, and the pass runs eagerly.
        """
        norms = [layer for part in (self.encoder, self.decoder) for layer in part.layers
                 if isinstance(layer, layers.BatchNormalization)]
        momenta = [layer.momentum for layer in norms]
        # Batches in a random order: images sorted by class (an image folder, say) would
        # give per-class statistics, whose mean is not the statistics of the data.
        order = np.random.default_rng(seed).permutation(len(images))[:max_images]
        try:
            for batch_index, start in enumerate(range(0, len(order), batch_size)):
                for layer in norms:
                    layer.momentum = batch_index / (batch_index + 1)
                batch = unit_floats(images[order[start:start + batch_size]])
                self(batch, training=True)
        finally:
            for layer, momentum in zip(norms, momenta):
                layer.momentum = momentum

    def _reconstruction_scores(self, score, images, batch_size):
        """`score(images, reconstructions)` of the deterministic reconstructions, shape (N,).

        Chunk by chunk, so that only a chunk of uint8 images is ever held as float32.
        """
        scores = []
        for start in range(0, len(images), SCORING_CHUNK):
            chunk = unit_floats(images[start:start + SCORING_CHUNK])
            scores.append(keras.ops.convert_to_numpy(
                score(chunk, self.reconstruct(chunk, batch_size))))
        return np.concatenate(scores) if scores else np.zeros((0,), "float32")

    def reconstruction_errors(self, images, batch_size=256):
        """Each image's MSE of its deterministic reconstruction, shape (N,)."""
        return self._reconstruction_scores(losses.reconstruction_mse, images, batch_size)

    def anomaly_scores(self, images, batch_size=256):
        """Each image's anomaly score, shape (N,): larger is less like the training images.

        `anomaly_score` picks it: "mse" (`losses.reconstruction_mse`) or "relative"
        (`losses.relative_squared_error`) of the deterministic reconstruction.
        """
        return self._reconstruction_scores(ANOMALY_SCORES[self.anomaly_score], images,
                                           batch_size)

    def anomaly_maps(self, images, batch_size=256):
        """Where each image's anomaly score comes from, shape (N, H, W).

        The per-pixel terms of `anomaly_scores` (see `ANOMALY_MAPS`): each map
        sums over H and W to the image's score.
        """
        images = unit_floats(images)
        return keras.ops.convert_to_numpy(
            ANOMALY_MAPS[self.anomaly_score](images, self.reconstruct(images, batch_size)))

    def set_anomaly_threshold(self, normal_images, percentile=99.0, batch_size=256):
        """Sets the threshold to the `percentile`-th percentile of `normal_images`' scores.

        Also keeps those scores at `SCORE_PERCENTILES`, for `score_percentiles`.
        """
        errors = self.anomaly_scores(normal_images, batch_size)
        self.anomaly_threshold = float(np.percentile(errors, percentile))
        self.threshold_percentile = float(percentile)
        self.score_quantiles = score_quantiles(errors)
        return self.anomaly_threshold

    def score_percentiles(self, errors):
        """Each score as the share of the training images that score lower, in percent.

        Read off the training scores kept by `set_anomaly_threshold` (interpolated
        between the 0.1-percent steps); None for a model that kept none.
        """
        if self.score_quantiles is None:
            return None
        quantiles = np.asarray(self.score_quantiles)
        return np.interp(np.asarray(errors, dtype="float64"), quantiles, SCORE_PERCENTILES,
                         left=0.0, right=100.0)

    def detect_anomalies(self, images, batch_size=256):
        """Scores `images` against the threshold: `(errors, is_anomaly)`, both of shape (N,).

        Raises:
            ValueError: if the model has no threshold (see `set_anomaly_threshold`).
        """
        if self.anomaly_threshold is None:
            raise ValueError("this model has no anomaly threshold: call "
                             "set_anomaly_threshold(normal_images) first")
        errors = self.anomaly_scores(images, batch_size)
        return errors, errors > self.anomaly_threshold


@keras.saving.register_keras_serializable(package=PACKAGE)
class VAE(_Autoencoder):
    """Convolutional variational autoencoder.

    `call` encodes, samples `z` and decodes. `compute_loss` returns the batch
    mean of `losses.vae_loss`, `reconstruction_weight * MSE + KL`, and logs
    `mse` and `kl` beside Keras' `loss`.

    Args:
        latent_dim: size of the latent code.
        encoder_filters, encoder_strides: the Conv2D blocks.
        decoder_filters, decoder_strides: the Conv2DTranspose blocks.
        image_shape: `(height, width, channels)`.
        seed: seed of the sampling noise.
        batch_norm: "auto", "keras" or "fused" (see `batch_norm_layer`).
        reconstruction_weight: the factor on the MSE in the loss (1000 in the original).
    """

    variational = True

    def __init__(self, *args, reconstruction_weight=losses.DEFAULT_RECONSTRUCTION_WEIGHT,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.reconstruction_weight = float(reconstruction_weight)
        self.kl_tracker = keras.metrics.Mean(name="kl")
        # The latent statistics of the latest forward pass, for compute_loss.
        self._latent_statistics = None

    def get_config(self):
        return {**super().get_config(), "reconstruction_weight": self.reconstruction_weight}

    def call(self, images, training=False):
        images = unit_range(images)
        z_mean, z_log_var, z = self.encoder(images, training=training)  # each (batch, latent_dim)
        # Keras calls compute_loss right after this forward pass, in the same traced
        # step, with only the reconstructions; the KL needs the statistics too.
        self._latent_statistics = (z_mean, z_log_var)
        return self.decoder(z, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        images = unit_range(x if y is None else y)
        z_mean, z_log_var = self._latent_statistics
        self._latent_statistics = None
        per_image = losses.vae_loss(images, y_pred, z_mean, z_log_var,
                                    self.reconstruction_weight)  # (batch,)
        self.mse_tracker.update_state(losses.reconstruction_mse(images, y_pred))
        self.kl_tracker.update_state(losses.kl_divergence(z_mean, z_log_var))
        return self._mean_over_batch(per_image, sample_weight)

    def sample(self, count, seed=None, batch_size=256):
        """`count` images decoded from latent points drawn from the prior N(0, I).

        Returns:
            A NumPy array of shape `(count, *image_shape)`.
        """
        prior = np.random.default_rng(seed).standard_normal((count, self.latent_dim))
        return self.decode(prior, batch_size)


@keras.saving.register_keras_serializable(package=PACKAGE)
class AE(_Autoencoder):
    """Convolutional vanilla autoencoder: the same encoder ending in a Dense bottleneck.

    `compute_loss` returns the batch mean of `losses.reconstruction_mse`, logged
    as `loss` and `mse`.

    Args:
        latent_dim: size of the bottleneck.
        encoder_filters, encoder_strides: the Conv2D blocks.
        decoder_filters, decoder_strides: the Conv2DTranspose blocks.
        image_shape: `(height, width, channels)`.
        seed: unused (the AE draws no noise); kept so both models share a config.
        batch_norm: "auto", "keras" or "fused" (see `batch_norm_layer`).
    """

    variational = False

    def call(self, images, training=False):
        images = unit_range(images)
        return self.decoder(self.encoder(images, training=training), training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        images = unit_range(x if y is None else y)
        per_image = losses.reconstruction_mse(images, y_pred)  # (batch,)
        self.mse_tracker.update_state(per_image)
        return self._mean_over_batch(per_image, sample_weight)


MODEL_CLASSES = {"vae": VAE, "ae": AE}


def build_model(kind, **config):
    """Builds a `VAE` (`kind="vae"`) or `AE` (`kind="ae"`) from its config."""
    return MODEL_CLASSES[kind](**config)
