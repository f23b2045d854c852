"""detect.py --export: the ONNX detector, and examples/onnx_detect.py, which runs it without
this repository and must give detect.py's CSV."""

import csv
import io
import json
import pathlib
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

import detect
import models

onnxruntime = pytest.importorskip("onnxruntime")

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "onnx_detect.py"
KINDS = ("ae", "vae")


def read_rows(text):
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture(scope="module")
def exported(trained_runs, tmp_path_factory):
    """Each tiny run's detector, exported by the command a user runs: {kind: path}."""
    folder = tmp_path_factory.mktemp("onnx")
    paths = {}
    for kind in KINDS:
        paths[kind] = folder / f"{kind}.onnx"
        assert detect.main([str(trained_runs / kind), "--export", str(paths[kind])]) == 0
    return paths


@pytest.fixture(scope="module")
def image_folder(mnist_arrays, tmp_path_factory):
    """24 test digits as PNGs: 12 at the runs' 28 x 28, 6 enlarged to 36 x 36 and 6 shrunk to
    20 x 24, so that --resize has work to do in both directions."""
    folder = tmp_path_factory.mktemp("digits")
    for index, pixels in enumerate(mnist_arrays["x_test"][:24]):
        image = Image.fromarray(pixels)
        if index >= 18:
            image = image.resize((24, 20), Image.BICUBIC)  # Pillow takes (width, height)
        elif index >= 12:
            image = image.resize((36, 36), Image.BICUBIC)
        image.save(folder / f"digit{index:02d}.png")
    return folder


def run_example(tmp_path, *args):
    """examples/onnx_detect.py, copied out of the repository and run there: its CSV."""
    script = tmp_path / "onnx_detect.py"
    shutil.copy(EXAMPLE, script)
    out = tmp_path / "example.csv"
    subprocess.run([sys.executable, str(script), *map(str, args), "--out", str(out)],
                   cwd=tmp_path, check=True, capture_output=True, text=True,
                   env={"PATH": "/usr/bin:/bin"})
    return out.read_text()


@pytest.mark.parametrize("kind", KINDS)
def test_the_example_gives_detect_csv_with_and_without_resize(kind, trained_runs, exported,
                                                              image_folder, tmp_path):
    detect_csv = tmp_path / "detect.csv"
    assert detect.main([str(trained_runs / kind), str(image_folder), "--resize",
                        "--out", str(detect_csv)]) == 0
    expected = read_rows(detect_csv.read_text())
    rows = read_rows(run_example(tmp_path, exported[kind], image_folder, "--resize"))
    assert len(rows) == len(expected) == 24
    for row, wanted in zip(rows, expected):
        assert (row["source"], row["threshold"], row["note"]) == (
            wanted["source"], wanted["threshold"], wanted["note"])
        assert abs(float(row["error"]) - float(wanted["error"])) <= 1e-5, row["source"]
        assert row["anomaly"] == wanted["anomaly"]
        assert abs(float(row["percentile"]) - float(wanted["percentile"])) <= 0.1 + 1e-9


def test_without_resize_the_example_gives_other_sizes_a_row_with_the_reason(exported,
                                                                           image_folder,
                                                                           tmp_path):
    rows = read_rows(run_example(tmp_path, exported["ae"], image_folder))
    assert [row["error"] == "" for row in rows] == [False] * 12 + [True] * 12
    assert "is 36 x 36, but the detector takes 28 x 28 images" in rows[12]["note"]


@pytest.mark.parametrize("kind", KINDS)
def test_the_onnx_model_gives_the_runs_scores_and_maps_and_keeps_its_threshold(
        kind, trained_runs, exported, mnist_arrays):
    model = keras.saving.load_model(trained_runs / kind / "model.keras")
    images = (mnist_arrays["x_test"][:16, ..., np.newaxis] / 255.0).astype("float32")
    session = onnxruntime.InferenceSession(str(exported[kind]),
                                           providers=["CPUExecutionProvider"])
    scores, maps = session.run(["scores", "maps"], {"images": images})
    np.testing.assert_allclose(scores, model.anomaly_scores(images), atol=1e-5)
    np.testing.assert_allclose(maps, model.anomaly_maps(images), atol=1e-6)
    metadata = session.get_modelmeta().custom_metadata_map
    assert json.loads(metadata["threshold"]) == model.anomaly_threshold
    assert json.loads(metadata["threshold_percentile"]) == model.threshold_percentile
    assert json.loads(metadata["score_quantiles"]) == model.score_quantiles
    np.testing.assert_array_equal(json.loads(metadata["score_percentiles"]),
                                  models.SCORE_PERCENTILES)
    assert json.loads(metadata["image_shape"]) == list(model.image_shape)
    assert metadata["anomaly_score"] == model.anomaly_score == "relative"


@pytest.mark.parametrize("bad", ["missing/detector.onnx", "."])
def test_export_refuses_a_path_it_cannot_write_in_one_line(bad, tmp_path, tmp_path_factory,
                                                          capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path_factory.mktemp("empty-run")  # it exists; the export path is refused first
    assert detect.main([str(run_dir), "--export", bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("detect.py: error:") and bad in err[0]
    assert list(tmp_path.iterdir()) == []


def test_detect_needs_inputs_unless_it_exports(capsys):
    with pytest.raises(SystemExit) as exit_info:
        detect.main(["some-run"])
    assert exit_info.value.code == 2
    assert "INPUT" in capsys.readouterr().err
