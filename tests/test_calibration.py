"""detect.py --calibrate: the threshold from the user's examples, stored in the run and used.

MNIST digits held out as anomalies: the session's tiny AE run, test 1s as the
normal examples and test 7s as the anomalous ones.
"""

import json

import keras
import numpy as np
import pytest
from PIL import Image

import calibration
import detect
import run_folder
from test_detector import ae_run, read_rows  # noqa: F401  (ae_run: a fixture, used by name)


@pytest.fixture()
def digit_sets(mnist_arrays, tmp_path):
    """.npz files of test 1s (calibration normals, held-out normals) and test 7s."""
    images, labels = mnist_arrays["x_test"], mnist_arrays["y_test"]
    ones, sevens = images[labels == 1], images[labels == 7]
    paths = {}
    for name, subset in (("ones", ones[:120]), ("held_out_ones", ones[120:240]),
                         ("sevens", sevens[:120])):
        paths[name] = tmp_path / f"{name}.npz"
        np.savez(paths[name], x_test=subset)
    return paths


def scores_of(run_dir, npz):
    model, _ = run_folder.load_model(run_dir)
    with np.load(npz) as archive:
        return model.anomaly_scores(archive["x_test"][..., None].astype("float32") / 255.0)


def f1_of(threshold, normal, anomalous):
    true_positives = np.sum(anomalous > threshold)
    flagged = true_positives + np.sum(normal > threshold)
    return 2 * true_positives / (flagged + len(anomalous)) if flagged else 0.0


def test_the_best_f1_threshold_is_stored_used_and_drawn(ae_run, digit_sets, tmp_path, capsys):
    assert detect.main([str(ae_run), "--calibrate", str(digit_sets["ones"]),
                        "--anomalous", str(digit_sets["sevens"])]) == 0
    err = capsys.readouterr().err
    record = json.loads((ae_run / "config.json").read_text())["threshold_calibration"]
    threshold = record["threshold"]
    assert record["method"] == "best_f1"
    assert (record["normal_examples"], record["anomalous_examples"]) == (120, 120)
    assert f"F1 {record['f1']:.3f}" in err and "precision" in err and "recall" in err

    # F1 at the stored threshold is the best over every threshold, by numpy alone.
    normal, anomalous = scores_of(ae_run, digit_sets["ones"]), scores_of(ae_run,
                                                                          digit_sets["sevens"])
    candidates = np.concatenate([normal, anomalous, [normal.min() - 1.0]])
    best = max(f1_of(candidate, normal, anomalous) for candidate in candidates)
    assert f1_of(threshold, normal, anomalous) == pytest.approx(best, abs=1e-12)
    assert record["f1"] == pytest.approx(best, abs=1e-12)
    assert Image.open(ae_run / calibration.PR_CURVE_FILE).size[0] > 300

    # The model and config both carry it; detect.py scores against it, percentiles unchanged.
    assert keras.saving.load_model(ae_run / "model.keras").anomaly_threshold == threshold
    out = tmp_path / "scores.csv"
    assert detect.main([str(ae_run), str(digit_sets["held_out_ones"]), "--out", str(out)]) == 0
    rows = read_rows(out.read_text())
    model, _ = run_folder.load_model(ae_run)
    assert {float(row["threshold"]) for row in rows} == {float(f"{threshold:.6g}")}
    errors = np.array([float(row["error"]) for row in rows])
    assert [row["anomaly"] == "true" for row in rows] == list(errors > threshold)
    np.testing.assert_allclose([float(row["percentile"]) for row in rows],
                               model.score_percentiles(errors), atol=0.051)


def test_a_false_positive_rate_from_normals_alone_is_the_lowest_that_keeps_it(
        ae_run, digit_sets, capsys):
    rate = 0.1
    assert detect.main([str(ae_run), "--calibrate", str(digit_sets["ones"]),
                        "--target-false-positive-rate", str(rate)]) == 0
    assert "false-positive rate 0.100 on 120 normal examples" in capsys.readouterr().err
    record = json.loads((ae_run / "config.json").read_text())["threshold_calibration"]
    threshold = record["threshold"]
    assert record["method"] == "target_false_positive_rate"
    assert record["target_false_positive_rate"] == rate and record["anomalous_examples"] == 0
    assert not (ae_run / calibration.PR_CURVE_FILE).exists()
    normal = scores_of(ae_run, digit_sets["ones"])
    assert np.mean(normal > threshold) <= rate
    lower = normal[normal < threshold]
    assert np.mean(normal > lower.max()) > rate  # the next lower threshold flags too many
    # anomalib's issue #3357: a threshold from normals alone must not flag everything.
    assert np.mean(scores_of(ae_run, digit_sets["held_out_ones"]) > threshold) < 0.3


def test_threshold_choices_on_hand_made_scores():
    normal = np.array([0.1, 0.2, 0.2, 0.3, 0.9], dtype="float32")
    anomalous = np.array([0.25, 0.5, 0.6], dtype="float32")
    # Best F1: flag score > 0.2 (0.25, 0.3, 0.5, 0.6, 0.9): precision 3/5, recall 1, F1 0.75;
    # score > 0.3 gives precision 2/3, recall 2/3, F1 0.667.
    threshold, f1 = calibration.threshold_for_best_f1(normal, anomalous)
    assert threshold == pytest.approx(0.2) and f1 == pytest.approx(0.75)
    # Every example anomalous: flagging all is best, just below the lowest score.
    threshold, f1 = calibration.threshold_for_best_f1(normal[:0], anomalous)
    assert threshold < 0.25 and np.all(anomalous > threshold) and f1 == 1.0
    assert calibration.threshold_for_false_positive_rate(normal, 0.0) == pytest.approx(0.9)
    assert calibration.threshold_for_false_positive_rate(normal, 0.2) == pytest.approx(0.3)
    assert calibration.threshold_for_false_positive_rate(normal, 0.39) == pytest.approx(0.3)
    assert calibration.threshold_for_false_positive_rate(normal, 0.4) == pytest.approx(0.2)
