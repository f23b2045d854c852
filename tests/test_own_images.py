"""Your own images: image folders of any size and colour, detect.py, Fashion-MNIST by name,
TensorBoard. The images are real: scikit-learn's bundled handwritten digits (8 x 8)."""

import csv
import io
import json
import math

import keras
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

import analysis
import data
import detect
import models
import plots
import run_folder
import training
from conftest import needs_bfloat16_kernels

# Every fifth image is a test image; the rest train.
TEST_EVERY = 5


def write_png(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


@pytest.fixture(scope="module")
def digits():
    """load_digits as uint8 images (1,797, 8, 8) in 0..255, and their labels."""
    bunch = load_digits()
    return np.round(bunch.images * (255.0 / 16.0)).astype("uint8"), bunch.target


def rgb_32(image, label):
    """An 8 x 8 digit as a 32 x 32 colour image: its ink in a colour that depends on its class."""
    large = np.asarray(Image.fromarray(image).resize((32, 32), Image.Resampling.BILINEAR))
    colour = np.array(plots.class_colors(10)[label][:3])
    return np.round(large[..., None] * colour).astype("uint8")


@pytest.fixture(scope="module")
def folders(tmp_path_factory, digits):
    """The digits written as PNG folders in each layout that --data reads."""
    images, labels = digits
    root = tmp_path_factory.mktemp("own_images")
    for index, (image, label) in enumerate(zip(images, labels)):
        split = "test" if index % TEST_EVERY == 0 else "train"
        name = f"{index:04d}.png"
        write_png(root / "gray8" / split / str(label) / name, image)
        write_png(root / "rgb32" / str(label) / name, rgb_32(image, label))
        if index < 300:
            write_png(root / "unlabelled" / name, image)
    return root


def test_a_train_test_folder_reads_as_the_files_hold(folders, digits):
    images, labels = digits
    dataset = data.load_dataset(folders / "gray8")
    is_test = np.arange(len(images)) % TEST_EVERY == 0
    assert dataset.class_names == [str(digit) for digit in range(10)]
    assert dataset.class_title == "digit" and dataset.image_shape == (8, 8, 1)
    assert len(dataset.x_train) == (~is_test).sum() and len(dataset.x_test) == is_test.sum()
    # Shuffled, not class by class: --train-limit's first images and the figures' examples
    # hold every class.
    assert set(dataset.y_train[:60]) == set(range(10)) and set(dataset.y_test[:60]) == set(range(10))
    # Files are read class folder by class folder; compare each class's images as a set.
    for digit in range(10):
        expected = images[is_test & (labels == digit)].astype("float32") / 255.0
        np.testing.assert_allclose(np.sort(dataset.x_test[dataset.y_test == digit, ..., 0], 0),
                                   np.sort(expected, 0), atol=1e-6)


def test_one_tree_is_split_by_a_seeded_fraction_and_keeps_its_colour(folders):
    first = data.load_dataset(folders / "rgb32", validation_split=0.25, seed=0)
    again = data.load_dataset(folders / "rgb32", validation_split=0.25, seed=0)
    other = data.load_dataset(folders / "rgb32", validation_split=0.25, seed=1)
    assert first.image_shape == (32, 32, 3)
    # scikit-learn's train_test_split rounds the test share up.
    assert len(first.x_test) == math.ceil(0.25 * 1797)
    assert len(first.x_train) == 1797 - len(first.x_test)
    np.testing.assert_array_equal(first.y_test, again.y_test)
    assert not np.array_equal(first.x_test, other.x_test)
    # Stratified: every class keeps about a quarter of its images in the test set.
    shares = np.bincount(first.y_test) / (np.bincount(first.y_test) + np.bincount(first.y_train))
    assert np.all(np.abs(shares - 0.25) < 0.03)
    gray = data.load_dataset(folders / "rgb32", color_mode="grayscale", validation_split=0.25)
    assert gray.image_shape == (32, 32, 1)
    np.testing.assert_allclose(gray.x_test[..., 0], first.x_test @ data.LUMA_WEIGHTS, atol=1e-5)


@pytest.mark.parametrize("folder, options, stays_uint8", [
    ("gray8", {}, True),
    ("rgb32", {}, True),
    ("gray8", {"color_mode": "rgb"}, True),        # gray repeated: still the file's pixels
    ("rgb32", {"color_mode": "grayscale"}, False),  # luma is not a whole number
    ("gray8", {"image_size": (16, 16)}, False),     # resized pixels are not whole numbers
])
def test_training_keeps_8_bit_images_as_uint8_where_nothing_changes_them(
        folders, folder, options, stays_uint8):
    floats = data.load_dataset(folders / folder, **options)
    held = data.load_dataset(folders / folder, keep_uint8=True, **options)
    assert held.x_train.dtype == (np.uint8 if stays_uint8 else np.float32)
    assert floats.x_train.dtype == np.float32
    # The same images, to the bit, once divided by 255 as the models do.
    np.testing.assert_array_equal(models.unit_floats(held.x_train), floats.x_train)
    np.testing.assert_array_equal(models.unit_floats(held.x_test), floats.x_test)


def test_mixed_sizes_need_image_size_and_odd_sizes_name_the_nearest(tmp_path, digits):
    images, _ = digits
    for index in range(4):
        write_png(tmp_path / "mixed" / f"{index}.png", images[index])
    write_png(tmp_path / "mixed" / "large.png", np.zeros((12, 16), np.uint8))
    with pytest.raises(data.DataError, match=r"2 different sizes \(8 x 8, 12 x 16\): give "
                                             r"--image-size HEIGHT WIDTH"):
        data.load_dataset(tmp_path / "mixed", validation_split=0.2)
    resized = data.load_dataset(tmp_path / "mixed", image_size=(12, 12), validation_split=0.2)
    assert resized.image_shape == (12, 12, 1) and not resized.labelled
    assert resized.y_train is None and resized.class_names is None
    with pytest.raises(data.DataError, match="nearest sizes that work are 8 x 8 or 12 x 12"):
        data.check_image_size((10, 10, 1), 4)


def train(kind, folder, out, *extra, epochs=1, precision="float32"):
    return training.main(kind, ["--data", str(folder), "--epochs", str(epochs), "--batch-size", "32",
                                "--precision", precision, "--verbose", "0", "--out", str(out),
                                *extra])


def read_csv(text):
    return list(csv.DictReader(io.StringIO(text)))


@needs_bfloat16_kernels
def test_detect_scores_folders_files_and_npz_against_the_stored_threshold(
        folders, tmp_path, capsys, digits):
    run_dir = tmp_path / "ae"
    # Enough epochs (on ~700 images of 8 x 8) that the unseen digits score worse; trained in
    # mixed precision, while the threshold is that of the saved model as it loads (float32).
    assert train("ae", folders / "gray8", run_dir, "--digits", "0", "1", "2", "3", "4",
                 "--threshold-percentile", "95", epochs=6, precision="mixed_bfloat16") == 0
    keras.mixed_precision.set_global_policy("float32")
    model = keras.saving.load_model(run_dir / "model.keras")
    assert model.threshold_percentile == 95.0 and model.image_shape == (8, 8, 1)
    normal = data.load_dataset(folders / "gray8")
    normal_images, _ = data.select_training_images(normal.x_train, normal.y_train,
                                                    classes=[0, 1, 2, 3, 4])
    np.testing.assert_allclose(model.anomaly_threshold, np.percentile(
        model.anomaly_scores(normal_images), 95), rtol=1e-5)
    capsys.readouterr()

    images, _ = digits
    write_png(tmp_path / "one.png", images[7])
    np.savez(tmp_path / "some.npz", x_test=images[:3], y_test=np.zeros(3))
    out = tmp_path / "scores.csv"
    montage = tmp_path / "montage.png"
    assert detect.main([str(run_dir), str(folders / "gray8" / "test"), str(tmp_path / "one.png"),
                        str(tmp_path / "some.npz"), "--out", str(out),
                        "--montage", str(montage)]) == 0
    rows = read_csv(out.read_text())
    test_files = sorted((folders / "gray8" / "test").rglob("*.png"))
    assert [row["source"] for row in rows] == (
        [str(path) for path in test_files] + [str(tmp_path / "one.png")]
        + [f"{tmp_path / 'some.npz'}:x_test[{index}]" for index in range(3)])
    errors = np.array([float(row["error"]) for row in rows])
    assert {row["threshold"] for row in rows} == {f"{model.anomaly_threshold:.6g}"}
    assert [row["anomaly"] for row in rows] == ["true" if error > model.anomaly_threshold
                                                else "false" for error in errors]
    # The scores are the model's own errors for the same images, as a notebook gets them.
    folder_images = np.stack([data.read_image(path)[0] for path in test_files]) / 255.0
    notebook_errors, _ = model.detect_anomalies(folder_images.astype("float32"))
    np.testing.assert_allclose(errors[:len(test_files)], notebook_errors, rtol=1e-4)
    assert errors[-3:] == pytest.approx(model.anomaly_scores(
        images[:3, ..., None] / 255.0), rel=1e-4)
    assert "anomalies" in capsys.readouterr().err
    assert Image.open(montage).size[0] > 400

    # Without --out the CSV goes to standard output, and the summary to standard error.
    assert detect.main([str(run_dir), str(tmp_path / "one.png")]) == 0
    captured = capsys.readouterr()
    assert read_csv(captured.out)[0]["source"] == str(tmp_path / "one.png")
    assert "1 images are anomalies" in captured.err or "of 1 images" in captured.err

    # The unseen digits 5..9 score higher than the trained 0..4 on the held-out files.
    unseen = np.array([int(pathlib_parent_name(source)) >= 5 for source in
                       [row["source"] for row in rows[:len(test_files)]]])
    assert errors[:len(test_files)][unseen].mean() > errors[:len(test_files)][~unseen].mean()

    # analysis.py scores the same test folder with the same stored threshold.
    assert analysis.main([str(run_dir)]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["threshold"] == model.anomaly_threshold
    assert list(metrics["auroc_per_class"]) == ["5", "6", "7", "8", "9"]
    flagged_unseen = sum(row["anomaly"] == "true" for row, is_unseen
                         in zip(rows[:len(test_files)], unseen) if is_unseen)
    assert metrics["recall"] == pytest.approx(flagged_unseen / unseen.sum())


def pathlib_parent_name(source):
    return source.rsplit("/", 2)[-2]


def test_rgb_run_is_analysed_in_colour_with_tensorboard_and_summaries(folders, tmp_path, capsys):
    run_dir = tmp_path / "vae"
    assert training.main("vae", ["--data", str(folders / "rgb32"), "--validation-split", "0.2",
                                 "--train-limit", "512", "--epochs", "1", "--batch-size", "64",
                                 "--precision", "float32", "--verbose", "1", "--tensorboard",
                                 "--out", str(run_dir)]) == 0
    printed = capsys.readouterr().out
    assert 'Model: "encoder"' in printed and 'Model: "decoder"' in printed
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model_config"]["image_shape"] == [32, 32, 3]
    assert config["data"]["class_names"] == [str(digit) for digit in range(10)]

    assert analysis.main([str(run_dir)]) == 0
    for name in ("latent_scatter.png", "reconstructions.png", "manifold.png", "prior_samples.png",
                 "latent_traversal.png", "explorer.html"):
        assert (run_dir / name).stat().st_size > 1000, name
    # The reconstructions figure shows colour: many pixels whose R, G and B differ.
    pixels = np.asarray(Image.open(run_dir / "reconstructions.png").convert("RGB")).astype(int)
    assert (np.ptp(pixels, axis=-1) > 60).mean() > 0.01
    page = (run_dir / "explorer.html").read_text()
    assert '"cellWidth":32' in page and '"cellHeight":32' in page


def test_unlabelled_folder_trains_and_analysis_skips_class_metrics(folders, tmp_path, capsys):
    run_dir = tmp_path / "ae"
    assert train("ae", folders / "unlabelled", run_dir) == 0
    assert analysis.main([str(run_dir)]) == 0
    assert "k-NN accuracy, silhouette and class colours are left out" in capsys.readouterr().out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "knn5_accuracy" not in metrics and metrics["test_mse"] > 0
    assert (run_dir / "latent_scatter.png").is_file()
    _, config = run_folder.load_model(run_dir)
    assert config["data"]["class_names"] is None


def test_fashion_mnist_offline_is_one_line_naming_the_cause_and_the_fix(monkeypatch, tmp_path,
                                                                       capsys):
    def offline():
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- "
                        "[Errno -2] Name or service not known")

    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", offline)
    code = training.main("vae", ["--dataset", "fashion_mnist", "--out", str(tmp_path / "run")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert "fashion_mnist could not be downloaded" in lines[0] and "Name or service" in lines[0]
    assert "give the images with --data" in lines[0]
    assert not (tmp_path / "run" / "config.json").exists()


def test_fashion_mnist_class_names_reach_the_legend(monkeypatch, mnist_arrays):
    arrays = {"x_train": mnist_arrays["x_train"][:20], "y_train": mnist_arrays["y_train"][:20],
              "x_test": mnist_arrays["x_test"][:20], "y_test": mnist_arrays["y_test"][:20]}
    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data",
                        lambda: ((arrays["x_train"], arrays["y_train"]),
                                 (arrays["x_test"], arrays["y_test"])))
    dataset = data.load_dataset(dataset="fashion_mnist")
    assert dataset.class_title == "class" and dataset.class_names[9] == "Ankle boot"
    figure = plots.latent_scatter(np.zeros((20, 2)), dataset.y_test, "t",
                                  class_names=dataset.class_names, class_title=dataset.class_title)
    legend = figure.axes[0].get_legend()
    assert legend.get_title().get_text() == "class"
    assert [text.get_text() for text in legend.get_texts()] == data.KERAS_DATASETS["fashion_mnist"]
