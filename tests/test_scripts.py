"""The command-line scripts end to end on tiny data, and their answers to bad input."""

import hashlib
import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import analysis
import run_folder
import training
from conftest import REPO, tiny_run_args

RUN_FILES = {"config.json", "model.keras", "model.weights.h5", "history.csv", "loss_curve.png"}
ANALYSIS_FILES = {"latent_scatter.png", "reconstructions.png", "manifold.png", "metrics.json"}


def folder_digest(folder):
    """{file name: sha256} of every file in a folder, to show that nothing changed."""
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(pathlib.Path(folder).iterdir()) if path.is_file()}


def assert_one_line_error(capsys, code, expected):
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "error:" in lines[0] and expected in lines[0]
    assert "Traceback" not in captured.err + captured.out


@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_training_writes_every_file(trained_runs, kind):
    run_dir = trained_runs / kind
    assert RUN_FILES <= {path.name for path in run_dir.iterdir()}
    assert not [path for path in run_dir.iterdir() if path.name.startswith(".tmp-")]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"] == kind
    assert config["training"]["train_images"] == 256 and config["settings"]["epochs"] == 1
    history = run_folder.read_history_csv(run_dir / "history.csv")
    expected = {"loss", "mse", "val_loss", "val_mse"} | ({"kl", "val_kl"} if kind == "vae" else set())
    assert expected <= set(history) and all(len(values) == 1 for values in history.values())
    assert all(np.isfinite(values[0]) for values in history.values())


def test_analysis_writes_every_figure_and_metrics(trained_runs, capsys):
    run_dir = trained_runs / "vae"
    assert analysis.main([str(run_dir)]) == 0
    written = {path.name for path in run_dir.iterdir()}
    assert ANALYSIS_FILES | {"prior_samples.png"} <= written
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test_kl"] > 0
    np.testing.assert_allclose(metrics["test_loss"], 1000 * metrics["test_mse"] + metrics["test_kl"],
                               rtol=0.02)  # batch-averaged total vs. product of averages
    assert "test_mse" in capsys.readouterr().out


def test_analysis_of_an_ae_run_reports_zero_kl(trained_runs):
    run_dir = trained_runs / "ae"
    assert analysis.main([str(run_dir)]) == 0
    assert ANALYSIS_FILES <= {path.name for path in run_dir.iterdir()}
    assert not (run_dir / "prior_samples.png").exists()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test_kl"] == 0.0
    assert metrics["test_loss"] == pytest.approx(metrics["test_mse"], rel=1e-5)


def test_analysis_rebuilds_from_the_run_folder_alone(trained_runs, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(trained_runs / "ae", moved)
    assert analysis.main([str(moved)]) == 0  # the data path recorded in config.json is absolute


@pytest.mark.parametrize("flag, value, message", [
    ("--epochs", "0", "argument --epochs: must be at least 1"),
    ("--batch-size", "0", "argument --batch-size: must be at least 1"),
    ("--latent-dim", "0", "argument --latent-dim: must be at least 1"),
    ("--learning-rate", "0", "argument --learning-rate: must be above 0"),
    ("--learning-rate", "-1e-3", "argument --learning-rate: must be above 0"),
    ("--epochs", "two", "is not an integer"),
])
def test_bad_numbers_are_refused_in_one_line(capsys, tiny_npz, tmp_path, flag, value, message):
    with pytest.raises(SystemExit) as exit_info:
        training.main("vae", tiny_run_args(tiny_npz, tmp_path / "run", f"{flag}={value}"))
    assert_one_line_error(capsys, exit_info.value.code, message)
    assert not (tmp_path / "run").exists()


def test_the_real_command_line_exits_without_traceback(tmp_path):
    """One subprocess per script, to see exactly what a user's shell sees."""
    for command, message in [
        ([sys.executable, "train_ae.py", "--data", str(tmp_path / "none.npz"),
          "--out", str(tmp_path / "run")], "does not exist"),
        ([sys.executable, "analysis.py", str(tmp_path / "none")], "does not exist"),
    ]:
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        assert message in result.stderr.strip().splitlines()[-1]
