"""fused_batch_norm.BatchNormalization: TensorFlow's fused kernel with Keras' maths and weights."""

import keras
import numpy as np
import pytest

import fused_batch_norm
from conftest import needs_bfloat16_kernels
import models

pytestmark = pytest.mark.skipif(not fused_batch_norm.AVAILABLE,
                                reason="the fused kernel exists only under TensorFlow")


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
    ours = _conv_then_batch_norm(fused_batch_norm.BatchNormalization, **batch_norm_kwargs)
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


@needs_bfloat16_kernels
def test_batch_normalization_in_bfloat16_matches_float32():
    features = np.random.default_rng(1).normal(1.0, 2.0, (4, 5, 5, 3)).astype("float32")
    full = fused_batch_norm.BatchNormalization()
    half = fused_batch_norm.BatchNormalization(dtype="mixed_bfloat16")
    for training in (True, False):
        expected = keras.ops.convert_to_numpy(full(features, training=training))
        result = half(keras.ops.cast(features, "bfloat16"), training=training)
        assert keras.backend.standardize_dtype(result.dtype) == "bfloat16"
        np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.cast(result, "float32")),
                                   expected, atol=0.05)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(half.moving_mean),
                               keras.ops.convert_to_numpy(full.moving_mean), rtol=1e-2)


def test_batch_normalization_config_round_trips_and_shares_keras_weights(tmp_path):
    layer = fused_batch_norm.BatchNormalization(momentum=0.9, epsilon=1e-2, name="norm")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, fused_batch_norm.BatchNormalization)
    assert restored.get_config() == layer.get_config()
    # Weights are filed under Keras' own layer name, so either class loads the other's.
    ours = _conv_then_batch_norm(fused_batch_norm.BatchNormalization)
    ours.get_layer("norm").moving_mean.assign([0.5, -1.0, 2.0])
    ours.save_weights(tmp_path / "ours.weights.h5")
    keras_own = _conv_then_batch_norm(keras.layers.BatchNormalization)
    keras_own.load_weights(tmp_path / "ours.weights.h5")
    for our_weight, keras_weight in zip(ours.get_weights(), keras_own.get_weights()):
        np.testing.assert_array_equal(our_weight, keras_weight)



@pytest.mark.parametrize("batch_norm, expected", [("fused", fused_batch_norm.BatchNormalization),
                                                  ("auto", fused_batch_norm.BatchNormalization),
                                                  ("keras", keras.layers.BatchNormalization)])
def test_the_batch_norm_option_picks_the_layer(batch_norm, expected):
    encoder = models.build_encoder(batch_norm=batch_norm)
    norms = [layer for layer in encoder.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 4 and all(type(layer) is expected for layer in norms)


def _op_types(layer, features, training):
    """The TensorFlow op types of one traced call of `layer`."""
    import tensorflow as tf

    traced = tf.function(lambda batch: layer(batch, training=training))
    return {op.type for op in traced.get_concrete_function(features).graph.get_operations()}


@pytest.mark.parametrize("dtype, training, fused", [
    ("float32", True, True), ("float32", False, False),
    ("mixed_bfloat16", True, True), ("mixed_bfloat16", False, True)])
def test_the_fused_kernel_runs_in_training_and_in_bfloat16_inference(dtype, training, fused):
    # In float32 inference Keras' own ops evaluate faster than the fused kernel; in training
    # and in bfloat16 the kernel is faster (docs/performance.md).
    layer = fused_batch_norm.BatchNormalization(dtype=dtype)
    features = keras.ops.cast(np.ones((2, 4, 4, 3), "float32"), layer.compute_dtype)
    layer.build(features.shape)
    assert ("FusedBatchNormV3" in _op_types(layer, features, training)) == fused
