"""The bad-input table: each case gets one line naming the problem, a non-zero exit,
no traceback, and leaves every file of an existing run folder as it was."""

import json
import os
import shutil
import warnings

import numpy as np
import pytest

import analysis
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
    elif kind == "images_32x32":
        write_npz(path, **arrays_with(arrays, x_train=np.zeros((64, 32, 32), np.uint8)))
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
    ("images of 32 x 32", "train", "data:images_32x32", "resize the images to 28 x 28"),
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
]


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
    """Runs train_vae.py's or analysis.py's main in-process and returns its exit code."""
    if script == "analysis":
        return analysis.main([str(run_dir)])
    try:
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
