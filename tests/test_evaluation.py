"""Latent-space and anomaly metrics on known inputs, and the anomaly outputs of analysis.py."""

import json

import numpy as np
import pytest

import analysis
import evaluation
import training
from conftest import tiny_run_args, write_npz


def test_knn_accuracy_is_one_for_separated_clusters_and_chance_for_noise():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 20)
    centres = np.stack([np.cos(labels), np.sin(labels)], axis=1) * 10
    separated = centres + rng.normal(scale=0.1, size=centres.shape)
    assert evaluation.knn_accuracy(separated, labels, separated + 0.01, labels) == 1.0
    noise = rng.normal(size=(200, 2))
    assert evaluation.knn_accuracy(noise, labels, rng.normal(size=(200, 2)), labels) < 0.3


def test_silhouette_is_near_one_for_tight_clusters_and_near_zero_for_mixed_ones():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 50)
    tight = np.where(labels[:, None] == 0, -5.0, 5.0) + rng.normal(scale=0.1, size=(100, 2))
    assert evaluation.silhouette(tight, labels) > 0.9
    assert abs(evaluation.silhouette(rng.normal(size=(100, 2)), labels)) < 0.1


def test_perfect_separation_gives_auroc_one_and_full_precision_recall():
    labels = np.array([0, 0, 0, 1, 2, 2])
    errors = np.array([0.1, 0.2, 0.1, 0.9, 0.8, 0.7])
    report = evaluation.anomaly_report(np.array([0.1, 0.2, 0.25]), errors, labels, [0])
    assert report["auroc"] == 1.0
    assert report["auroc_per_digit"] == {"1": 1.0, "2": 1.0}
    assert report["precision"] == 1.0 and report["recall"] == 1.0
    assert report["normal_test_images"] == 3 and report["anomalous_test_images"] == 3


def test_reversed_scores_give_auroc_zero_and_threshold_from_training_errors():
    labels = np.array([0, 0, 1, 1])
    report = evaluation.anomaly_report(np.arange(101.0), np.array([0.9, 0.8, 0.1, 0.2]),
                                       labels, [0], percentile=99)
    assert report["auroc"] == 0.0
    assert report["threshold"] == pytest.approx(99.0)
    assert report["recall"] == 0.0


def test_anomaly_report_needs_both_classes():
    with pytest.raises(evaluation.MetricUndefined, match="both trained and unseen digits"):
        evaluation.anomaly_report(np.ones(3), np.ones(3), np.array([1, 1, 1]), [1])


def test_digits_run_records_digits_and_analysis_scores_anomalies(tiny_npz, tmp_path):
    run_dir = tmp_path / "ae01"
    assert training.main("ae", tiny_run_args(tiny_npz, run_dir, "--digits", "1", "0", "1")) == 0
    config = json.loads((run_dir / "config.json").read_text())
    assert config["settings"]["digits"] == [0, 1]
    with np.load(tiny_npz) as archive:
        expected = int(np.isin(archive["y_train"], [0, 1]).sum())
    assert config["training"]["train_images"] == expected

    assert analysis.main([str(run_dir)]) == 0
    for name in ("anomaly_hist.png", "anomaly_roc.png", "anomaly_extremes.png",
                 "latent_traversal.png", "explorer.html"):
        assert (run_dir / name).stat().st_size > 1000, name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["auroc"] <= 1.0
    assert set(metrics["auroc_per_class"]) == {str(digit) for digit in range(2, 10)}
    assert 0.0 <= metrics["knn5_accuracy"] <= 1.0 and -1.0 <= metrics["silhouette"] <= 1.0
    assert 0.0 <= metrics["precision"] <= 1.0 and 0.0 <= metrics["recall"] <= 1.0


def test_traverse_index_outside_the_test_set_is_refused(capsys, trained_runs):
    assert analysis.main([str(trained_runs / "vae"), "--traverse", "0", "5000"]) == 2
    assert "--traverse index 5000 is outside the test set" in capsys.readouterr().err


def test_one_class_benchmark_writes_its_table(tmp_path, mnist_arrays):
    from benchmarks import one_class

    npz = write_npz(tmp_path / "small.npz", x_train=mnist_arrays["x_train"][:400],
                    y_train=mnist_arrays["y_train"][:400], x_test=mnist_arrays["x_test"][:200],
                    y_test=mnist_arrays["y_test"][:200])
    out = tmp_path / "one_class"
    summary = one_class.run(one_class.build_parser().parse_args(
        ["--data", str(npz), "--train-limit", "400", "--epochs", "1", "--normal-digits", "0", "1",
         "--latent-dim", "4", "--model", "ae", "--precision", "float32", "--out", str(out),
         "--seeds", "0", "1"]))
    assert set(summary["auroc_percent"]) == {"0", "1"}
    # The mean over seeds of each seed's mean is the mean over digits.
    assert len(summary["mean_auroc_percent_per_seed"]) == 2
    assert np.mean(summary["mean_auroc_percent_per_seed"]) == pytest.approx(
        summary["mean_auroc_percent"])
    assert all(0.0 <= value <= 100.0 for value in summary["auroc_percent"].values())
    table = (out / "ae-latent4-epochs1-relative.md").read_text()
    assert "DCAE (Ruff et al. 2018)" in table and "| 97.6 |" in table
    assert "| OCGAN (Perera et al. 2019) |" in table and "| 97.5 |" in table
    assert json.loads((out / "ae-latent4-epochs1-relative.json").read_text())["mean_auroc_percent"] == \
        pytest.approx(np.mean(list(summary["auroc_percent"].values())))


def test_one_class_trains_the_weights_of_train_vae_with_the_same_digit_and_flags(tmp_path,
                                                                                 tiny_npz):
    """The benchmark's model is the model `train_vae.py --digits D` trains: same batches too.

    With no test evaluation before the last epoch (`--test-every 2` of 2 epochs): an
    evaluation draws the VAE's noise, which would change the later epochs' training.
    """
    import data
    import run_folder
    from benchmarks import one_class

    flags = ["--train-limit", "256", "--epochs", "2", "--latent-dim", "4", "--batch-size", "16",
             "--learning-rate", "2e-3", "--lr-schedule", "cosine", "--warmup-epochs", "1",
             "--upsampling", "transpose2x2", "--reconstruction-weight", "1000"]
    args = one_class.build_parser().parse_args(
        ["--data", str(tiny_npz), "--precision", "float32", *flags])
    dataset = data.load_dataset(args.data)  # as one_class.run loads it
    benchmark_model, images = one_class.train_one_class_model(args, dataset, normal_digit=1,
                                                              seed=3)
    run_dir = tmp_path / "vae"
    assert training.main("vae", ["--data", str(tiny_npz), "--precision", "float32", "--seed", "3",
                                 "--digits", "1", "--verbose", "0", "--out", str(run_dir),
                                 "--test-every", "2", *flags]) == 0
    trained, config = run_folder.load_model(run_dir)
    assert len(images) == config["training"]["train_images"]
    # The trainable weights: the batch-norm pass after training draws the VAE's noise, which
    # the run's test evaluation has moved on, so the moving statistics may differ. The
    # tolerance is the resume test's: threaded sums need not be bit-equal across models.
    for expected, actual in zip(trained.trainable_weights, benchmark_model.trainable_weights,
                                strict=True):
        np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6,
                                   err_msg=actual.path)


def test_blot_share_counts_isolated_bright_pixels_not_strokes():
    images = np.zeros((4, 8, 8))
    images[0, 3, 3] = 1.0                      # an isolated spot: a blot
    images[1, :, 1:6] = [0.6, 1.0, 1.0, 1.0, 0.6]  # a stroke with soft edges, as decoders draw

    images[2, 3, 3] = 0.85                     # below the level
    images[3] = 0.8
    images[3, 4, 4] = 1.0                      # 0.2 above its neighbours: below the contrast
    assert evaluation.blot_share(images) == 0.25
    # A spot on the edge is compared with its neighbours inside the image (edges repeated).
    corner = np.zeros((1, 8, 8))
    corner[0, 0, 0] = 1.0
    assert evaluation.blot_share(corner) == 1.0
    # RGB images are scored on their channel mean: a gray spot counts, a pure red one does not.
    rgb = np.zeros((2, 8, 8, 3))
    rgb[0, 4, 4] = 1.0
    rgb[1, 4, 4, 0] = 1.0
    assert evaluation.blot_share(rgb) == 0.5


def test_the_sharp_edge_of_a_thin_stroke_is_no_blot_but_a_spot_beside_it_is():
    thin_one = np.zeros((2, 8, 8))
    thin_one[:, 1:7, 4] = 1.0                  # a one-pixel-wide 1 with hard edges
    thin_one[1, 3, 1] = 1.0                    # and, in the second image, a spot beside it
    # Mean of the 8 neighbours: at most 2 / 8 along the stroke, so the first two conditions
    # flag every pixel of it.
    assert evaluation.blot_mask(thin_one, peak_margin=None)[0].sum() == 6
    # Inside the stroke two neighbours are as bright as the pixel: no blot. Only its two
    # ends, with a single bright neighbour, still count.
    np.testing.assert_array_equal(np.argwhere(evaluation.blot_mask(thin_one)[0]), [[1, 4], [6, 4]])
    np.testing.assert_array_equal(np.argwhere(evaluation.blot_mask(thin_one)[1]),
                                  [[1, 4], [3, 1], [6, 4]])
