"""MNIST loading and checking: images as float32 in [0, 1], shape (N, 28, 28, 1).

Sources, in order:
  1. an `.npz` file the user names (Keras' layout: x_train, y_train, x_test, y_test);
  2. Keras' own MNIST (`keras.datasets.mnist.load_data()`, from its cache or a download);
  3. the real 20,000-image subset shipped in `data/mnist-20k.npz`, used when 2 fails
     (no network): the first 10,000 training images and the full test set.
"""

import dataclasses
import pathlib
import zipfile

import keras
import numpy as np

BUNDLED_MNIST = pathlib.Path(__file__).resolve().parent / "data" / "mnist-20k.npz"
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
IMAGE_SIZE = (28, 28)
NUM_CLASSES = 10


class DataError(ValueError):
    """Bad data from the user: the message names the problem and the fix."""


@dataclasses.dataclass
class Dataset:
    """Images in [0, 1] of shape (N, 28, 28, 1), float32; labels int64 of shape (N,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str

    def describe(self):
        return (f"data: {self.source}: {len(self.x_train):,} training and "
                f"{len(self.x_test):,} test images")


def prepare_images(images, name="images"):
    """Checks images and returns them as float32 in [0, 1] with shape (N, 28, 28, 1).

    Integer images must lie in 0..255 and are divided by 255; float images must
    already lie in [0, 1].

    Raises:
        DataError: on an empty set, a wrong shape, a non-numeric dtype, NaN or
            infinite pixels, or values out of range.
    """
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3 or images.shape[1:] != IMAGE_SIZE:
        raise DataError(f"{name} have shape {images.shape}, but the models need (N, 28, 28) or "
                        f"(N, 28, 28, 1): resize the images to 28 x 28 grayscale")
    if len(images) == 0:
        raise DataError(f"{name} are empty (0 images): give a data file with images in it")
    if np.issubdtype(images.dtype, np.integer):
        if images.min() < 0 or images.max() > 255:
            raise DataError(f"{name} have integer pixels from {images.min()} to {images.max()}, "
                            f"outside 0..255: store them as uint8 grayscale")
        images = images.astype(np.float32) / 255.0
    elif np.issubdtype(images.dtype, np.floating):
        if not np.all(np.isfinite(images)):
            raise DataError(f"{name} contain NaN or infinite pixels: clean or drop those images")
        if images.min() < 0.0 or images.max() > 1.0:
            raise DataError(f"{name} have float pixels from {images.min():g} to {images.max():g}, "
                            f"outside [0, 1]: divide by 255 or store them as uint8")
        images = images.astype(np.float32)
    else:
        raise DataError(f"{name} have dtype {images.dtype}, not numbers: store them as uint8")
    return images[..., np.newaxis]


def prepare_labels(labels, num_images, name="labels"):
    """Checks digit labels (integers 0..9, one per image) and returns them as int64."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != num_images:
        raise DataError(f"{name} have shape {labels.shape}, but there are {num_images} images: "
                        f"give one label per image")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.floating) or not np.all(labels == np.round(labels)):
            raise DataError(f"{name} have dtype {labels.dtype}: store the digits as integers 0..9")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise DataError(f"{name} run from {labels.min()} to {labels.max()}, outside 0..9: "
                        f"MNIST labels are the digits 0 to 9")
    return labels.astype(np.int64)


def load_npz(path):
    """Loads and checks an `.npz` in Keras' MNIST layout; raises DataError if it is unusable."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist: check the path given to --data")
    try:
        # Our own file handle, so it is closed even when NumPy fails to read the archive.
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as archive:
            missing = [key for key in NPZ_KEYS if key not in archive.files]
            if missing:
                raise DataError(f"data file {path} lacks the arrays {', '.join(missing)}: it needs "
                                f"{', '.join(NPZ_KEYS)}, as in Keras' mnist.npz")
            arrays = {key: archive[key] for key in NPZ_KEYS}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"data file {path} is not a readable .npz ({error}): "
                        f"download or save it again") from None
    return arrays


def check_arrays(arrays, source):
    """Turns raw arrays in Keras' layout into a checked `Dataset`."""
    x_train = prepare_images(arrays["x_train"], "training images (x_train)")
    x_test = prepare_images(arrays["x_test"], "test images (x_test)")
    y_train = prepare_labels(arrays["y_train"], len(x_train), "training labels (y_train)")
    y_test = prepare_labels(arrays["y_test"], len(x_test), "test labels (y_test)")
    return Dataset(x_train, y_train, x_test, y_test, source)


def load_keras_mnist():
    """Keras' MNIST as raw arrays, or None where it cannot be had (no cache, no network)."""
    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    except Exception:  # any failure to fetch or read falls back to the bundled copy
        return None
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def load_dataset(path=None):
    """Loads MNIST from `path`, else from Keras, else from the bundled 20k subset."""
    if path is not None:
        return check_arrays(load_npz(path), str(path))
    arrays = load_keras_mnist()
    if arrays is not None:
        return check_arrays(arrays, "Keras MNIST (keras.datasets.mnist)")
    return check_arrays(load_npz(BUNDLED_MNIST),
                        f"bundled {BUNDLED_MNIST.name} (Keras MNIST unavailable offline)")


def select_training_images(images, labels, train_limit=None, digits=None):
    """The first `train_limit` images, then only those of the given digits.

    Raises:
        DataError: if the limit exceeds the data, a digit is outside 0..9, or
            nothing is left.
    """
    if train_limit is not None:
        if train_limit > len(images):
            raise DataError(f"--train-limit {train_limit} is larger than the {len(images):,} "
                            f"training images: lower it or give more data")
        images, labels = images[:train_limit], labels[:train_limit]
    if digits is not None:
        digits = list(digits)
        if not digits:
            raise DataError("--digits names no digit: give one or more of 0 to 9")
        outside = [digit for digit in digits if not 0 <= digit < NUM_CLASSES]
        if outside:
            raise DataError(f"--digits names {outside}, outside 0..9: give digits from 0 to 9")
        keep = np.isin(labels, digits)
        images, labels = images[keep], labels[keep]
    if len(images) == 0:
        raise DataError("no training images are left after --train-limit and --digits: "
                        "raise the limit or name other digits")
    return images, labels
