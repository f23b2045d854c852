"""What detect.py does: score new images by a run's reconstruction error.

    detect(DetectSettings) -> CSV rows: source, error, threshold, anomaly, percentile, note

An image is an anomaly when the error of its deterministic reconstruction (the
model's `anomaly_score`: relative squared error or MSE) is above the run's
threshold, which training stores with the model: the `--threshold-percentile`
(default 99th) percentile of its training images' errors. From Python, the
same scoring is one call on a loaded model:

    model = keras.saving.load_model("runs/ae/model.keras")   # after `import models`
    errors, is_anomaly = model.detect_anomalies(images)      # images (N, H, W, C) in [0, 1]
    maps = model.anomaly_maps(images)                         # (N, H, W): where, summing to errors
    percentiles = model.score_percentiles(errors)             # share of training images below

`percentile` puts a score on the training images' scale: 99.7 means that
99.7 % of the run's training images score lower. A file that cannot be scored
stops the run with one line, or with `--skip-unreadable` gets a row with an
empty error and the reason in `note`. Text cells that a spreadsheet would read
as a formula (starting with =, +, -, @, a tab or a carriage return) get a
leading ', as OWASP advises against CSV injection.
"""

import csv
import io
import pathlib
import re
import sys

import numpy as np

import data
import models
import onnx_export
import plots
import run_folder
import training

MONTAGE_IMAGES = 8
CSV_COLUMNS = ("source", "error", "threshold", "anomaly", "percentile", "note")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
GRAYSCALE_FOR_RGB_NOTE = "grayscale: its channel repeated for this RGB run"


def describe_shape(height, width, channels):
    return f"{height} x {width} {'RGB' if channels == 3 else 'grayscale'}"


def conform(image, has_colour, source, image_shape, resize):
    """One image (H, W, C) in [0, 1] in the run's shape and a note, or a DataError with the fix.

    A grayscale run takes grayscale images and colour files whose pixels are all
    gray. An RGB run takes RGB files, and grayscale ones with their channel
    repeated, which the note says. A size other than the run's is refused
    unless `resize`.
    """
    height, width, channels = image_shape
    expected = describe_shape(height, width, channels)
    if channels == 1 and has_colour:
        raise data.DataError(f"{source} has colour, but the run was trained on {expected} "
                             f"images: convert the images to grayscale, or train a run on RGB "
                             f"images")
    note = GRAYSCALE_FOR_RGB_NOTE if channels == 3 and image.shape[-1] == 1 else ""
    if image.shape[:2] != (height, width) and not resize:
        raise data.DataError(f"{source} is {image.shape[0]} x {image.shape[1]}, but the run "
                             f"was trained on {expected} images: resize them, or give --resize")
    batch = data.convert_channels(image.astype("float32")[np.newaxis],
                                  "rgb" if channels == 3 else "grayscale")
    return data.resize_images(batch, (height, width))[0], note


class Inputs:
    """What the INPUT arguments gave, in order: one entry per source.

    `images` (N, H, W, C) are those that can be scored; `scored[i]` says
    whether source i is one of them, and `notes[i]` says why not, or what was
    done to it.
    """

    def __init__(self, image_shape, resize, skip_unreadable):
        self.image_shape, self.resize, self.skip_unreadable = image_shape, resize, skip_unreadable
        self.sources, self.notes, self.scored, self._images = [], [], [], []

    def add(self, source, read):
        """Adds `source`; `read()` gives its (image, has colour) in [0, 1] or a DataError."""
        try:
            image, has_colour = read()
            image, note = conform(image, has_colour, source, self.image_shape, self.resize)
        except data.DataError as error:
            if not self.skip_unreadable:
                raise
            self.add_unscored(source, str(error))
            return
        self.sources.append(str(source))
        self.notes.append(note)
        self.scored.append(True)
        self._images.append(image)

    def add_unscored(self, source, reason):
        self.sources.append(str(source))
        self.notes.append(reason)
        self.scored.append(False)

    @property
    def images(self):
        height, width, channels = self.image_shape
        if not self._images:
            return np.zeros((0, height, width, channels), dtype="float32")
        return np.stack(self._images)

    @property
    def skipped(self):
        return self.scored.count(False)


def _npz_arrays(path):
    """The image arrays (3 or 4 dimensions) of an .npz, by key, or a DataError."""
    try:
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files if archive[key].ndim in (3, 4)}
    except (OSError, ValueError, EOFError) as error:
        raise data.DataError(f"{path} is not a readable .npz ({error}): save it again") from None
    if not arrays:
        raise data.DataError(f"{path} holds no image arrays (N, height, width[, channels]): "
                             f"store the images under a key such as x_test")
    return arrays


def _add_npz(inputs, path):
    """Adds each image of an .npz, named `path:key[index]`."""
    for key, array in _npz_arrays(path).items():
        prepared = data.prepare_images(array, f"{path}:{key}")  # (N, H, W, C) in [0, 1]
        for index, image in enumerate(prepared):
            colour = image.shape[-1] == 3 and bool(np.ptp(image, axis=-1).any())
            inputs.add(f"{path}:{key}[{index}]", lambda image=image, colour=colour: (image, colour))


def _read_file(file):
    pixels, has_colour = data.read_image(file)  # uint8
    return pixels / 255.0, has_colour


def collect_inputs(inputs, image_shape, resize=False, skip_unreadable=False):
    """The images that the INPUT arguments name, checked, as an `Inputs`.

    With `skip_unreadable`, a file or image that cannot be scored (unreadable,
    too large, of another size without `resize`, in colour for a grayscale run)
    is kept as an unscored entry with the reason; without it, it raises.

    Raises:
        data.DataError: on a missing path, an empty folder or a file of another
            kind, and without `skip_unreadable` on the first image that cannot
            be scored.
    """
    collected = Inputs(image_shape, resize, skip_unreadable)
    for given in inputs:
        path = pathlib.Path(given)
        if path.suffix.lower() == ".npz" and path.is_file():
            try:
                _add_npz(collected, path)
            except data.DataError as error:  # the archive itself cannot be read
                if not skip_unreadable:
                    raise
                collected.add_unscored(path, str(error))
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
            collected.add(file, lambda file=file: _read_file(file))
    return collected


def threshold_of(model, config):
    """The run's stored threshold, with its training scores at `models.SCORE_PERCENTILES`.

    Runs trained before either was stored get them now, from their training images.
    """
    if model.anomaly_threshold is not None and model.score_quantiles is not None:
        return model.anomaly_threshold
    settings = config["settings"]
    dataset = training.load_data(settings)
    normal_images, _ = training.training_images(settings, dataset, limit_given=False)
    if model.anomaly_threshold is None:
        threshold = model.set_anomaly_threshold(normal_images, settings.threshold_percentile)
        print(f"detect.py: this run stores no threshold (trained before detect.py); computed "
              f"{threshold:.4g} from its {len(normal_images):,} training images", file=sys.stderr)
    else:
        model.score_quantiles = models.score_quantiles(model.anomaly_scores(normal_images))
        print(f"detect.py: this run stores no training scores (trained before the percentile "
              f"column); computed them from its {len(normal_images):,} training images",
              file=sys.stderr)
    return model.anomaly_threshold


def csv_safe(text):
    """A text cell that a spreadsheet shows as text: a leading ' before what would start a
    formula (OWASP's advice against CSV injection)."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_text(inputs, errors, threshold, is_anomaly, percentiles):
    """The CSV, one row per source in `inputs`; unscored ones have empty score cells."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    scored = iter(range(len(errors)))
    for source, note, was_scored in zip(inputs.sources, inputs.notes, inputs.scored):
        if was_scored:
            index = next(scored)
            cells = [f"{errors[index]:.6g}", f"{threshold:.6g}",
                     str(bool(is_anomaly[index])).lower(), f"{percentiles[index]:.1f}"]
        else:
            cells = ["", f"{threshold:.6g}", "", ""]
        writer.writerow([csv_safe(source), *cells, csv_safe(note)])
    return buffer.getvalue()


def montage(model, images, errors, is_anomaly, colormap, title):
    """The most anomalous inputs (highest error): each over its reconstruction and its map."""
    order = np.argsort(errors)[::-1][:MONTAGE_IMAGES]
    return plots.anomaly_maps(
        images[order], model.reconstruct(images[order]), model.anomaly_maps(images[order]), title,
        [f"{errors[index]:.4f}" + ("\nanomaly" if is_anomaly[index] else "") for index in order],
        colormap=colormap)


def map_file_name(index, source):
    """`00012-name.png`: the input's position, then its name (less its extension) with only
    safe characters."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", pathlib.PurePath(str(source)).stem)[:80]
    return f"{index:05d}-{stem.strip('._') or 'image'}.png"


def write_maps(model, images, errors, is_anomaly, percentiles, sources, folder, colormap,
               batch_size):
    """One PNG per scored image in `folder`: the image, its reconstruction and its map."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        reconstructions = model.reconstruct(batch, batch_size)
        maps = model.anomaly_maps(batch, batch_size)
        for offset in range(len(batch)):
            index = start + offset
            verdict = "anomaly" if is_anomaly[index] else "normal"
            plots.save(plots.anomaly_maps(
                batch[offset:offset + 1], reconstructions[offset:offset + 1],
                maps[offset:offset + 1],
                f"{pathlib.PurePath(str(sources[index])).name}\nscore {errors[index]:.4g}, "
                f"percentile {percentiles[index]:.1f}: {verdict}", colormap=colormap),
                folder / map_file_name(index, sources[index]))


def detect(args):
    """Scores the images `args.inputs` name against the run `args.run_dir`.

    Writes the CSV to `args.out` (atomically) or standard output, the montage
    to `args.montage` and the maps into `args.maps` if asked. Returns
    `(inputs, errors, is_anomaly)`, the last two for the scored images.
    """
    model, config = run_folder.load_model(args.run_dir)
    inputs = collect_inputs(args.inputs, model.image_shape, args.resize, args.skip_unreadable)
    images = inputs.images
    if not len(images):
        raise data.DataError(f"none of the {len(inputs.sources):,} inputs could be scored (the "
                             f"first: {inputs.notes[0]})")
    threshold = threshold_of(model, config)
    errors, is_anomaly = model.detect_anomalies(images, args.batch_size)
    percentiles = model.score_percentiles(errors)
    text = csv_text(inputs, errors, threshold, is_anomaly, percentiles)
    colormap = config.get("data", {}).get("image_colormap", plots.IMAGE_COLORMAP)
    scored_sources = [source for source, was_scored in zip(inputs.sources, inputs.scored)
                      if was_scored]
    if args.montage:
        plots.save(montage(model, images, errors, is_anomaly, colormap,
                           f"{len(images):,} inputs: the {min(MONTAGE_IMAGES, len(images))} with "
                           f"the highest reconstruction error (threshold {threshold:.4f})"),
                   args.montage)
    if args.maps:
        write_maps(model, images, errors, is_anomaly, percentiles, scored_sources, args.maps,
                   colormap, args.batch_size)
    if args.out:
        run_folder.write_text(args.out, text)
    else:
        sys.stdout.write(text)
    percentile = model.threshold_percentile or config["settings"].threshold_percentile
    skipped = (f"; skipped {inputs.skipped:,} that could not be scored (see the note column)"
               if inputs.skipped else "")
    print(f"detect.py: {int(is_anomaly.sum()):,} of {len(images):,} images are anomalies (error "
          f"above {threshold:.4g}, the {percentile:g}th percentile of the training errors)"
          + skipped + (f"; wrote {args.out}" if args.out else ""), file=sys.stderr)
    return inputs, errors, is_anomaly


def export_detector(args):
    """Writes the run's detector to `args.export` as ONNX (see onnx_export.py)."""
    model, config = run_folder.load_model(args.run_dir)
    threshold = threshold_of(model, config)
    onnx_export.export(model, args.export)
    print(f"detect.py: wrote {args.export}: scores and maps of {describe_shape(*model.image_shape)}"
          f" images, threshold {threshold:.4g} in its metadata", file=sys.stderr)


def main(args):
    """Scores as `args` (a `settings.DetectSettings`) say; returns the exit status."""
    plots.set_headless()
    for path in (args.out, args.montage, args.export):
        if path and not pathlib.Path(path).resolve().parent.is_dir():
            print(f"detect.py: error: the folder of {path} does not exist: create it, or write "
                  f"elsewhere", file=sys.stderr)
            return 2
    if args.maps and not pathlib.Path(args.maps).resolve().parent.is_dir():
        print(f"detect.py: error: the folder above --maps {args.maps} does not exist: create "
              f"it, or write elsewhere", file=sys.stderr)
        return 2
    if args.export and pathlib.Path(args.export).is_dir():
        print(f"detect.py: error: --export {args.export} is a folder: give a file name, such "
              f"as {pathlib.Path(args.export) / 'detector.onnx'}", file=sys.stderr)
        return 2
    if args.export:
        status = training.run_reporting_user_errors("detect.py", export_detector, args)
        if status or not args.inputs:
            return status
    return training.run_reporting_user_errors("detect.py", detect, args)
