"""What detect.py does: score new images by a run's reconstruction error.

    detect(DetectSettings) -> CSV rows: source, error, threshold, anomaly

An image is an anomaly when the error of its deterministic reconstruction (the
model's `anomaly_score`: relative squared error or MSE) is above the run's
threshold, which training stores with the model: the `--threshold-percentile`
(default 99th) percentile of its training images' errors. From Python, the
same scoring is one call on a loaded model:

    model = keras.saving.load_model("runs/ae/model.keras")   # after `import models`
    errors, is_anomaly = model.detect_anomalies(images)      # images (N, H, W, C) in [0, 1]
"""

import csv
import io
import pathlib
import sys

import numpy as np

import data
import plots
import run_folder
import training

MONTAGE_IMAGES = 8
CSV_COLUMNS = ("source", "error", "threshold", "anomaly")


def describe_shape(height, width, channels):
    return f"{height} x {width} {'RGB' if channels == 3 else 'grayscale'}"


def conform(image, has_colour, source, image_shape, resize):
    """One image (H, W, C) in [0, 1] in the run's shape, or a DataError with the fix.

    A grayscale run takes grayscale images and colour files whose pixels are all
    gray; an RGB run takes RGB files. A size other than the run's is refused
    unless `resize`.
    """
    height, width, channels = image_shape
    expected = describe_shape(height, width, channels)
    if channels == 1 and has_colour:
        raise data.DataError(f"{source} has colour, but the run was trained on {expected} "
                             f"images: convert the images to grayscale, or train a run on RGB "
                             f"images")
    if channels == 3 and image.shape[-1] == 1:
        raise data.DataError(f"{source} is grayscale, but the run was trained on {expected} "
                             f"images: convert the images to RGB, or use a grayscale run")
    if image.shape[:2] != (height, width) and not resize:
        raise data.DataError(f"{source} is {image.shape[0]} x {image.shape[1]}, but the run "
                             f"was trained on {expected} images: resize them, or give --resize")
    batch = data.convert_channels(image.astype("float32")[np.newaxis],
                                  "rgb" if channels == 3 else "grayscale")
    return data.resize_images(batch, (height, width))[0]


def npz_images(path, image_shape, resize):
    """The images in an .npz: every array with 3 or 4 dimensions, named `path:key[index]`."""
    try:
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files if archive[key].ndim in (3, 4)}
    except (OSError, ValueError, EOFError) as error:
        raise data.DataError(f"{path} is not a readable .npz ({error}): save it again") from None
    if not arrays:
        raise data.DataError(f"{path} holds no image arrays (N, height, width[, channels]): "
                             f"store the images under a key such as x_test")
    sources, images = [], []
    for key, array in arrays.items():
        prepared = data.prepare_images(array, f"{path}:{key}")  # (N, H, W, C) in [0, 1]
        for index, image in enumerate(prepared):
            colour = image.shape[-1] == 3 and bool(np.ptp(image, axis=-1).any())
            source = f"{path}:{key}[{index}]"
            sources.append(source)
            images.append(conform(image, colour, source, image_shape, resize))
    return sources, images


def collect_inputs(inputs, image_shape, resize=False):
    """The images that the INPUT arguments name, checked: `(sources, images (N, H, W, C))`.

    Raises:
        data.DataError: on a missing path, an empty folder, an unreadable file, or
            an image whose size or channels the run cannot take.
    """
    sources, images = [], []
    for given in inputs:
        path = pathlib.Path(given)
        if path.suffix.lower() == ".npz" and path.is_file():
            found_sources, found_images = npz_images(path, image_shape, resize)
            sources += found_sources
            images += found_images
            continue
        if path.is_dir():
            files = data.image_files(path)
            if not files:
                raise data.DataError(f"{path} holds no images ({', '.join(data.IMAGE_EXTENSIONS)})"
                                     f": give a folder with image files in it")
        elif path.is_file():
            if path.suffix.lower() not in data.IMAGE_EXTENSIONS:
                raise data.DataError(f"{path} is neither an image "
                                     f"({', '.join(data.IMAGE_EXTENSIONS)}) nor an .npz: give "
                                     f"image files, folders of them, or an .npz")
            files = [path]
        else:
            raise data.DataError(f"{path} does not exist: check the path")
        for file in files:
            pixels, has_colour = data.read_image(file)  # uint8
            sources.append(str(file))
            images.append(conform(pixels / 255.0, has_colour, file, image_shape, resize))
    return sources, np.stack(images)


def threshold_of(model, config):
    """The run's stored threshold; for runs trained before it was stored, computed now."""
    if model.anomaly_threshold is not None:
        return model.anomaly_threshold
    settings = config["settings"]
    dataset = training.load_data(settings)
    normal_images, _ = training.training_images(settings, dataset, limit_given=False)
    threshold = model.set_anomaly_threshold(normal_images, settings.threshold_percentile)
    print(f"detect.py: this run stores no threshold (trained before detect.py); computed "
          f"{threshold:.4g} from its {len(normal_images):,} training images", file=sys.stderr)
    return threshold


def csv_text(sources, errors, threshold, is_anomaly):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for source, error, flagged in zip(sources, errors, is_anomaly):
        writer.writerow([source, f"{error:.6g}", f"{threshold:.6g}", str(bool(flagged)).lower()])
    return buffer.getvalue()


def montage(model, images, errors, is_anomaly, colormap, title):
    """The most anomalous inputs (highest error) over their reconstructions."""
    order = np.argsort(errors)[::-1][:MONTAGE_IMAGES]
    return plots.image_rows(
        [images[order], model.reconstruct(images[order])], ["input", "reconstruction"], title,
        [f"{errors[index]:.4f}" + ("\nanomaly" if is_anomaly[index] else "") for index in order],
        colormap=colormap)


def detect(args):
    """Scores the images `args.inputs` name against the run `args.run_dir`.

    Writes the CSV to `args.out` (atomically) or standard output, and the
    montage to `args.montage` if asked. Returns `(sources, errors, is_anomaly)`.
    """
    model, config = run_folder.load_model(args.run_dir)
    sources, images = collect_inputs(args.inputs, model.image_shape, args.resize)
    threshold = threshold_of(model, config)
    errors, is_anomaly = model.detect_anomalies(images, args.batch_size)
    text = csv_text(sources, errors, threshold, is_anomaly)
    if args.montage:
        colormap = config.get("data", {}).get("image_colormap", plots.IMAGE_COLORMAP)
        plots.save(montage(model, images, errors, is_anomaly, colormap,
                           f"{len(images):,} inputs: the {min(MONTAGE_IMAGES, len(images))} with "
                           f"the highest reconstruction error (threshold {threshold:.4f})"),
                   args.montage)
    if args.out:
        run_folder.write_text(args.out, text)
    else:
        sys.stdout.write(text)
    percentile = model.threshold_percentile or config["settings"].threshold_percentile
    print(f"detect.py: {int(is_anomaly.sum()):,} of {len(images):,} images are anomalies (error "
          f"above {threshold:.4g}, the {percentile:g}th percentile of the training errors)"
          + (f"; wrote {args.out}" if args.out else ""), file=sys.stderr)
    return sources, errors, is_anomaly


def main(args):
    """Scores as `args` (a `settings.DetectSettings`) say; returns the exit status."""
    plots.set_headless()
    for path in (args.out, args.montage):
        if path and not pathlib.Path(path).resolve().parent.is_dir():
            print(f"detect.py: error: the folder of {path} does not exist: create it, or write "
                  f"elsewhere", file=sys.stderr)
            return 2
    return training.run_reporting_user_errors("detect.py", detect, args)
