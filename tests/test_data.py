"""Data loading and checking: sources, conversion, and one clear error per bad input."""

import numpy as np
import pytest

import data
from conftest import write_npz


def test_uint8_images_become_float32_in_unit_range_with_a_channel(mnist_arrays):
    images = data.prepare_images(mnist_arrays["x_test"][:5])
    assert images.shape == (5, 28, 28, 1) and images.dtype == np.float32
    np.testing.assert_allclose(images[..., 0], mnist_arrays["x_test"][:5] / 255.0, rtol=1e-6)


def test_float_images_in_unit_range_pass_unchanged():
    images = np.random.default_rng(0).random((2, 28, 28, 1)).astype("float64")
    np.testing.assert_allclose(data.prepare_images(images), images.astype("float32"))


@pytest.mark.parametrize("images, message", [
    (np.zeros((2, 28, 28, 2), np.uint8), "3\\) for RGB"),
    (np.zeros((2, 28), np.uint8), "store the images in one of those shapes"),
    (np.zeros((0, 28, 28), np.uint8), "empty"),
    (np.full((1, 28, 28), np.nan, np.float32), "NaN"),
    (np.full((1, 28, 28), 255.0, np.float32), "divide by 255"),
    (np.full((1, 28, 28), 300, np.int32), "outside 0..255"),
    (np.full((1, 28, 28), "a"), "not numbers"),
])
def test_bad_images_are_refused_with_the_fix(images, message):
    with pytest.raises(data.DataError, match=message):
        data.prepare_images(images)


@pytest.mark.parametrize("labels, message", [
    (np.array([0, 10]), "outside 0..9"),
    (np.array([-1, 3]), "outside 0..9"),
    (np.array([1]), "one label per image"),
    (np.array([0.5, 1.0]), "integers"),
])
def test_bad_labels_are_refused(labels, message):
    with pytest.raises(data.DataError, match=message):
        data.prepare_labels(labels, 2)


def test_load_dataset_reads_a_keras_layout_npz(tiny_npz):
    dataset = data.load_dataset(tiny_npz)
    assert dataset.x_train.shape == (256, 28, 28, 1)
    assert dataset.x_test.shape == (128, 28, 28, 1)
    assert dataset.y_train.dtype == np.int64 and set(dataset.y_train) == set(range(10))
    assert "256 training and 128 test images" in dataset.describe()


def test_an_npz_of_uint8_images_loads_as_uint8_for_training(tiny_npz):
    floats = data.load_dataset(tiny_npz)
    held = data.load_dataset(tiny_npz, keep_uint8=True)
    assert held.x_train.dtype == np.uint8 and held.x_test.dtype == np.uint8
    assert held.x_train.nbytes * 4 == floats.x_train.nbytes
    np.testing.assert_array_equal(held.x_train.astype("float32") / 255.0, floats.x_train)
    # Float images cannot become uint8 without rounding: they stay float32.
    assert data.prepare_images(floats.x_test, keep_uint8=True).dtype == np.float32


def test_only_training_holds_uint8_and_analysis_and_benchmarks_get_floats(tiny_npz):
    # analysis.py, detect.py and the benchmarks do NumPy arithmetic on the images.
    import settings
    import training

    run_settings = settings.TrainingSettings(data=str(tiny_npz))
    assert training.load_data(run_settings).x_test.dtype == np.float32
    assert training.load_data(run_settings, keep_uint8=True).x_test.dtype == np.uint8


def test_missing_key_truncated_and_absent_files_are_refused(tmp_path, mnist_arrays):
    with pytest.raises(data.DataError, match="does not exist"):
        data.load_dataset(tmp_path / "nowhere.npz")
    partial = write_npz(tmp_path / "partial.npz", x_train=mnist_arrays["x_train"][:4])
    with pytest.raises(data.DataError, match="lacks the arrays y_train, x_test, y_test"):
        data.load_dataset(partial)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data.BUNDLED_MNIST.read_bytes()[:5000])
    with pytest.raises(data.DataError, match="not a readable .npz"):
        data.load_dataset(truncated)


def test_offline_falls_back_to_the_bundled_subset(monkeypatch):
    def no_network():
        raise OSError("URL fetch failure: Name or service not known")

    import keras
    monkeypatch.setattr(keras.datasets.mnist, "load_data", no_network)
    dataset = data.load_dataset()
    assert "bundled mnist-20k.npz" in dataset.source
    assert len(dataset.x_train) == 10000 and len(dataset.x_test) == 10000


def test_keras_mnist_is_used_when_it_loads(monkeypatch, mnist_arrays):
    import keras
    monkeypatch.setattr(keras.datasets.mnist, "load_data", lambda: (
        (mnist_arrays["x_train"][:3], mnist_arrays["y_train"][:3]),
        (mnist_arrays["x_test"][:2], mnist_arrays["y_test"][:2])))
    dataset = data.load_dataset()
    assert dataset.source.startswith("Keras MNIST") and len(dataset.x_train) == 3


def test_train_limit_takes_the_first_images_then_digits_filter():
    images = np.arange(10).reshape(10, 1, 1, 1).astype("float32")
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 9])
    kept_images, kept_labels = data.select_training_images(images, labels, 6, [0, 2])
    np.testing.assert_array_equal(kept_labels, [0, 2, 0, 2])
    np.testing.assert_array_equal(kept_images.ravel(), [0, 2, 3, 5])


@pytest.mark.parametrize("limit, digits, message", [
    (11, None, "larger than the 10 training images"),
    (None, [], "names no class"),
    (None, [3, 12], r"outside 0..9"),
    (None, [5], "no training images are left"),
])
def test_bad_selection_is_refused(limit, digits, message):
    images = np.zeros((10, 28, 28, 1), "float32")
    labels = np.arange(10) % 3
    with pytest.raises(data.DataError, match=message):
        data.select_training_images(images, labels, limit, digits)
