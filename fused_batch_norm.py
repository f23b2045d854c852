"""Batch normalization as one fused TensorFlow kernel: a speed path, same maths as Keras.

`models.batch_norm_layer` picks this layer when the model's `batch_norm`
option is "fused", or "auto" under the TensorFlow backend. Everywhere else the
models use `keras.layers.BatchNormalization`.

Why: Keras 3 builds batch normalization from separate ops (moments, subtract,
rsqrt, multiply, add). Under TensorFlow each of them, and each of their
gradients, is its own pass over the feature map; on a 2-core CPU the layer
after the 28 x 28 x 64 Conv2DTranspose then costs about as much as the
convolution. TensorFlow's `FusedBatchNormV3` does the forward pass in one
kernel and the backward pass in another, and takes bfloat16 feature maps
directly while keeping the statistics in float32. (JAX needs no such layer:
its XLA compiler fuses Keras' ops itself.)

In inference, the kernel pays only in bfloat16. In float32, Keras' separate ops
evaluated faster on every CPU measured, so the layer runs those there:
docs/performance.md has the figures.
"""

import keras
from keras import layers

AVAILABLE = keras.backend.backend() == "tensorflow"
if AVAILABLE:
    import tensorflow as tf  # the fused kernel exists only in TensorFlow


# The class keeps Keras' name, `BatchNormalization`, because Keras files weights
# under the snake-cased class name (`batch_normalization`): weights saved with
# either layer load into the other. It is registered under its own name.
@keras.saving.register_keras_serializable(package="vae_mnist", name="FusedBatchNormalization")
class BatchNormalization(layers.BatchNormalization):
    """`keras.layers.BatchNormalization`, run as TensorFlow's fused kernel.

    The maths, variables, config and weights are Keras' own: normalize with the
    batch's mean and biased variance while training, with the moving averages
    otherwise, and update the moving statistics as
    `moving = moving * momentum + batch_statistic * (1 - momentum)`.
    For settings the fused kernel does not cover (an axis other than the last,
    inputs that are not 4-D, masks, renorm, synchronized statistics, no
    `center` or `scale`, an epsilon below 1.001e-5) it runs Keras' own code.

    Args:
        **kwargs: the arguments of `keras.layers.BatchNormalization`, such as
            `momentum`, `epsilon` and `name`.
    """

    def __init__(self, **kwargs):
        if not AVAILABLE:
            raise ValueError(f"the fused batch norm needs the TensorFlow backend, not "
                             f"{keras.backend.backend()}: use batch_norm 'auto' or 'keras' "
                             f"(--batch-norm auto)")
        super().__init__(**kwargs)

    def _fused_kernel_applies(self, inputs, mask):
        return (mask is None and len(inputs.shape) == 4 and self.axis in (-1, 3) and self.center
                and self.scale and not self.renorm and not self.synchronized
                and self.epsilon >= 1.001e-5)

    def _uses_fused_kernel(self, inputs, training, mask):
        """Whether this call runs the fused kernel: always in training, and in inference only
        on bfloat16 feature maps (see the module's docstring)."""
        if not self._fused_kernel_applies(inputs, mask):
            return False
        return bool(training and self.trainable) or inputs.dtype == tf.bfloat16

    def call(self, inputs, training=None, mask=None):
        if not self._uses_fused_kernel(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        features = inputs  # (batch, height, width, channels)
        if features.dtype not in (tf.float32, tf.bfloat16):
            features = tf.cast(features, tf.float32)
        gamma = tf.cast(self.gamma, tf.float32)
        beta = tf.cast(self.beta, tf.float32)
        if training and self.trainable:
            # mean, unbiased_variance: (channels,)
            outputs, mean, unbiased_variance = tf.compat.v1.nn.fused_batch_norm(
                features, gamma, beta, epsilon=self.epsilon, is_training=True)
            # Keras keeps the biased variance in its moving average; the kernel returns
            # the unbiased one, so scale it back by (n - 1) / n.
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
