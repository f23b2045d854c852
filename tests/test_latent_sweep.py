"""benchmarks/latent_sweep.py and benchmarks/generators.py on tiny data; the generator scores."""

import contextlib
import dataclasses
import importlib.util
import io
import json
import math
import shutil
import warnings

import keras
import matplotlib.image
import numpy as np
import pytest

import data
import run_folder
import settings
from conftest import REPO, TINY_TEST, TINY_TRAIN

LATENT_DIMS = (2, 4)
TINY_SAMPLES = 32


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


latent_sweep = load_script("latent_sweep")
generators = load_script("generators")


def run_main(main, argv):
    """`(exit code, what it printed)` of a script's main."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(argv)
    return code, printed.getvalue()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, tiny_npz):
    """The sweep at latent sizes 2 and 4, one epoch each, on 256 training images: run once."""
    out = tmp_path_factory.mktemp("sweep")
    code, printed = run_main(latent_sweep.main, [
        "--data", str(tiny_npz), "--train-limit", str(TINY_TRAIN), "--epochs", "1",
        "--latent-dims", *map(str, LATENT_DIMS), "--out", str(out)])
    assert code == 0, printed
    return out, json.loads((out / latent_sweep.RESULTS_FILE).read_text()), printed


def test_sweep_trains_both_models_at_each_latent_size(sweep, tiny_npz):
    out, results, _ = sweep
    runs = {(run["model"], run["latent_dim"]): run for run in results["runs"]}
    assert set(runs) == {(model, dim) for model in ("ae", "vae") for dim in LATENT_DIMS}
    assert results["settings"]["latent_dims"] == list(LATENT_DIMS)
    assert results["settings"]["test_images"] == TINY_TEST
    for (model, latent_dim), run in runs.items():
        # The default run's recipe, with only the latent size (and here the epochs) changed.
        config = run_folder.read_config(run["run_folder"])
        expected = settings_of_default_run(model, latent_dim, tiny_npz, run["run_folder"])
        assert config["settings"] == expected
        assert config["model_config"]["latent_dim"] == latent_dim
        if model == "ae":  # the saved AE's loss is the MSE of its deterministic reconstruction
            assert run["test_loss"] == pytest.approx(run["test_mse"], rel=1e-4)
        assert math.isfinite(run["test_mse"]) and 0 < run["test_mse"] < 1
    for latent_dim in LATENT_DIMS:
        assert runs[("ae", latent_dim)]["test_kl"] == 0
        assert runs[("vae", latent_dim)]["test_kl"] > 0
        # The VAE's loss is 1000 x its (sampled) MSE + KL, so far above its MSE.
        assert runs[("vae", latent_dim)]["test_loss"] > 100 * runs[("vae", latent_dim)]["test_mse"]


def settings_of_default_run(model, latent_dim, npz, out):
    return dataclasses.replace(settings.TrainingSettings.defaults_for(model), latent_dim=latent_dim,
                               epochs=1, data=str(npz), train_limit=TINY_TRAIN, verbose=0,
                               out=str(out))


def test_test_mse_is_that_of_the_deterministic_reconstruction(sweep, tiny_npz, tmp_path):
    out, _, _ = sweep
    # A copy of the VAE run whose encoder is made very unsure (log-variance 6, so sigma 20):
    # a sampled z then reconstructs far worse than the mean, and the two MSEs part clearly.
    run_dir = shutil.copytree(out / "vae-latent-2", tmp_path / "unsure-vae")
    model, _ = run_folder.load_model(run_dir)
    log_var = model.encoder.get_layer("z_log_var")
    log_var.set_weights([np.zeros_like(log_var.get_weights()[0]),
                         np.full_like(log_var.get_weights()[1], 6.0)])
    run_folder.save_weights(model, run_dir / run_folder.WEIGHTS_FILE)
    images = data.load_dataset(str(tiny_npz)).x_test

    scored = latent_sweep.score_run(run_dir, images)

    deterministic = np.mean((images - model.reconstruct(images)) ** 2)
    sampled = np.mean((images - keras.ops.convert_to_numpy(model(images))) ** 2)
    assert abs(sampled - deterministic) > 0.01 * deterministic  # the premise: they differ
    assert scored["test_mse"] == pytest.approx(deterministic, rel=1e-5)


def test_sweep_prints_the_table_and_draws_the_figure(sweep):
    out, results, printed = sweep
    table = [line for line in printed.splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(LATENT_DIMS)  # header, rule, one row per latent size
    runs = {(run["model"], run["latent_dim"]): run for run in results["runs"]}
    for row, latent_dim in zip(table[2:], LATENT_DIMS):
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[0] == str(latent_dim)
        assert cells[1] == f"{runs[('ae', latent_dim)]['test_mse']:.4f}"
        assert cells[2] == f"{runs[('vae', latent_dim)]['test_mse']:.4f}"

    assert matplotlib.image.imread(out / latent_sweep.FIGURE_FILE).shape[0] > 200
    figure = latent_sweep.mse_figure(results["runs"], "test")
    axis = figure.axes[0]
    assert axis.get_xscale() == "log"
    assert "latent size" in axis.get_xlabel() and "MSE" in axis.get_ylabel()
    lines = {line.get_label(): line for line in axis.get_lines()}
    assert set(lines) == set(latent_sweep.MODEL_LABELS.values())
    assert [text.get_text() for text in axis.get_legend().get_texts()] == list(lines)
    for model, label in latent_sweep.MODEL_LABELS.items():
        assert list(lines[label].get_xdata()) == list(LATENT_DIMS)
        assert list(lines[label].get_ydata()) == [runs[(model, dim)]["test_mse"]
                                                  for dim in LATENT_DIMS]


def test_generators_score_samples_of_both_models(sweep, tmp_path):
    out, _, _ = sweep
    code, printed = run_main(generators.main, [
        "--vae-run", str(out / "vae-latent-2"), "--ae-run", str(out / "ae-latent-2"),
        "--samples", str(TINY_SAMPLES), "--classifier-epochs", "1", "--out", str(tmp_path)])
    assert code == 0, printed
    results = json.loads((tmp_path / generators.RESULTS_FILE).read_text())
    assert 0 <= results["classifier_test_accuracy"] <= 1
    assert results["settings"]["reference_test_images"] == TINY_TEST - TINY_SAMPLES
    assert results["settings"]["classifier_train_images"] == TINY_TRAIN
    for source in generators.SOURCES:
        scores = results["scores"][source]
        assert sum(scores["digit_counts"]) == TINY_SAMPLES
        assert 0 <= scores["confident_share"] <= 1
        assert 0 <= scores["class_entropy_bits"] <= math.log2(10) + 1e-9
        assert math.isfinite(scores["frechet_distance"]) and scores["frechet_distance"] >= 0
    assert results["scores"]["vae"]["latent_dim"] == results["scores"]["ae"]["latent_dim"] == 2
    table = [line for line in printed.splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(generators.SOURCES)
    assert matplotlib.image.imread(tmp_path / generators.FIGURE_FILE).shape[0] > 200


def test_generators_refuse_a_run_of_the_other_model(sweep, tmp_path, capsys):
    out, _, _ = sweep
    code = generators.main(["--vae-run", str(out / "ae-latent-2"), "--ae-run",
                            str(out / "ae-latent-2"), "--out", str(tmp_path)])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("generators.py: error:")
    assert "not a VAE" in lines[0]


def test_generators_need_more_test_images_than_twice_the_samples(sweep, tmp_path, capsys):
    out, _, _ = sweep
    code = generators.main(["--vae-run", str(out / "vae-latent-2"), "--ae-run",
                            str(out / "ae-latent-2"), "--samples", str(TINY_TEST), "--out",
                            str(tmp_path)])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "lower --samples" in lines[0]


# --- The scores, on numbers whose answers are known ------------------------------------------

def test_frechet_distance_of_shifted_and_scaled_features():
    features = np.random.default_rng(0).normal(size=(2000, 8))
    features -= features.mean(axis=0)  # mean 0, so scaling moves the covariance alone
    assert generators.frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)
    shift = np.arange(8.0)
    # Equal covariances: only the squared distance between the means is left.
    assert generators.frechet_distance(features + shift, features) == pytest.approx(
        shift @ shift, rel=1e-6)
    # Covariances C and 4C: Tr(C + 4C - 2 (4C^2)^(1/2)) = Tr(C).
    assert generators.frechet_distance(2 * features, features) == pytest.approx(
        np.trace(np.cov(features, rowvar=False)), rel=1e-4)


def test_frechet_distance_of_unlike_covariances_matches_the_symmetric_form():
    # Covariances that do not commute, so Tr((C_1 C_2)^(1/2)) is no function of the diagonals.
    rng = np.random.default_rng(4)
    features = rng.normal(size=(3000, 5)) @ rng.normal(size=(5, 5))
    reference_features = rng.normal(size=(3000, 5)) @ rng.normal(size=(5, 5)) + 0.5
    covariance = np.cov(features, rowvar=False)
    reference_covariance = np.cov(reference_features, rowvar=False)
    # The same distance by another route: Tr(C_1 + C_2 - 2 (C_1^(1/2) C_2 C_1^(1/2))^(1/2)),
    # with each square root of a symmetric matrix from its eigendecomposition.
    values, vectors = np.linalg.eigh(covariance)
    root_covariance = vectors @ np.diag(np.sqrt(values)) @ vectors.T
    inner = np.linalg.eigvalsh(root_covariance @ reference_covariance @ root_covariance)
    mean_gap = features.mean(axis=0) - reference_features.mean(axis=0)
    expected = (mean_gap @ mean_gap + np.trace(covariance) + np.trace(reference_covariance)
                - 2 * np.sum(np.sqrt(inner)))
    assert generators.frechet_distance(features, reference_features) == pytest.approx(
        expected, rel=1e-4)


def test_frechet_distance_of_features_that_never_fire_is_finite_and_quiet():
    features = np.random.default_rng(1).normal(size=(500, 6))
    features[:, 2] = 0.0  # a ReLU unit that never fires: a singular covariance
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "matrix is singular" warning either
        distance = generators.frechet_distance(features, features + 1.0)
    assert distance == pytest.approx(6.0, rel=1e-4)


def one_hot(digits, confidence=1.0):
    probabilities = np.full((len(digits), 10), (1 - confidence) / 9)
    probabilities[np.arange(len(digits)), digits] = confidence
    return probabilities


def test_class_entropy_counts_the_digits_present():
    assert generators.class_entropy(one_hot(np.arange(100) % 10)) == pytest.approx(math.log2(10))
    assert generators.class_entropy(one_hot(np.full(50, 7))) == 0
    assert generators.class_entropy(one_hot(np.array([3, 8] * 20))) == pytest.approx(1.0)
    assert list(generators.digit_counts(one_hot(np.array([3, 8, 8])))) == [0, 0, 0, 1, 0, 0, 0,
                                                                           0, 2, 0]


def test_confident_share_counts_probabilities_above_the_threshold():
    probabilities = np.concatenate([one_hot(np.arange(3), 0.95), one_hot(np.arange(5), 0.5),
                                    one_hot(np.arange(2), 0.9)])  # exactly 0.9 is not above
    assert generators.confident_share(probabilities) == pytest.approx(0.3)


def test_ae_codes_are_drawn_from_the_gaussian_fitted_to_its_codes():
    covariance = np.array([[4.0, 1.5], [1.5, 1.0]])
    codes = np.random.default_rng(2).multivariate_normal([5.0, -3.0], covariance, 4000)
    drawn = generators.fitted_gaussian_codes(codes, 20000, seed=3)
    assert drawn.shape == (20000, 2)
    np.testing.assert_allclose(drawn.mean(axis=0), codes.mean(axis=0), atol=0.06)
    np.testing.assert_allclose(np.cov(drawn, rowvar=False), np.cov(codes, rowvar=False), atol=0.15)
    one_dimensional = generators.fitted_gaussian_codes(codes[:, :1], 10, seed=3)
    assert one_dimensional.shape == (10, 1)


# --- Flags -----------------------------------------------------------------------------------

@pytest.mark.parametrize("script, flag, value", [
    (latent_sweep, "--latent-dims", "0"), (latent_sweep, "--epochs", "x"),
    (generators, "--samples", "0"), (generators, "--classifier-epochs", "-1")])
def test_bad_flags_are_one_line_errors(capsys, script, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        script.main([flag, value])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and flag in lines[0]


def test_sweep_refuses_a_train_limit_above_the_data_before_training(tiny_npz, tmp_path, capsys):
    code = latent_sweep.main(["--data", str(tiny_npz), "--train-limit", str(TINY_TRAIN + 1),
                              "--out", str(tmp_path)])
    assert code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("latent_sweep.py: error:")
    assert "larger than" in lines[0]
    assert not list(tmp_path.iterdir())  # no run folder was started
