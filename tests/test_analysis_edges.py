"""Every setting that training accepts can be analysed: a 1-D latent, and test sets on which
some metric has no value."""

import json

import numpy as np

import analysis
import evaluation
import training
from conftest import tiny_run_args, write_npz


def test_a_1d_latent_gets_a_strip_plot_and_a_one_digit_test_set_leaves_out_what_it_cannot_score(
        capsys, tmp_path, tiny_npz, mnist_arrays):
    run_dir = tmp_path / "ae1"
    assert training.main("ae", tiny_run_args(tiny_npz, run_dir, "--latent-dim", "1",
                                             "--digits", "0", "1")) == 0
    assert analysis.main([str(run_dir)]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"knn5_accuracy", "silhouette", "auroc"} <= set(metrics) and "left_out" not in metrics
    assert (run_dir / "latent_scatter.png").stat().st_size > 0
    assert not (run_dir / "manifold.png").exists()  # a grid needs 2 latent dimensions
    capsys.readouterr()

    # A test set of zeros only: no silhouette (one digit), no anomalies (only a trained digit).
    zeros = np.flatnonzero(mnist_arrays["y_test"][:512] == 0)[:20]
    only_zeros = write_npz(tmp_path / "zeros.npz", x_train=mnist_arrays["x_train"][:256],
                           y_train=mnist_arrays["y_train"][:256],
                           x_test=mnist_arrays["x_test"][zeros], y_test=mnist_arrays["y_test"][zeros])
    assert analysis.main([str(run_dir), "--data", str(only_zeros)]) == 0
    output = capsys.readouterr().out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"test_mse", "test_loss", "knn5_accuracy"} <= set(metrics)
    assert "silhouette" not in metrics and "auroc" not in metrics
    assert set(metrics["left_out"]) == {
        "silhouette", "anomaly scores (auroc, precision, recall and their figures)"}
    left_out_lines = [line for line in output.splitlines() if line.startswith("left out: ")]
    assert len(left_out_lines) == 1
    assert "silhouette (needs 2 or more digits in the test set" in left_out_lines[0]
    assert "it has only trained digits" in left_out_lines[0]


def test_metrics_say_why_they_have_no_value():
    latents, labels = np.zeros((4, 2)), np.array([3, 3, 3, 3])
    for score, reason in (
            (lambda: evaluation.silhouette(latents, labels), "it has 1 digit in 4 images"),
            (lambda: evaluation.silhouette(latents, np.array([0, 1, 2, 3])), "4 digits in 4"),
            (lambda: evaluation.knn_accuracy(latents, labels, latents, labels),
             "needs at least 5 training images, got 4")):
        try:
            score()
        except evaluation.MetricUndefined as why:
            assert reason in str(why)
        else:
            raise AssertionError(f"no MetricUndefined: {reason}")
    assert evaluation.silhouette(np.array([[0.0], [0.1], [5.0], [5.1]]),
                                 np.array([0, 0, 1, 1])) > 0.9
