"""detect.py as a deployed detector: maps, percentiles, bad files skipped, safe CSV, big images."""

import csv
import io
import json
import pathlib
import shutil
import sys

import keras
import numpy as np
import pytest
from PIL import Image, ImageFile

import data
import detect
import detection
import losses
import models


def read_rows(text):
    return list(csv.DictReader(io.StringIO(text)))


def write_png(path, pixels):
    Image.fromarray(np.asarray(pixels, dtype="uint8")).save(path)
    return path


@pytest.fixture()
def ae_run(trained_runs, tmp_path):
    """A copy of the session's tiny AE run, free to change."""
    run_dir = tmp_path / "ae"
    shutil.copytree(trained_runs / "ae", run_dir)
    return run_dir


@pytest.fixture()
def test_digits(mnist_arrays):
    return mnist_arrays["x_test"][:6]


# --- anomaly maps -------------------------------------------------------------------------------

@pytest.mark.parametrize("pool_size", [1, 2])
def test_relative_map_sums_to_the_relative_error(pool_size):
    images = np.zeros((2, 4, 4, 1), dtype="float32")
    images[0, 1, 1, 0] = 1.0
    images[1, :2, :, 0] = 0.5
    reconstructions = np.zeros_like(images)
    reconstructions[0, 1, 2, 0] = 1.0
    reconstructions[1, :, :2, 0] = 0.5
    maps = keras.ops.convert_to_numpy(
        losses.relative_squared_error_map(images, reconstructions, pool_size))
    assert maps.shape == (2, 4, 4)
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), keras.ops.convert_to_numpy(
        losses.relative_squared_error(images, reconstructions, pool_size)), rtol=1e-6)
    if pool_size == 1:  # by hand: one pixel lost and one gained, over two pixels of ink
        np.testing.assert_allclose(maps[0, 1, 1], 1.0 / (1.0 + 1.0 + 1e-6), rtol=1e-6)
        np.testing.assert_allclose(maps[0, 0, 0], 0.0)


def test_squared_error_map_sums_to_the_mse_and_sits_where_the_error_is():
    images = np.zeros((1, 4, 4, 3), dtype="float32")
    reconstructions = images.copy()
    reconstructions[0, 2, 3, :] = [0.3, 0.6, 0.0]
    maps = keras.ops.convert_to_numpy(losses.squared_error_map(images, reconstructions))
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), keras.ops.convert_to_numpy(
        losses.reconstruction_mse(images, reconstructions)), rtol=1e-6)
    assert np.argwhere(maps[0] > 0).tolist() == [[2, 3]]
    np.testing.assert_allclose(maps[0, 2, 3], (0.09 + 0.36) / 48, rtol=1e-6)


@pytest.mark.parametrize("score", ["mse", "relative"])
def test_a_models_maps_sum_to_its_anomaly_scores(score, test_digits):
    model = models.AE(image_shape=(28, 28, 1), anomaly_score=score)
    images = test_digits[..., None].astype("float32") / 255.0
    maps = model.anomaly_maps(images)
    assert maps.shape == (len(images), 28, 28)
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), model.anomaly_scores(images), rtol=1e-5)


# --- percentiles --------------------------------------------------------------------------------

def test_percentiles_put_scores_on_the_training_images_scale():
    model = models.AE()
    scores = np.arange(1, 1001, dtype="float64")  # 1, 2, ..., 1000
    model.score_quantiles = models.score_quantiles(scores)
    percentiles = model.score_percentiles([0.5, 500.5, 997.5, 5000.0])
    np.testing.assert_allclose(percentiles, [0.0, 50.0, 99.7, 100.0], atol=0.06)
    assert models.AE().score_percentiles([1.0]) is None  # a model that kept no scores


def test_a_trained_run_keeps_its_training_scores_and_reloads_them(ae_run):
    model = keras.saving.load_model(ae_run / "model.keras")
    config = json.loads((ae_run / "config.json").read_text())
    assert len(model.score_quantiles) == len(models.SCORE_PERCENTILES)
    assert config["model_config"]["score_quantiles"] == model.score_quantiles
    # The threshold sits at its percentile on that scale.
    assert model.score_percentiles([model.anomaly_threshold])[0] == pytest.approx(
        model.threshold_percentile, abs=0.1)


def test_a_float32_runs_threshold_is_the_percentile_of_its_saved_models_training_scores(
        trained_runs, tiny_npz):
    # The session's runs train in float32, so training scores them with the trained model
    # itself (no float32 copy): the scores must still be the saved model's, in inference mode.
    model = keras.saving.load_model(trained_runs / "ae" / "model.keras")
    config = json.loads((trained_runs / "ae" / "config.json").read_text())
    assert config["training"]["precision"] == "float32"
    dataset = data.load_dataset(tiny_npz)
    images, _ = data.select_training_images(dataset.x_train, dataset.y_train,
                                            config["training"]["train_images"])
    assert model.anomaly_threshold == pytest.approx(
        np.percentile(model.anomaly_scores(images), model.threshold_percentile), rel=1e-5)


# --- detect.py ----------------------------------------------------------------------------------

def test_detect_writes_percentiles_notes_and_maps(ae_run, tmp_path, test_digits, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for index, pixels in enumerate(test_digits[:3]):
        write_png(folder / f"digit{index}.png", pixels)
    out, maps, montage = tmp_path / "scores.csv", tmp_path / "maps", tmp_path / "worst.png"
    assert detect.main([str(ae_run), str(folder), "--out", str(out), "--maps", str(maps),
                        "--montage", str(montage)]) == 0
    text = out.read_text()
    assert text.splitlines()[0] == "source,error,threshold,anomaly,percentile,note"
    rows = read_rows(text)
    model = keras.saving.load_model(ae_run / "model.keras")
    errors = np.array([float(row["error"]) for row in rows])
    np.testing.assert_allclose([float(row["percentile"]) for row in rows],
                               model.score_percentiles(errors), atol=0.051)
    assert all(row["note"] == "" for row in rows)
    pictures = sorted(path.name for path in maps.iterdir())
    assert pictures == ["00000-digit0.png", "00001-digit1.png", "00002-digit2.png"]
    assert Image.open(maps / pictures[0]).size[1] > 200  # three panels high
    assert Image.open(montage).size[0] > 300


def test_skip_unreadable_gives_bad_files_a_row_with_the_reason(ae_run, tmp_path, test_digits,
                                                               capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    write_png(folder / "a_good.png", test_digits[0])
    (folder / "b_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    write_png(folder / "c_small.png", test_digits[1][:16, :16])
    write_png(folder / "d_colour.png", np.stack([test_digits[2], test_digits[2] // 2,
                                                 test_digits[2] // 3], axis=-1))
    write_png(folder / "e_good.png", test_digits[3])
    out = tmp_path / "scores.csv"

    # Without the flag: today's one line, and no CSV.
    assert detect.main([str(ae_run), str(folder), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot read image" in err[0] and not out.exists()

    assert detect.main([str(ae_run), str(folder), "--out", str(out), "--skip-unreadable"]) == 0
    rows = read_rows(out.read_text())
    assert [row["source"].rsplit("/", 1)[-1] for row in rows] == [
        "a_good.png", "b_corrupt.png", "c_small.png", "d_colour.png", "e_good.png"]
    scored = [row["error"] != "" for row in rows]
    assert scored == [True, False, False, False, True]
    notes = [row["note"] for row in rows]
    assert "cannot read image" in notes[1] and "is 16 x 16" in notes[2] and "has colour" in notes[3]
    assert all(row["anomaly"] == "" and row["percentile"] == "" for row, ok in zip(rows, scored)
               if not ok)
    assert "skipped 3" in capsys.readouterr().err

    # Nothing scorable at all is still an error, in one line.
    assert detect.main([str(ae_run), str(folder / "b_corrupt.png"), "--skip-unreadable"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none of the 1 inputs could be scored" in err[0]


def test_csv_cells_that_would_be_formulas_are_written_as_text(ae_run, tmp_path, test_digits,
                                                               monkeypatch):
    names = ["=cmd.png", "+1.png", "-2.png", "@sum.png", "plain.png"]
    for name in names:
        write_png(tmp_path / name, test_digits[0])
    monkeypatch.chdir(tmp_path)  # relative paths: each source cell starts with the file's name
    assert detect.main(["--out", "scores.csv", str(ae_run), "--", *names]) == 0
    rows = read_rows((tmp_path / "scores.csv").read_text())
    assert [row["source"] for row in rows] == ["'=cmd.png", "'+1.png", "'-2.png", "'@sum.png",
                                               "plain.png"]
    assert [detection.csv_safe(text) for text in ("\tx", "\rx", "a=b")] == ["'\tx", "'\rx", "a=b"]


def test_a_grayscale_image_for_an_rgb_run_has_its_channel_repeated(tmp_path, test_digits):
    inputs = detection.collect_inputs([str(write_png(tmp_path / "gray.png", test_digits[0]))],
                                      (28, 28, 3))
    (image,) = inputs.images
    assert image.shape == (28, 28, 3)
    np.testing.assert_array_equal(image[..., 0], image[..., 2])
    np.testing.assert_allclose(image[..., 1], test_digits[0] / 255.0, atol=1e-6)
    assert inputs.notes == [detection.GRAYSCALE_FOR_RGB_NOTE]


# --- big and deep images ------------------------------------------------------------------------

def test_a_decompression_bomb_is_refused_in_one_line_without_decoding(ae_run, tmp_path, capsys,
                                                                       recwarn):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20_000, 20_000)).save(bomb)  # a few hundred KB on disk, 400 megapixels
    big = tmp_path / "big.png"
    Image.new("1", (10_000, 10_000)).save(big)   # 100 megapixels: Pillow only warns
    for path in (bomb, big):
        assert detect.main([str(ae_run), str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and ("too large" in err[0] or "over the limit" in err[0])
    assert not [warning for warning in recwarn
                if issubclass(warning.category, Image.DecompressionBombWarning)]


def test_the_size_is_checked_from_the_header_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "wide.png"
    Image.new("1", (9_000, 8_000)).save(path)  # 72 megapixels, over the limit
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self) or None)
    with pytest.raises(data.DataError, match="9,000 x 8,000 pixels, over the limit"):
        data.read_image(path)
    assert decoded == []


def test_16_bit_images_are_scaled_from_their_own_range(tmp_path):
    wide = (np.arange(16 * 16).reshape(16, 16) * 256).astype("uint16")  # 0 .. 65280
    path = tmp_path / "deep.png"
    Image.fromarray(wide).save(path)
    pixels, has_colour = data.read_image(path)
    assert pixels.dtype == np.uint8 and pixels.shape == (16, 16, 1) and not has_colour
    np.testing.assert_array_equal(pixels[..., 0], np.round(wide / 65535 * 255).astype("uint8"))
    assert len(np.unique(pixels)) > 200  # not clipped to a few values at 255


# --- streaming ----------------------------------------------------------------------------------

@pytest.fixture()
def mixed_folder(tmp_path, mnist_arrays):
    """Seven images, two of them unscorable, and an .npz of three more."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    digits = mnist_arrays["x_test"][:10]
    for index in range(5):
        write_png(folder / f"{index}_digit.png", digits[index])
    (folder / "2b_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    write_png(folder / "3b_small.png", digits[5][:16, :16])
    np.savez(tmp_path / "more.npz", x_test=digits[7:10])
    return [str(folder), str(tmp_path / "more.npz")]


def test_streamed_rows_come_in_input_order_and_equal_scoring_all_at_once(ae_run, tmp_path,
                                                                        mixed_folder):
    out = tmp_path / "scores.csv"
    assert detect.main([str(ae_run), *mixed_folder, "--out", str(out), "--skip-unreadable",
                        "--batch-size", "3"]) == 0
    streamed = read_rows(out.read_text())
    model, config = detection.run_folder.load_model(ae_run)
    inputs = detection.collect_inputs(mixed_folder, model.image_shape, skip_unreadable=True)
    errors, is_anomaly = model.detect_anomalies(inputs.images)
    at_once = read_rows(detection.csv_text(inputs, errors, model.anomaly_threshold, is_anomaly,
                                           model.score_percentiles(errors)))
    assert [row["source"].rsplit("/", 1)[-1] for row in streamed] == [
        "0_digit.png", "1_digit.png", "2_digit.png", "2b_corrupt.png", "3_digit.png",
        "3b_small.png", "4_digit.png", "more.npz:x_test[0]", "more.npz:x_test[1]",
        "more.npz:x_test[2]"]
    for column in ("source", "threshold", "anomaly", "note"):
        assert [row[column] for row in streamed] == [row[column] for row in at_once]
    for column in ("error", "percentile"):
        np.testing.assert_allclose([float(row[column] or "nan") for row in streamed],
                                   [float(row[column] or "nan") for row in at_once],
                                   rtol=1e-4, atol=0.051 if column == "percentile" else 0)


def test_files_are_read_and_scored_a_batch_at_a_time(ae_run, tmp_path, mnist_arrays,
                                                     monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    for index, pixels in enumerate(mnist_arrays["x_test"][:9]):
        write_png(folder / f"{index}.png", pixels)
    events = []  # ("read", name) from the reader threads, ("score", how many) from the model
    read_file = detection._read_file
    monkeypatch.setattr(detection, "_read_file",
                        lambda file: (events.append(("read", pathlib.PurePath(file).name))
                                      or read_file(file)))
    detect_anomalies = models.AE.detect_anomalies
    monkeypatch.setattr(models.AE, "detect_anomalies", lambda self, images, batch_size=256: (
        events.append(("score", len(images))) or detect_anomalies(self, images, batch_size)))
    assert detect.main([str(ae_run), str(folder), "--batch-size", "2",
                        "--out", str(tmp_path / "scores.csv")]) == 0
    scores = [size for kind, size in events if kind == "score"]
    assert scores == [2, 2, 2, 2, 1]
    reads = [index for index, (kind, _) in enumerate(events) if kind == "read"]
    assert len(reads) == 9
    # The first batch is scored before the last file is read: nothing reads everything first.
    assert events.index(("score", 2)) < reads[-1]


@pytest.mark.parametrize("terminal", [True, False])
def test_the_progress_bar_shows_on_a_terminal_only(ae_run, tmp_path, mnist_arrays, monkeypatch,
                                                   capsys, terminal):
    folder = tmp_path / "in"
    folder.mkdir()
    for index, pixels in enumerate(mnist_arrays["x_test"][:5]):
        write_png(folder / f"{index}.png", pixels)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
    assert detect.main([str(ae_run), str(folder), "--batch-size", "2"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("source,error") and "images/s" not in captured.out
    if terminal:
        assert "5/5" in captured.err and "images/s" in captured.err
    else:
        assert "images/s" not in captured.err and "5/5" not in captured.err


def test_a_refusal_midway_leaves_the_old_out_file_whole(ae_run, tmp_path, mnist_arrays, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for index, pixels in enumerate(mnist_arrays["x_test"][:6]):
        write_png(folder / f"{index}.png", pixels)
    (folder / "9_corrupt.png").write_bytes(b"not an image")  # last: rows were streamed before
    out = tmp_path / "scores.csv"
    out.write_text("the old scores\n")
    assert detect.main([str(ae_run), str(folder), "--batch-size", "2", "--out", str(out)]) == 2
    assert "cannot read image" in capsys.readouterr().err
    assert out.read_text() == "the old scores\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ae", "in", "scores.csv"]
