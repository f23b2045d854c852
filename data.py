"""Images in, checked: float32 in [0, 1], shape (N, height, width, channels), channels 1 or 3.

With `keep_uint8=True` (as training loads them), 8-bit images that need no
resizing and no conversion to grayscale stay uint8 pixels 0..255: a quarter of
the memory, divided by 255 by the models batch by batch (`models.unit_range`).

Sources, by what `--data` and `--dataset` name:
  1. a folder of image files (PNG, JPEG, BMP, GIF), read with Pillow, in one of the
     layouts that `keras.utils.image_dataset_from_directory` reads:
         DIR/train/<class>/*  and  DIR/test/<class>/*     a training and a test set
         DIR/<class>/*                                   one set; --validation-split
                                                         holds out a seeded test share
     Folders with images and no class subfolders (DIR/train/*, DIR/*) are
     unlabelled. Class names are the subfolder names, sorted as Keras sorts them.
  2. an `.npz` the user names (Keras' layout: x_train, y_train, x_test, y_test, and
     optionally class_names);
  3. a Keras dataset by name (`--dataset mnist|fashion_mnist`), from Keras' cache or a
     download; MNIST falls back to the real 20,000-image subset shipped in
     `data/mnist-20k.npz` (the first 10,000 training images and the full test set)
     when it cannot be downloaded.

Images keep their own size if they share one; `--image-size H W` resizes them.
Their channels come from the data (grayscale unless some image has colour), and
`--color-mode grayscale|rgb` forces either.
"""

import dataclasses
import pathlib
import socket
import warnings
import zipfile

import keras
import numpy as np
from PIL import Image, UnidentifiedImageError
from sklearn.model_selection import train_test_split

import models
import settings as run_settings

BUNDLED_MNIST = pathlib.Path(__file__).resolve().parent / "data" / "mnist-20k.npz"
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
# The image files that keras.utils.image_dataset_from_directory reads.
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
# The largest image read, checked from the header before decoding: 8,000 x 8,000, beyond a
# 50-megapixel photo and below Pillow's own decompression-bomb warning (about 89 million).
MAX_IMAGE_PIXELS = 64_000_000
COLOR_MODES = ("auto", "grayscale", "rgb")
DIGIT_NAMES = [str(digit) for digit in range(10)]
KERAS_DATASETS = {
    "mnist": DIGIT_NAMES,
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"],
}
# A download that cannot reach its server gives up after this many seconds, not never.
DOWNLOAD_TIMEOUT_SECONDS = 30
# The luma weights (ITU-R 601-2) that Pillow's convert("L") uses.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype="float32")


class DataError(ValueError):
    """Bad data from the user: the message names the problem and the fix."""


@dataclasses.dataclass
class Dataset:
    """A training and a test set.

    Images are float32 in [0, 1] (or uint8 pixels 0..255, loaded with `keep_uint8`)
    of shape (N, height, width, channels). Labels
    are int64 of shape (N,), indices into `class_names`; both are None for
    unlabelled images.

    `image_colormap` is how grayscale images are shown: "gray_r" (ink dark on
    white, as the original scripts showed MNIST) for the MNIST layouts, "gray"
    (as they are) for image folders.
    """

    x_train: np.ndarray
    y_train: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray | None
    source: str
    class_names: list[str] | None = None
    image_colormap: str = "gray_r"

    @property
    def labelled(self):
        return self.class_names is not None

    @property
    def image_shape(self):
        return tuple(int(size) for size in self.x_train.shape[1:])

    @property
    def class_title(self):
        """What one class is called in legends: "digit" for digits only, else "class"."""
        return "digit" if self.class_names and set(self.class_names) <= set(DIGIT_NAMES) \
            else "class"

    def describe(self):
        height, width, channels = self.image_shape
        classes = (f"{len(self.class_names)} classes" if self.labelled else "unlabelled")
        return (f"data: {self.source}: {len(self.x_train):,} training and "
                f"{len(self.x_test):,} test images of {height} x {width} "
                f"{'RGB' if channels == 3 else 'grayscale'}, {classes}")

    def display_info(self):
        """What plots need to know about the data: stored in config.json by training."""
        return {"class_names": self.class_names, "class_title": self.class_title,
                "image_colormap": self.image_colormap}


# --- Checking arrays ---------------------------------------------------------------------------

def prepare_images(images, name="images", keep_uint8=False):
    """Checks images and returns them as float32 in [0, 1] with shape (N, H, W, C), C 1 or 3.

    Integer images must lie in 0..255 and are divided by 255 (or, with
    `keep_uint8`, returned as uint8); float images must already lie in [0, 1].
    (N, H, W) gets a channel axis.

    Raises:
        DataError: on an empty set, a wrong shape, a non-numeric dtype, NaN or
            infinite pixels, or values out of range.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DataError(f"{name} have shape {images.shape}, but the models need (N, height, "
                        f"width) for grayscale or (N, height, width, 3) for RGB: store the "
                        f"images in one of those shapes")
    if len(images) == 0:
        raise DataError(f"{name} are empty (0 images): give a data file with images in it")
    if np.issubdtype(images.dtype, np.integer):
        if images.min() < 0 or images.max() > 255:
            raise DataError(f"{name} have integer pixels from {images.min()} to {images.max()}, "
                            f"outside 0..255: store them as uint8")
        images = images.astype(np.uint8)  # within 0..255, checked above
        if not keep_uint8:
            images = models.unit_floats(images)
    elif np.issubdtype(images.dtype, np.floating):
        if not np.all(np.isfinite(images)):
            raise DataError(f"{name} contain NaN or infinite pixels: clean or drop those images")
        if images.min() < 0.0 or images.max() > 1.0:
            raise DataError(f"{name} have float pixels from {images.min():g} to {images.max():g}, "
                            f"outside [0, 1]: divide by 255 or store them as uint8")
        images = images.astype(np.float32)
    else:
        raise DataError(f"{name} have dtype {images.dtype}, not numbers: store them as uint8")
    return images


def prepare_labels(labels, num_images, name="labels", num_classes=10):
    """Checks class labels (integers 0..num_classes-1, one per image); returns them as int64."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != num_images:
        raise DataError(f"{name} have shape {labels.shape}, but there are {num_images} images: "
                        f"give one label per image")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.floating) or not np.all(labels == np.round(labels)):
            raise DataError(f"{name} have dtype {labels.dtype}: store the classes as integers "
                            f"0..{num_classes - 1}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(f"{name} run from {labels.min()} to {labels.max()}, outside "
                        f"0..{num_classes - 1}: give labels 0..{num_classes - 1}"
                        + (", or class_names in the .npz" if num_classes == 10 else ""))
    return labels.astype(np.int64)


def convert_channels(images, color_mode):
    """(N, H, W, C) images as grayscale (luma, float32) or RGB (gray repeated); "auto" keeps
    them."""
    channels = images.shape[-1]
    if color_mode == "grayscale" and channels == 3:
        return (models.unit_floats(images) @ LUMA_WEIGHTS)[..., np.newaxis].astype("float32")
    if color_mode == "rgb" and channels == 1:
        return np.repeat(images, 3, axis=-1)
    return images


def resize_images(images, image_size):
    """(N, H, W, C) images bilinearly resized (with antialiasing) to `image_size` (H, W)."""
    if image_size is None or tuple(images.shape[1:3]) == tuple(image_size):
        return images
    resized = keras.ops.image.resize(models.unit_floats(images), tuple(image_size),
                                     interpolation="bilinear", antialias=True,
                                     data_format="channels_last")
    return np.clip(keras.ops.convert_to_numpy(resized), 0.0, 1.0).astype("float32")


def check_image_size(image_shape, multiple):
    """Raises DataError unless the model's strides (`multiple`) divide height and width.

    The message names the nearest sizes that work and the flag that resizes.
    """
    height, width = image_shape[:2]
    if height % multiple == 0 and width % multiple == 0 and height and width:
        return

    def nearest(size):
        below = max(multiple, size // multiple * multiple)
        return sorted([below, below + multiple], key=lambda candidate: abs(candidate - size))

    suggestions = " or ".join(f"{h} x {w}" for h, w in
                              zip(nearest(height), nearest(width)))
    best_height, best_width = nearest(height)[0], nearest(width)[0]
    raise DataError(f"the images are {height} x {width}, but the model's strides need a height "
                    f"and width divisible by {multiple}; the nearest sizes that work are "
                    f"{suggestions}: give --image-size {best_height} {best_width}")


# --- Reading image files -----------------------------------------------------------------------

def is_image_file(path):
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def image_files(folder):
    """The image files under `folder`, searched recursively, in sorted path order."""
    return sorted(path for path in pathlib.Path(folder).rglob("*") if is_image_file(path))


def _grayscale_pixels(image):
    """A grayscale Pillow image as uint8 (H, W, 1); 16-bit ones scaled from 0..65535, where
    Pillow's "L" would clip them at 255."""
    if image.mode.startswith("I"):  # PNG's 16-bit grayscale opens as "I;16" or "I"
        scaled = np.clip(np.asarray(image).astype("float64"), 0, 65535) / 65535 * 255
    elif image.mode == "F":  # float pixels, taken to be in [0, 1]
        scaled = np.clip(np.asarray(image).astype("float64"), 0, 1) * 255
    else:
        return np.asarray(image.convert("L"))[..., np.newaxis]
    return np.round(scaled).astype("uint8")[..., np.newaxis]


def read_image(path):
    """One image file as uint8, shape (H, W, 1) or (H, W, 3), and whether it has colour.

    Grayscale files stay one channel; 16-bit ones are scaled from 0..65535.
    Others (RGB, palette, CMYK, with or without alpha) become RGB; "has colour"
    means some pixel's R, G and B differ. The size is checked from the file's
    header, before anything is decoded: an image over `MAX_IMAGE_PIXELS` is
    refused, so a decompression bomb costs nothing.

    Raises:
        DataError: if Pillow cannot read the file, or the image is too large.
    """
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own limit; ours is lower and refuses those images itself.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)  # reads the header only
        with image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise DataError(f"{path} is {width:,} x {height:,} pixels, over the limit of "
                                f"{MAX_IMAGE_PIXELS:,}: shrink it before giving it")
            image.load()
            if image.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
                pixels = _grayscale_pixels(image)
            else:
                pixels = np.asarray(image.convert("RGB"))
    except DataError:
        raise
    except Image.DecompressionBombError as error:  # above twice Pillow's limit, at open
        raise DataError(f"{path} is too large to decode safely ({error}): shrink it before "
                        f"giving it") from None
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise DataError(f"cannot read image {path} ({error}): remove it, or save it again as "
                        f"PNG or JPEG") from None
    has_colour = pixels.shape[-1] == 3 and not (
        np.array_equal(pixels[..., 0], pixels[..., 1])
        and np.array_equal(pixels[..., 1], pixels[..., 2]))
    return pixels, has_colour


def stack_images(pixel_arrays, image_size, color_mode, where, keep_uint8=False):
    """Uint8 images of possibly mixed sizes and channels as one float32 (N, H, W, C) array.

    With `keep_uint8`, as one uint8 array where no image needs resizing or
    conversion to grayscale.

    Raises:
        DataError: if the sizes differ and `image_size` is None.
    """
    sizes = sorted({pixels.shape[:2] for pixels in pixel_arrays})
    if len(sizes) > 1 and image_size is None:
        listed = ", ".join(f"{h} x {w}" for h, w in sizes[:4]) + (", ..." if len(sizes) > 4 else "")
        raise DataError(f"the images in {where} have {len(sizes)} different sizes ({listed}): "
                        f"give --image-size HEIGHT WIDTH to resize them to one")
    channels = 3 if color_mode == "rgb" or (
        color_mode == "auto" and any(pixels.shape[-1] == 3 for pixels in pixel_arrays)) else 1
    target = tuple(image_size) if image_size else sizes[0]
    keep_uint8 = keep_uint8 and sizes == [target] and not (
        channels == 1 and any(pixels.shape[-1] == 3 for pixels in pixel_arrays))
    stacked = np.empty((len(pixel_arrays), *target, channels),
                       dtype="uint8" if keep_uint8 else "float32")
    # Resize each group of one size in one batched call.
    for size in sizes:
        indices = [index for index, pixels in enumerate(pixel_arrays) if pixels.shape[:2] == size]
        for image_channels in (1, 3):
            group = [index for index in indices if pixel_arrays[index].shape[-1] == image_channels]
            if group and keep_uint8:  # image by image, with no stacked copy of the group
                for index in group:
                    stacked[index] = pixel_arrays[index]  # (H, W, 1) repeats into 3 channels
            elif group:
                images = models.unit_floats(np.stack([pixel_arrays[index] for index in group]))
                stacked[group] = resize_images(convert_channels(
                    images, "rgb" if channels == 3 else "grayscale"), target)
    return stacked


def read_image_files(paths, where):
    """Reads files with `read_image`: uint8 arrays, one channel for each image without colour."""
    if not paths:
        raise DataError(f"{where} holds no images ({', '.join(IMAGE_EXTENSIONS)}): "
                        f"give a folder with image files in it")
    pixel_arrays, colours = zip(*(read_image(path) for path in paths))
    # A gray picture saved as RGB is grayscale data: keep one channel for it.
    pixel_arrays = [pixels if has_colour or pixels.shape[-1] == 1 else pixels[..., :1]
                    for pixels, has_colour in zip(pixel_arrays, colours)]
    return pixel_arrays


def class_folders(folder):
    """The class subfolders of `folder`, sorted by name as image_dataset_from_directory does."""
    return sorted((path for path in pathlib.Path(folder).iterdir() if path.is_dir()),
                  key=lambda path: path.name)


def read_tree(folder):
    """One tree of images: (files, class names per file or None when there are no subfolders)."""
    subfolders = class_folders(folder)
    if not subfolders:
        return sorted(path for path in pathlib.Path(folder).iterdir() if is_image_file(path)), None
    files, names = [], []
    for subfolder in subfolders:
        found = image_files(subfolder)
        files += found
        names += [subfolder.name] * len(found)
    return files, names


def load_image_folder(folder, image_size=None, color_mode="auto", validation_split=0.1, seed=0,
                      keep_uint8=False):
    """A `Dataset` from a folder of images in one of the layouts in this module's docstring.

    Raises:
        DataError: on an empty folder, an unreadable file, mixed sizes without
            `image_size`, labelled and unlabelled halves, or a split that
            leaves a set empty.
    """
    folder = pathlib.Path(folder)
    split_layout = (folder / "train").is_dir() and (folder / "test").is_dir()
    if split_layout:
        train_files, train_names = read_tree(folder / "train")
        test_files, test_names = read_tree(folder / "test")
        if (train_names is None) != (test_names is None):
            raise DataError(f"{folder}: one of train/ and test/ has class subfolders and the "
                            f"other has not: give both the same layout")
        if not test_files:
            raise DataError(f"{folder / 'test'} holds no images: put test images in it, or "
                            f"move train/'s contents up and use --validation-split")
        source = f"image folder {folder} (train/ and test/)"
    else:
        train_files, train_names = read_tree(folder)
        test_files, test_names = [], ([] if train_names is not None else None)
        source = f"image folder {folder} ({validation_split:g} held out as the test set)"
    pixel_arrays = read_image_files(train_files + test_files, folder)
    images = stack_images(pixel_arrays, image_size, color_mode, folder, keep_uint8)
    del pixel_arrays  # before the training and test sets are copied out of `images`
    class_names = sorted(set(train_names) | set(test_names)) if train_names is not None else None
    class_index = {name: index for index, name in enumerate(class_names or [])}
    labels = (np.array([class_index[name] for name in train_names + test_names], "int64")
              if class_names else None)
    if split_layout:
        # Files come class by class; a seeded shuffle makes "the first N images"
        # (--train-limit, the figures' examples) a mix of classes, as in MNIST.
        rng = np.random.default_rng(seed)
        train_indices = rng.permutation(len(train_files))
        test_indices = len(train_files) + rng.permutation(len(test_files))
    else:
        train_indices, test_indices = split_held_out(labels, len(images), validation_split, seed,
                                                     folder)

    def pick(indices):
        return images[indices], (labels[indices] if labels is not None else None)

    (x_train, y_train), (x_test, y_test) = pick(train_indices), pick(test_indices)
    return Dataset(x_train, y_train, x_test, y_test, source, class_names, image_colormap="gray")


def split_held_out(labels, count, fraction, seed, folder):
    """Indices of the training and the held-out test images: a seeded `fraction` of `count`,
    stratified by class, each set in a seeded random order."""
    if not 0.0 < fraction < 1.0 or round(count * fraction) < 1 or round(count * (1 - fraction)) < 1:
        raise DataError(f"{folder} has no train/ and test/ subfolders, so --validation-split "
                        f"must hold out at least one of its {count} images and keep one: "
                        f"give a fraction between 0 and 1, such as 0.1")
    stratify = labels if labels is not None and np.bincount(labels).min() >= 2 else None
    return train_test_split(np.arange(count), test_size=fraction, random_state=seed,
                            stratify=stratify)


# --- .npz files and Keras datasets -------------------------------------------------------------

def load_npz(path):
    """Loads and checks an `.npz` in Keras' MNIST layout; raises DataError if it is unusable."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(run_settings.missing_data_file(path))
    try:
        # Our own file handle, so it is closed even when NumPy fails to read the archive.
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as archive:
            missing = [key for key in NPZ_KEYS if key not in archive.files]
            if missing:
                raise DataError(f"data file {path} lacks the arrays {', '.join(missing)}: it needs "
                                f"{', '.join(NPZ_KEYS)}, as in Keras' mnist.npz")
            arrays = {key: archive[key] for key in NPZ_KEYS}
            if "class_names" in archive.files:
                arrays["class_names"] = [str(name) for name in archive["class_names"].tolist()]
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"data file {path} is not a readable .npz ({error}): "
                        f"download or save it again") from None
    return arrays


def check_arrays(arrays, source, class_names=None, keep_uint8=False):
    """Turns raw arrays in Keras' layout into a checked `Dataset`."""
    class_names = arrays.get("class_names") or class_names or DIGIT_NAMES
    x_train = prepare_images(arrays["x_train"], "training images (x_train)", keep_uint8)
    x_test = prepare_images(arrays["x_test"], "test images (x_test)", keep_uint8)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"training images are {x_train.shape[1:]} but test images are "
                        f"{x_test.shape[1:]}: give both sets one size and channel count")
    y_train = prepare_labels(arrays["y_train"], len(x_train), "training labels (y_train)",
                             len(class_names))
    y_test = prepare_labels(arrays["y_test"], len(x_test), "test labels (y_test)",
                            len(class_names))
    return Dataset(x_train, y_train, x_test, y_test, source, list(class_names))


def load_keras_dataset(name):
    """A Keras dataset (`keras.datasets.<name>.load_data()`) as raw arrays.

    Raises:
        DataError: if it cannot be had (no cache and no network), within
            `DOWNLOAD_TIMEOUT_SECONDS` of an unanswered connection.
    """
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_SECONDS)
    try:
        (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, name).load_data()
    except Exception as error:  # urllib, socket, gzip and file errors all mean "not available"
        cause = str(error).strip().splitlines()[0][:160] if str(error).strip() else \
            type(error).__name__
        raise DataError(f"--dataset {name} could not be downloaded or read from Keras' cache "
                        f"({cause}); without a network, give the images with --data (an .npz "
                        f"or an image folder)") from None
    finally:
        socket.setdefaulttimeout(previous_timeout)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def load_dataset(path=None, dataset="mnist", image_size=None, color_mode="auto",
                 validation_split=0.1, seed=0, keep_uint8=False):
    """Loads the images that `--data` (a folder or an .npz) or `--dataset` names.

    MNIST comes from Keras, else from the bundled 20k subset (offline).
    `image_size` (H, W) resizes the images; `color_mode` converts their channels.
    `keep_uint8` keeps 8-bit images that neither changes as uint8 (see the module's
    docstring).
    """
    if path is not None and pathlib.Path(path).is_dir():
        return load_image_folder(path, image_size, color_mode, validation_split, seed,
                                 keep_uint8)
    if path is not None:
        loaded = check_arrays(load_npz(path), str(path), keep_uint8=keep_uint8)
    elif dataset == "mnist":
        try:
            loaded = check_arrays(load_keras_dataset("mnist"), "Keras MNIST (keras.datasets.mnist)",
                                  keep_uint8=keep_uint8)
        except DataError:
            loaded = check_arrays(load_npz(BUNDLED_MNIST), f"bundled {BUNDLED_MNIST.name} "
                                                           f"(Keras MNIST unavailable offline)",
                                  keep_uint8=keep_uint8)
    elif dataset in KERAS_DATASETS:
        loaded = check_arrays(load_keras_dataset(dataset), f"Keras {dataset}",
                              KERAS_DATASETS[dataset], keep_uint8)
    else:
        raise DataError(f"--dataset {dataset} is unknown: give one of {', '.join(KERAS_DATASETS)}")
    for name in ("x_train", "x_test"):
        setattr(loaded, name, resize_images(convert_channels(getattr(loaded, name), color_mode),
                                            image_size))
    return loaded


def select_training_images(images, labels, train_limit=None, classes=None, num_classes=10):
    """The first `train_limit` images, then only those of the given classes.

    Args:
        labels: int array (N,), or None for unlabelled images (then `classes`
            must be None).
        classes: class indices (the digits, for MNIST).
        num_classes: how many classes the data set has.

    Raises:
        DataError: if the limit exceeds the data, a class is unknown or there
            are no labels, or nothing is left.
    """
    if train_limit is not None:
        if train_limit > len(images):
            raise DataError(f"--train-limit {train_limit} is larger than the {len(images):,} "
                            f"training images: lower it or give more data")
        images = images[:train_limit]
        labels = labels[:train_limit] if labels is not None else None
    if classes is not None:
        classes = list(classes)
        if labels is None:
            raise DataError("--digits picks classes, but these images have no labels (no class "
                            "subfolders): drop --digits, or sort the images into class folders")
        if not classes:
            raise DataError("--digits names no class: give one or more class indices")
        outside = [label for label in classes if not 0 <= label < num_classes]
        if outside:
            raise DataError(f"--digits names {outside}, outside 0..{num_classes - 1}: give class "
                            f"indices from 0 to {num_classes - 1}")
        keep = np.isin(labels, classes)
        images, labels = images[keep], labels[keep]
    if len(images) == 0:
        raise DataError("no training images are left after --train-limit and --digits: "
                        "raise the limit or name other classes")
    return images, labels
