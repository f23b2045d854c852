"""Score images with a detector exported by `detect.py RUN --export detector.onnx`.

    python examples/onnx_detect.py detector.onnx photos/ scan.png --out scores.csv
    python examples/onnx_detect.py detector.onnx photos/ --resize     # CSV on standard output

Needs only numpy, Pillow and onnxruntime: copy this file and the .onnx anywhere.
Writes the CSV that detect.py writes, source,error,threshold,anomaly,percentile,note,
with the threshold and the training scores that the .onnx keeps in its metadata.
A file that cannot be scored gets a row with an empty error and the reason in
`note`, as with detect.py's --skip-unreadable.
"""

import argparse
import csv
import json
import pathlib
import sys

import numpy as np
import onnxruntime
from PIL import Image

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # cells a spreadsheet reads as a formula
BATCH_SIZE = 256


def image_files(inputs):
    """The files the INPUT arguments name: folders searched recursively, in sorted order."""
    for given in inputs:
        path = pathlib.Path(given)
        if path.is_dir():
            yield from sorted(file for file in path.rglob("*")
                              if file.is_file() and file.suffix.lower() in IMAGE_EXTENSIONS)
        else:
            yield path


def read_image(path, image_shape, resize):
    """The image at `path` as float32 (H, W, C) in [0, 1] in the detector's shape, and a note.

    Raises ValueError, OSError or Pillow's DecompressionBombError with the reason when it
    cannot be scored.
    """
    height, width, channels = image_shape
    with Image.open(path) as image:
        if image.mode.startswith("I"):  # 16-bit grayscale: scaled from its 0..65535
            pixels = np.round(np.clip(np.asarray(image, dtype="float64"), 0, 65535) / 65535 * 255)
        elif image.mode in ("1", "L", "LA"):
            pixels = np.asarray(image.convert("L"), dtype="float64")
        else:
            pixels = np.asarray(image.convert("RGB"), dtype="float64")
    pixels = (pixels.reshape(*pixels.shape[:2], -1) / 255.0).astype("float32")  # (h, w, 1 or 3)
    note = ""
    if pixels.shape[-1] == 3 and channels == 1:
        if np.ptp(pixels, axis=-1).any():
            raise ValueError(f"{path} has colour, but the detector takes grayscale images")
        pixels = pixels[..., :1]
    elif pixels.shape[-1] == 1 and channels == 3:
        pixels = np.repeat(pixels, 3, axis=-1)
        note = "grayscale: its channel repeated for this RGB run"
    if pixels.shape[:2] != (height, width):
        if not resize:
            raise ValueError(f"{path} is {pixels.shape[0]} x {pixels.shape[1]}, but the detector "
                             f"takes {height} x {width} images: resize them, or give --resize")
        # Bilinear with antialiasing, channel by channel in float: as detect.py --resize.
        pixels = np.stack([np.asarray(Image.fromarray(pixels[..., channel]).resize(
            (width, height), Image.BILINEAR)) for channel in range(channels)], axis=-1)
        pixels = np.clip(pixels, 0.0, 1.0)
    return pixels, note


def csv_safe(text):
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_rows(session, files, resize):
    """The CSV's rows, batch by batch: [source, error, threshold, anomaly, percentile, note]."""
    metadata = session.get_modelmeta().custom_metadata_map
    threshold = json.loads(metadata["threshold"])
    quantiles = np.asarray(json.loads(metadata["score_quantiles"]))
    percentiles = np.asarray(json.loads(metadata["score_percentiles"]))
    image_shape = json.loads(metadata["image_shape"])  # [H, W, C]
    for start in range(0, len(files), BATCH_SIZE):
        images, rows = [], []
        for path in files[start:start + BATCH_SIZE]:
            try:
                image, note = read_image(path, image_shape, resize)
            except (OSError, ValueError, Image.DecompressionBombError) as error:
                rows.append([str(path), "", f"{threshold:.6g}", "", "", str(error)])
                continue
            images.append(image)
            rows.append([str(path), None, f"{threshold:.6g}", None, None, note])
        if images:
            scores = session.run(["scores"], {"images": np.stack(images)})[0]  # (batch,)
            score_percentiles = np.interp(scores.astype("float64"), quantiles, percentiles,
                                          left=0.0, right=100.0)
            scored = iter(zip(scores, scores > threshold, score_percentiles))
            for row in rows:
                if row[1] is None:
                    score, is_anomaly, percentile = next(scored)
                    row[1], row[3] = f"{score:.6g}", str(bool(is_anomaly)).lower()
                    row[4] = f"{percentile:.1f}"
        yield from ([csv_safe(row[0]), *row[1:5], csv_safe(row[5])] for row in rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("detector", help="the .onnx file that detect.py --export wrote")
    parser.add_argument("inputs", nargs="+", help="image files or folders of them")
    parser.add_argument("--resize", action="store_true",
                        help="resize images of another size to the detector's (default: refuse)")
    parser.add_argument("--out", help="write the CSV here (default: standard output)")
    args = parser.parse_args(argv)

    session = onnxruntime.InferenceSession(args.detector, providers=["CPUExecutionProvider"])
    output = open(args.out, "w", newline="", encoding="utf-8") if args.out else sys.stdout
    writer = csv.writer(output, lineterminator="\n")
    writer.writerow(["source", "error", "threshold", "anomaly", "percentile", "note"])
    anomalies = images = 0
    for row in csv_rows(session, list(image_files(args.inputs)), args.resize):
        writer.writerow(row)
        images, anomalies = images + bool(row[1]), anomalies + (row[3] == "true")
    if args.out:
        output.close()
    print(f"{anomalies:,} of {images:,} images are anomalies", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
