"""Your own images, end to end: an image folder in, an anomaly detector out, measured.

    python benchmarks/detect_example.py                    # about 2 minutes on a 2-core CPU
    python benchmarks/detect_example.py --help             # every flag and its default

Steps, as a user would take them with their own photos:
  1. write the bundled real MNIST as PNG files: the training images of the
     `--normal` digits as FOLDER/train/<digit>/, every test image (10,000) as
     FOLDER/test/<digit>/;
  2. python train_ae.py --data FOLDER --out OUT/ae  (the default recipe);
  3. python detect.py OUT/ae FOLDER/test --out OUT/scores.csv --montage OUT/montage.png,
     timed as a whole process;
  4. compare the CSV's `anomaly` column with the truth (a digit outside
     `--normal`): AUROC of the error, and precision and recall at the stored
     threshold.

The last line printed is one JSON object with the figures.
"""

import csv
import json
import os
import pathlib
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import settings  # noqa: E402  (no Keras: --help answers at once)


def build_parser():
    parser = settings.OneLineParser(
        prog="detect_example.py", formatter_class=settings.DefaultsHelpFormatter,
        description="Train the AE on a PNG folder of some MNIST digits, score every test PNG "
                    "with detect.py, and measure the detector and its throughput.")
    parser.add_argument("--normal", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                        help="the digits the AE trains on; the others are the anomalies")
    parser.add_argument("--epochs", type=settings.positive_int, default=None,
                        help="training epochs (default: train_ae.py's default)")
    parser.add_argument("--train-limit", type=settings.positive_int, default=10000,
                        help="write the normal digits among the first N training images")
    parser.add_argument("--test-limit", type=settings.positive_int, default=10000,
                        help="how many test images to write and score")
    parser.add_argument("--out", default="runs/detect_example",
                        help="folder for the PNGs, the run, the CSV and the montage")
    return parser


def write_png_folders(folder, normal, train_limit, test_limit):
    """The bundled MNIST as PNG files in the train/<digit>, test/<digit> layout."""
    import numpy as np
    from PIL import Image

    import data

    with np.load(data.BUNDLED_MNIST) as archive:
        arrays = {key: archive[key] for key in data.NPZ_KEYS}
    keep = np.isin(arrays["y_train"][:train_limit], normal)
    for split, images, labels in (("train", arrays["x_train"][:train_limit][keep],
                                   arrays["y_train"][:train_limit][keep]),
                                  ("test", arrays["x_test"][:test_limit],
                                   arrays["y_test"][:test_limit])):
        for index, (image, label) in enumerate(zip(images, labels)):
            path = folder / split / str(label) / f"{index:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path)
    return int(keep.sum()), min(test_limit, len(arrays["x_test"]))


def timed(command):
    """Runs a command as a user would; returns its wall seconds, or exits with its error."""
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"detect_example.py: error: {' '.join(command)} failed: {result.stderr.strip()}")
    return seconds, result


def main(argv=None):
    args = build_parser().parse_args(argv)
    from sklearn.metrics import precision_score, recall_score, roc_auc_score

    out = pathlib.Path(args.out)
    folder = out / "mnist_png"
    if not folder.is_dir():
        train_count, test_count = write_png_folders(folder, args.normal, args.train_limit,
                                                    args.test_limit)
    else:
        train_count = sum(1 for _ in (folder / "train").rglob("*.png"))
        test_count = sum(1 for _ in (folder / "test").rglob("*.png"))
    print(f"PNG folders: {train_count:,} training images of digits {args.normal}, "
          f"{test_count:,} test images of all digits, in {folder}")

    train_command = [sys.executable, "train_ae.py", "--data", str(folder), "--verbose", "0",
                     "--out", str(out / "ae")]
    if args.epochs:
        train_command += ["--epochs", str(args.epochs)]
    train_seconds, _ = timed(train_command)
    scores = out / "scores.csv"
    detect_seconds, detected = timed([sys.executable, "detect.py", str(out / "ae"),
                                      str(folder / "test"), "--out", str(scores),
                                      "--montage", str(out / "montage.png")])

    with open(scores, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    is_anomaly = [int(pathlib.Path(row["source"]).parent.name) not in args.normal for row in rows]
    errors = [float(row["error"]) for row in rows]
    flagged = [row["anomaly"] == "true" for row in rows]
    summary = {
        "normal_digits": args.normal,
        "train_images": train_count,
        "test_images": len(rows),
        "threshold": float(rows[0]["threshold"]),
        "auroc": roc_auc_score(is_anomaly, errors),
        "precision": precision_score(is_anomaly, flagged, zero_division=0),
        "recall": recall_score(is_anomaly, flagged),
        "flagged": sum(flagged),
        "train_seconds": round(train_seconds, 1),
        "detect_seconds": round(detect_seconds, 1),
        "detect_images_per_second": round(len(rows) / detect_seconds, 1),
    }
    print(detected.stderr.strip().splitlines()[-1])
    print(f"| normal digits | test images | AUROC | precision | recall | detect.py |\n"
          f"| --- | --- | --- | --- | --- | --- |\n"
          f"| {' '.join(map(str, args.normal))} | {len(rows):,} | {summary['auroc']:.3f} | "
          f"{summary['precision']:.3f} | {summary['recall']:.3f} | {detect_seconds:.1f} s "
          f"({summary['detect_images_per_second']:.0f} images/s, whole process) |")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
