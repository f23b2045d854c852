"""The bad-input table: each case gets one line naming the problem, a non-zero exit,
no traceback, and leaves every file of an existing run folder as it was."""

import json
import os
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

import analysis
import detect
import training
from conftest import tiny_run_args, write_npz
from test_scripts import folder_digest


def arrays_with(arrays, **changes):
    good = {"x_train": arrays["x_train"][:64], "y_train": arrays["y_train"][:64],
            "x_test": arrays["x_test"][:32], "y_test": arrays["y_test"][:32]}
    good.update(changes)
    return {key: value for key, value in good.items() if value is not None}


def make_bad_data(kind, folder, arrays):
    """Writes the data file of one bad-data case and returns its path."""
    path = folder / f"{kind}.npz"
    if kind == "truncated":
        write_npz(path, **arrays_with(arrays))
        path.write_bytes(path.read_bytes()[:2000])
    elif kind == "missing_key":
        write_npz(path, **arrays_with(arrays, y_test=None))
    elif kind == "nan_pixels":
        images = arrays["x_train"][:64].astype("float32") / 255
        images[3, 10, 10] = np.nan
        write_npz(path, **arrays_with(arrays, x_train=images))
    elif kind == "labels_out_of_range":
        write_npz(path, **arrays_with(arrays, y_train=arrays["y_train"][:64].astype(int) + 10))
    elif kind == "sizes_differ":
        write_npz(path, **arrays_with(arrays, x_train=np.zeros((64, 32, 32), np.uint8)))
    elif kind == "images_30x30":
        write_npz(path, **arrays_with(arrays, x_train=np.zeros((64, 30, 30), np.uint8),
                                      x_test=np.zeros((32, 30, 30), np.uint8)))
    elif kind == "empty":
        write_npz(path, **arrays_with(arrays, x_train=np.zeros((0, 28, 28), np.uint8),
                                      y_train=np.zeros((0,), np.uint8)))
    return path


# (case, script, how to build the command, the words the error line must contain)
CASES = [
    ("truncated npz", "train", "data:truncated", "not a readable .npz"),
    ("missing key", "train", "data:missing_key", "lacks the arrays y_test"),
    ("NaN pixels", "train", "data:nan_pixels", "NaN"),
    ("labels out of 0..9", "train", "data:labels_out_of_range", "outside 0..9"),
    ("training and test sizes differ", "train", "data:sizes_differ", "give both sets one size"),
    ("images of 30 x 30", "train", "data:images_30x30",
     "nearest sizes that work are 28 x 28 or 32 x 32: give --image-size 28 28"),
    ("empty data set", "train", "data:empty", "empty"),
    ("missing data file", "train", "data:absent", "does not exist"),
    ("train limit larger than the data", "train", "flags:--train-limit 100000",
     "larger than the 256 training images"),
    ("--digits outside 0..9", "train", "flags:--digits 3 12", "outside 0..9"),
    ("--digits naming none", "train", "flags:--digits", "expected at least one argument"),
    ("epochs below 1", "train", "flags:--epochs 0", "must be at least 1"),
    ("learning rate of 0", "train", "flags:--learning-rate 0", "must be above 0"),
    ("output path that is a file", "train", "out:file", "is a file, not a folder"),
    ("unwritable output folder", "train", "out:unwritable", "cannot write to output folder"),
    ("--resume with no checkpoint", "train", "out:fresh_resume", "no checkpoint"),
    ("AE weights given to the VAE analysis", "analysis", "run:ae_weights", "does not fit"),
    ("config edited to a wrong latent size", "analysis", "run:latent_edit", "does not fit"),
    ("truncated weights", "analysis", "run:truncated_weights", "does not fit"),
    ("run folder with no config", "analysis", "run:no_config", "has no config.json"),
    ("run folder with no weights", "analysis", "run:no_weights", "has no model.weights.h5"),
    ("--data and --dataset together", "train", "flags:--dataset mnist", "give one of them"),
    ("detect: an image of another size", "detect", "input:size",
     "is 16 x 16, but the run was trained on 28 x 28 grayscale images: resize them, "
     "or give --resize"),
    ("detect: a colour image for a grayscale run", "detect", "input:colour", "has colour"),
    ("detect: an unreadable image", "detect", "input:unreadable", "cannot read image"),
    ("detect: an empty folder", "detect", "input:empty", "holds no images"),
    ("detect: a missing input", "detect", "input:absent", "does not exist"),
    ("detect: an .npz without images", "detect", "input:labels_only", "holds no image arrays"),
    ("detect: a text file", "detect", "input:text", "neither an image"),
    ("detect: an image over the pixel limit", "detect", "input:huge", "over the limit of"),
    ("detect: a decompression bomb", "detect", "input:bomb", "too large to decode safely"),
    ("detect: neither INPUT nor --calibrate nor --export", "detect", "calibrate:nothing",
     "give the INPUT images to score, or --calibrate"),
    ("detect --calibrate: the best F1 without anomalous examples", "detect", "calibrate:f1",
     "needs anomalous examples: give --anomalous ANOMALOUS..., or choose by the normal "
     "examples alone with --target-false-positive-rate R"),
    ("detect --calibrate: no readable example", "detect", "calibrate:unreadable",
     "none of the 1 --calibrate examples could be scored"),
    ("detect: --anomalous without --calibrate", "detect", "calibrate:anomalous_alone",
     "--anomalous belongs to --calibrate"),
]


def make_bad_input(kind, folder, mnist_arrays):
    """Writes one bad detect.py input (beside a good image) and returns the paths to give."""
    good = folder / "good.png"
    Image.fromarray(mnist_arrays["x_test"][0]).save(good)
    bad = folder / {"empty": "empty", "labels_only": "labels.npz", "text": "notes.txt"}.get(
        kind, "bad.png")
    if kind == "size":
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(bad)
    elif kind == "colour":
        pixels = np.zeros((28, 28, 3), np.uint8)
        pixels[..., 0] = mnist_arrays["x_test"][1]  # a red digit
        Image.fromarray(pixels).save(bad)
    elif kind == "unreadable":
        bad.write_bytes(good.read_bytes()[:40])
    elif kind == "empty":
        bad.mkdir()
    elif kind == "labels_only":
        write_npz(bad, y_test=mnist_arrays["y_test"][:5])
    elif kind == "text":
        bad.write_text("not an image")
    elif kind == "huge":  # 10,000 x 10,000: decoded before the header check came in
        Image.new("1", (10_000, 10_000)).save(bad)
    elif kind == "bomb":  # 20,000 x 20,000 in a few hundred KB: Pillow's own error at open
        Image.new("1", (20_000, 20_000)).save(bad)
    return [str(good), str(bad)]


def unwritable_folder(tmp_path):
    """A folder this process cannot write into (root ignores permissions: use /proc)."""
    if os.geteuid() == 0:
        return "/proc/vae_mnist_run"
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder / "run"


def spoil_run_folder(how, run_dir, trained_runs):
    if how == "ae_weights":
        shutil.copy(trained_runs / "ae" / "model.weights.h5", run_dir / "model.weights.h5")
    elif how == "latent_edit":
        config = json.loads((run_dir / "config.json").read_text())
        config["model_config"]["latent_dim"] = 3
        (run_dir / "config.json").write_text(json.dumps(config))
    elif how == "truncated_weights":
        weights = run_dir / "model.weights.h5"
        weights.write_bytes(weights.read_bytes()[:20000])
    elif how == "no_config":
        (run_dir / "config.json").unlink()
    elif how == "no_weights":
        (run_dir / "model.weights.h5").unlink()


def run_script(script, run_dir, npz, out, extra):
    """Runs train_vae.py's, analysis.py's or detect.py's main in-process; returns its exit code."""
    if script == "analysis":
        return analysis.main([str(run_dir)])
    try:
        if script == "detect":
            return detect.main([str(run_dir), *extra, "--out", str(out)])
        return training.main("vae", tiny_run_args(npz, out, *extra))
    except SystemExit as exit_info:  # argparse's own one-line errors
        return exit_info.code


@pytest.mark.parametrize("case, script, setup, expected", CASES, ids=[case[0] for case in CASES])
def test_bad_input(case, script, setup, expected, capsys, tmp_path, tiny_npz, mnist_arrays,
                   trained_runs):
    run_dir = tmp_path / "vae"
    shutil.copytree(trained_runs / "vae", run_dir)  # an existing run that must survive
    kind, _, detail = setup.partition(":")
    out, npz, extra = run_dir, tiny_npz, []
    if kind == "data":
        npz = make_bad_data(detail, tmp_path, mnist_arrays)
    elif kind == "flags":
        extra = detail.split()
    elif kind == "out" and detail == "file":
        out = tmp_path / "a_file"
        out.write_text("keep me")
    elif kind == "out" and detail == "unwritable":
        out = unwritable_folder(tmp_path)
    elif kind == "out" and detail == "fresh_resume":
        out, extra = tmp_path / "fresh", ["--resume"]
    elif kind == "run":
        spoil_run_folder(detail, run_dir, trained_runs)
    elif kind == "input":
        extra, out = make_bad_input(detail, tmp_path, mnist_arrays), tmp_path / "scores.csv"
    elif kind == "calibrate":
        good, unreadable = make_bad_input("unreadable", tmp_path, mnist_arrays)
        extra = {"nothing": [],
                 "f1": ["--calibrate", good],
                 "unreadable": ["--calibrate", unreadable, "--skip-unreadable",
                                "--target-false-positive-rate", "0.1"],
                 "anomalous_alone": [good, "--anomalous", good]}[detail]
        out = tmp_path / "scores.csv"
    before = folder_digest(run_dir)

    with warnings.catch_warnings(record=True) as recorded_warnings:  # a user would see them
        warnings.simplefilter("always")
        code = run_script(script, run_dir, npz, out, extra)

    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert not recorded_warnings, [str(warning.message) for warning in recorded_warnings]
    assert code != 0
    assert len(lines) == 1, captured.err
    assert "error:" in lines[0] and expected in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert folder_digest(run_dir) == before
    assert not [path for path in run_dir.iterdir() if path.name.startswith(".tmp-")]
    if kind == "out" and detail == "file":
        assert out.read_text() == "keep me"
    if kind in ("input", "calibrate"):  # detect.py wrote no partial CSV
        assert not out.exists()
