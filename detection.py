"""What detect.py does: score new images by a run's reconstruction error.

    detect(DetectSettings) -> CSV rows: source, error, threshold, anomaly, percentile, note

An image is an anomaly when the error of its deterministic reconstruction (the
model's `anomaly_score`: relative squared error or MSE) is above the run's
threshold, which training stores with the model at `--threshold-percentile`
(default 99: 99 % of its training images score lower), or which
`--calibrate` chose from the user's examples (calibration.py). From Python, the
same scoring is one call on a loaded model:

    model = keras.saving.load_model("runs/ae/model.keras")   # after `import models`
    errors, is_anomaly = model.detect_anomalies(images)      # images (N, H, W, C) in [0, 1]
    maps = model.anomaly_maps(images)                         # (N, H, W): where, summing to errors
    percentiles = model.score_percentiles(errors)             # share of training images below

detect.py streams: worker threads read and decode the files a batch ahead
(Pillow releases the GIL), the model scores each batch, and the CSV rows are
written as they come, so memory stays flat with the number of files; a
progress bar with the count and rate shows on stderr when stderr is a
terminal. `--out` is written to a temporary file beside it and renamed at
the end, so a refusal never leaves half a CSV; rows sent to standard output
go out as they come.

`percentile` puts a score on the training images' scale: 99.7 means that
99.7 % of the run's training images score lower. A file that cannot be scored
stops the run with one line, or with `--skip-unreadable` gets a row with an
empty error and the reason in `note`. Text cells that a spreadsheet would read
as a formula (starting with =, +, -, @, a tab or a carriage return) get a
leading ', as OWASP advises against CSV injection.
"""

import collections
import concurrent.futures
import contextlib
import csv
import io
import os
import pathlib
import re
import sys
import time
import warnings

import keras
import numpy as np
from PIL import Image

import atomic_files
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
# Readers decode on threads a window of this many batches ahead of the model. A few threads
# outpace the model (a 28 x 28 PNG reads in about 0.3 ms); more would only contend with
# Keras' predict loop for the GIL.
BATCHES_AHEAD = 2
READ_THREADS = min(4, os.cpu_count() or 1)


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
        source, image, note = load_entry(source, read, self.image_shape, self.resize,
                                         self.skip_unreadable)
        self.sources.append(source)
        self.notes.append(note)
        self.scored.append(image is not None)
        if image is not None:
            self._images.append(image)

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


def _npz_entries(path):
    """(source, read) for each image of an .npz, named `path:key[index]`; one entry whose
    `read` raises the DataError when the archive itself cannot be read."""
    try:
        prepared = {key: data.prepare_images(array, f"{path}:{key}")  # (N, H, W, C) in [0, 1]
                    for key, array in _npz_arrays(path).items()}
    except data.DataError as error:
        yield path, _raiser(error)
        return
    for key, images in prepared.items():
        for index, image in enumerate(images):
            colour = image.shape[-1] == 3 and bool(np.ptp(image, axis=-1).any())
            yield f"{path}:{key}[{index}]", lambda image=image, colour=colour: (image, colour)


def _raiser(error):
    def read():
        raise error
    return read


def _read_file(file):
    pixels, has_colour = data.read_image(file)  # uint8
    return pixels / 255.0, has_colour


class InputPlan:
    """The INPUT arguments, checked and listed, not yet read: `groups` holds, in order,
    ("npz", path) and ("files", [path, ...]) entries; the file lists are the only per-file
    objects kept."""

    def __init__(self, inputs):
        self.groups = []
        for given in inputs:
            path = pathlib.Path(given)
            if path.suffix.lower() == ".npz" and path.is_file():
                self.groups.append(("npz", path))
            elif path.is_dir():
                # Paths as strings: for 200,000 files, 17 MiB against 70 MiB of Path objects.
                files = [str(file) for file in data.image_files(path)]
                if not files:
                    raise data.DataError(f"{path} holds no images "
                                         f"({', '.join(data.IMAGE_EXTENSIONS)}): give a folder "
                                         f"with image files in it")
                self.groups.append(("files", files))
            elif path.is_file():
                if path.suffix.lower() not in data.IMAGE_EXTENSIONS:
                    raise data.DataError(f"{path} is neither an image "
                                         f"({', '.join(data.IMAGE_EXTENSIONS)}) nor an .npz: "
                                         f"give image files, folders of them, or an .npz")
                self.groups.append(("files", [str(path)]))
            else:
                raise data.DataError(f"{path} does not exist: check the path")

    @property
    def file_count(self):
        """How many entries there are, or None when an .npz (counted only when read) is given."""
        if any(kind == "npz" for kind, _ in self.groups):
            return None
        return sum(len(files) for _, files in self.groups)

    def entries(self):
        """(source, read) per input image, in order; `read()` gives (image, has colour) in
        [0, 1] or raises a DataError. Each .npz is loaded when its turn comes."""
        for kind, value in self.groups:
            if kind == "npz":
                yield from _npz_entries(value)
            else:
                for file in value:
                    yield file, lambda file=file: _read_file(file)


def collect_inputs(inputs, image_shape, resize=False, skip_unreadable=False):
    """The images that the INPUT arguments name, checked, all in memory, as an `Inputs`.

    With `skip_unreadable`, a file or image that cannot be scored (unreadable,
    too large, of another size without `resize`, in colour for a grayscale run)
    is kept as an unscored entry with the reason; without it, it raises.
    detect.py streams instead (`read_batches`); this is for small sets, such as
    the examples of `--calibrate`.

    Raises:
        data.DataError: on a missing path, an empty folder or a file of another
            kind, and without `skip_unreadable` on the first image that cannot
            be scored.
    """
    collected = Inputs(image_shape, resize, skip_unreadable)
    for source, read in InputPlan(inputs).entries():
        collected.add(source, read)
    return collected


def load_entry(source, read, image_shape, resize, skip_unreadable):
    """One input read and conformed: (source, image (H, W, C) or None, note).

    Raises:
        data.DataError: without `skip_unreadable`, when the image cannot be scored.
    """
    try:
        image, has_colour = read()
        image, note = conform(image, has_colour, source, image_shape, resize)
    except data.DataError as error:
        if not skip_unreadable:
            raise
        return str(source), None, str(error)
    return str(source), image, note


def read_batches(entries, load, batch_size, threads=READ_THREADS):
    """Lists of `load(*entry)`'s results, `batch_size` at a time, in the entries' order.

    Threads read up to `BATCHES_AHEAD` batches ahead of the consumer, so at
    most that many batches of images are in memory; an entry is taken from
    `entries` only when its window opens. A DataError raised by `load` comes
    out of this generator when its entry's turn comes.
    """
    window = BATCHES_AHEAD * batch_size
    with concurrent.futures.ThreadPoolExecutor(threads) as executor:
        pending = collections.deque()
        try:
            for entry in entries:
                pending.append(executor.submit(load, *entry))
                if len(pending) >= window:
                    yield [pending.popleft().result() for _ in range(batch_size)]
            while pending:
                yield [pending.popleft().result() for _ in range(min(batch_size, len(pending)))]
        finally:
            for future in pending:
                future.cancel()


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


def csv_row(source, note, threshold, error=None, is_anomaly=None, percentile=None):
    """One CSV row; an input that was not scored (`error` None) has empty score cells."""
    if error is None:
        cells = ["", f"{threshold:.6g}", "", ""]
    else:
        cells = [f"{error:.6g}", f"{threshold:.6g}", str(bool(is_anomaly)).lower(),
                 f"{percentile:.1f}"]
    return [csv_safe(str(source)), *cells, csv_safe(note)]


def csv_text(inputs, errors, threshold, is_anomaly, percentiles):
    """The CSV of inputs scored all at once (an `Inputs`), one row per source."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    scored = iter(range(len(errors)))
    for source, note, was_scored in zip(inputs.sources, inputs.notes, inputs.scored):
        index = next(scored) if was_scored else None
        writer.writerow(csv_row(source, note, threshold) if index is None else csv_row(
            source, note, threshold, errors[index], is_anomaly[index], percentiles[index]))
    return buffer.getvalue()


class MostAnomalous:
    """A running top `MONTAGE_IMAGES` of the scored images, by error: the montage's images,
    kept without keeping the others."""

    def __init__(self):
        self.images, self.errors, self.is_anomaly = None, np.zeros(0), np.zeros(0, dtype=bool)

    def add(self, images, errors, is_anomaly):
        images = images if self.images is None else np.concatenate([self.images, images])
        errors = np.concatenate([self.errors, errors])
        is_anomaly = np.concatenate([self.is_anomaly, is_anomaly])
        keep = np.argsort(errors, kind="stable")[::-1][:MONTAGE_IMAGES]
        self.images, self.errors, self.is_anomaly = images[keep], errors[keep], is_anomaly[keep]


class Progress:
    """Keras' progress bar on stderr, with the count and the images per second, shown only
    when stderr is a terminal (stdout may be the CSV)."""

    def __init__(self, total):
        self.started = time.perf_counter()
        self.bar = None
        if sys.stderr.isatty():
            # Progbar writes to (and checks) sys.stdout: point it at stderr while it works.
            with contextlib.redirect_stdout(sys.stderr):
                self.bar = keras.utils.Progbar(total, unit_name="image",
                                               stateful_metrics=["images/s"])

    def update(self, done, finalize=False):
        if self.bar is None:
            return
        rate = done / max(time.perf_counter() - self.started, 1e-9)
        with contextlib.redirect_stdout(sys.stderr):
            self.bar.update(done, values=[("images/s", rate)], finalize=finalize or None)


@contextlib.contextmanager
def csv_output(path):
    """A text stream for the CSV: standard output, or a temporary file beside `path` that is
    renamed onto it only when the block ends without an error."""
    if path is None:
        yield sys.stdout
        return
    with atomic_files.atomic_path(path) as temporary:
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


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
               batch_size, first_index=0):
    """One PNG per scored image in `folder`: the image, its reconstruction and its map.

    The file names count from `first_index`, the first image's place among all scored.
    """
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
                folder / map_file_name(first_index + index, sources[index]))


class Tally:
    """What a detect run counted: inputs, scored images, anomalies, the first skip's reason."""

    def __init__(self):
        self.inputs = self.scored = self.anomalies = 0
        self.first_note = None

    @property
    def skipped(self):
        return self.inputs - self.scored


def score_stream(model, plan, args, threshold, writer, colormap, most_anomalous=None):
    """Reads, scores and writes the CSV rows of `plan`'s inputs batch by batch; a `Tally`.

    Only the batches in flight (`read_batches`) and `most_anomalous`'s few images are
    held; the maps, if asked, are written per batch.
    """
    tally = Tally()
    progress = Progress(plan.file_count)

    def load(source, read):
        return load_entry(source, read, model.image_shape, args.resize, args.skip_unreadable)

    with warnings.catch_warnings():
        # data.read_image silences Pillow's warning about big images (our own, lower limit
        # refuses them) with catch_warnings, which is not thread-safe: readers on threads
        # would restore each other's filters. Silence it once, around all of them.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        for batch in read_batches(plan.entries(), load, args.batch_size):
            _score_batch(model, batch, args, threshold, writer, colormap, most_anomalous,
                         tally)
            progress.update(tally.inputs)
    progress.update(tally.inputs, finalize=True)
    return tally


def _score_batch(model, batch, args, threshold, writer, colormap, most_anomalous, tally):
    """Scores one batch of `load_entry` results, writes its rows, and counts it in `tally`."""
    images = [image for _, image, _ in batch if image is not None]
    if images:
        images = np.stack(images)  # (B, H, W, C)
        errors, is_anomaly = model.detect_anomalies(images, args.batch_size)
        percentiles = model.score_percentiles(errors)
    scores = iter(range(len(images)))
    for source, image, note in batch:
        if image is None:
            tally.first_note = tally.first_note or note
            writer.writerow(csv_row(source, note, threshold))
        else:
            index = next(scores)
            writer.writerow(csv_row(source, note, threshold, errors[index],
                                    is_anomaly[index], percentiles[index]))
    if len(images):
        if args.maps:
            write_maps(model, images, errors, is_anomaly, percentiles,
                       [source for source, image, _ in batch if image is not None],
                       args.maps, colormap, args.batch_size, first_index=tally.scored)
        if most_anomalous is not None:
            most_anomalous.add(images, errors, is_anomaly)
        tally.anomalies += int(is_anomaly.sum())
    tally.scored += len(images)
    tally.inputs += len(batch)


def detect(args):
    """Scores the images `args.inputs` name against the run `args.run_dir`, streaming.

    Writes the CSV to `args.out` (atomically: nothing on an error) or standard
    output, the montage to `args.montage` and the maps into `args.maps` if
    asked. Returns the `Tally`.
    """
    model, config = run_folder.load_model(args.run_dir)
    plan = InputPlan(args.inputs)
    threshold = threshold_of(model, config)
    colormap = config.get("data", {}).get("image_colormap", plots.IMAGE_COLORMAP)
    most_anomalous = MostAnomalous() if args.montage else None
    with csv_output(args.out) as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        tally = score_stream(model, plan, args, threshold, writer, colormap, most_anomalous)
        if not tally.scored:
            raise data.DataError(f"none of the {tally.inputs:,} inputs could be scored (the "
                                 f"first: {tally.first_note})")
    if most_anomalous is not None:
        shown = len(most_anomalous.errors)
        plots.save(montage(model, most_anomalous.images, most_anomalous.errors,
                           most_anomalous.is_anomaly, colormap,
                           f"{tally.scored:,} inputs: the {shown} with the highest "
                           f"reconstruction error (threshold {threshold:.4f})"), args.montage)
    percentile = model.threshold_percentile or config["settings"].threshold_percentile
    skipped = (f"; skipped {tally.skipped:,} that could not be scored (see the note column)"
               if tally.skipped else "")
    print(f"detect.py: {tally.anomalies:,} of {tally.scored:,} images are anomalies (error "
          f"above {threshold:.4g}, the {percentile:.1f}th percentile of the training errors)"
          + skipped + (f"; wrote {args.out}" if args.out else ""), file=sys.stderr)
    return tally


def export_detector(args):
    """Writes the run's detector to `args.export` as ONNX (see onnx_export.py)."""
    model, config = run_folder.load_model(args.run_dir)
    threshold = threshold_of(model, config)
    onnx_export.export(model, args.export)
    print(f"detect.py: wrote {args.export}: scores and maps of {describe_shape(*model.image_shape)}"
          f" images, threshold {threshold:.4g} in its metadata", file=sys.stderr)


def main(args, calibrate=None):
    """Scores as `args` (a `settings.DetectSettings`) say; returns the exit status.

    `calibrate` is `calibration.calibrate`, for `--calibrate` (calibration.py builds on
    this module, so detect.py hands it in).
    """
    plots.set_headless()
    for path in (args.out, args.montage, args.pr_curve, args.export):
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
    return training.run_reporting_user_errors("detect.py", calibrate_export_detect, args,
                                              calibrate)


def calibrate_export_detect(args, calibrate):
    """In this order, each if asked: choose the threshold from examples (`calibrate(args)`),
    export the detector with it, then score the INPUTs."""
    if args.calibrate:
        calibrate(args)
    if args.export:
        export_detector(args)
    if args.inputs:
        detect(args)
