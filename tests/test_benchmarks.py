"""benchmarks/train_speed.py on tiny data: its JSON summary, its medians and its bad-input errors."""

import csv
import importlib.util
import json
import math

import numpy as np
import pytest

import training
from conftest import REPO, write_npz

TINY_TRAIN = 128
TINY_TEST = 64


def load_benchmark(name="train_speed"):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_speed = load_benchmark()


@pytest.fixture(scope="module")
def small_npz(tmp_path_factory, mnist_arrays):
    """128 training and 64 test images of the bundled real MNIST."""
    return write_npz(tmp_path_factory.mktemp("bench") / "small.npz",
                     x_train=mnist_arrays["x_train"][:TINY_TRAIN],
                     y_train=mnist_arrays["y_train"][:TINY_TRAIN],
                     x_test=mnist_arrays["x_test"][:TINY_TEST],
                     y_test=mnist_arrays["y_test"][:TINY_TEST])


def test_tiny_benchmark_measures_both_variants(small_npz, tmp_path, capsys):
    json_out = tmp_path / "speed.json"
    # Two epochs, so throughput is timed on a warm epoch; a target every run reaches at epoch 1.
    code = train_speed.main(["--data", str(small_npz), "--train-limit", str(TINY_TRAIN),
                             "--epochs", "2", "--repeats", "1", "--target-loss", "1e6",
                             "--json-out", str(json_out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.strip().splitlines()
    summary = json.loads(lines[-1])

    assert summary["settings"]["train_images"] == TINY_TRAIN
    assert summary["settings"]["test_images"] == TINY_TEST
    for variant in ("reference", "project"):
        medians = summary[variant]
        assert medians["runs"] == 1 and medians["reached_target"] == 1
        assert math.isfinite(medians["throughput"]) and medians["throughput"] > 0
        assert medians["time_to_target"] > 0 and medians["target_epoch"] == 1
        assert 0 < medians["final_test_loss"] < 1e6
        assert medians["peak_rss_mib"] > 50  # a Keras process, measured in MiB
        assert medians["process_seconds"] > medians["time_to_target"]
    assert summary["whole_process_speedup"] == pytest.approx(  # rounded in the JSON line
        summary["reference"]["process_seconds"] / summary["project"]["process_seconds"], rel=0.01)
    assert summary["settings"]["cpu"]["cores"] >= 1
    assert summary["reference"]["precision"] == "float32"
    assert summary["project"]["precision"] == training.resolve_precision("auto")
    np.testing.assert_allclose(
        summary["throughput_ratio"],
        summary["project"]["throughput"] / summary["reference"]["throughput"], rtol=0.01)
    np.testing.assert_allclose(
        summary["time_to_target_ratio"],
        summary["project"]["time_to_target"] / summary["reference"]["time_to_target"], rtol=0.01)

    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 2 + 2 + 2  # header, rule, one row per run, one median row per variant
    assert "(cold)" not in "\n".join(table)

    full = json.loads(json_out.read_text())
    assert [run["variant"] for run in full["runs"]] == ["reference", "project"]
    for run in full["runs"]:
        assert run["epochs"] == 2 and run["throughput_warm"]
        assert run["test_images"] == TINY_TEST and run["train_images"] == TINY_TRAIN
        assert [epoch["epoch"] for epoch in run["history"]] == [1, 2]
        # the training clock leaves the evaluations out
        assert run["time_to_target"] < run["time_to_target_with_eval"] <= run["fit_seconds"]


def test_reference_ae_is_the_original_ae():
    import keras

    model = train_speed.build_reference_ae()
    reference_vae = train_speed.build_reference_vae(seed=0)
    # The VAE's two Dense heads become one Dense bottleneck; everything else is shared.
    vae_weights = sum(int(np.prod(w.shape)) for w in reference_vae.weights)
    head = 7 * 7 * 64 * 2 + 2
    assert sum(int(np.prod(w.shape)) for w in model.weights) == vae_weights - head
    assert model.output_shape == (None, 28, 28, 1)
    bottlenecks = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)
                   and layer.output.shape == (None, train_speed.LATENT_DIM)]
    assert len(bottlenecks) == 1


def fake_run(variant, throughput, time_to_target, process_seconds=100.0):
    return {"variant": variant, "precision": "float32", "throughput": throughput,
            "throughput_warm": True, "time_to_target": time_to_target,
            "target_epoch": None if time_to_target is None else 10,
            "final_test_loss": 56.0, "epochs": 12, "peak_rss_mib": 1000.0,
            "process_seconds": process_seconds}


def test_medians_and_ratios():
    runs = [fake_run("reference", 500.0, 200.0, 130.0), fake_run("project", 1000.0, 80.0, 90.0),
            fake_run("reference", 600.0, 180.0, 120.0), fake_run("project", 900.0, None, 100.0),
            fake_run("reference", 550.0, 220.0, 140.0), fake_run("project", 1100.0, 90.0, 80.0)]
    summary = train_speed.summarize(runs)
    # whole process: the reference's median over the project's, 130 / 90
    assert summary["whole_process_speedup"] == pytest.approx(130.0 / 90.0)
    assert summary["reference"]["throughput"] == 550.0
    assert summary["project"]["throughput"] == 1000.0
    assert summary["throughput_ratio"] == pytest.approx(1000.0 / 550.0)
    # the run that missed the target counts as the slowest one
    assert summary["project"]["time_to_target"] == 90.0
    assert summary["project"]["reached_target"] == 2
    assert summary["time_to_target_ratio"] == pytest.approx(90.0 / 200.0)
    table = train_speed.markdown_table(runs, summary)
    assert table.count("not reached") == 1 and table.count("**median**") == 2


def test_a_target_most_runs_miss_has_no_median_and_no_ratio():
    runs = [fake_run("reference", 500.0, 200.0), fake_run("project", 1000.0, None),
            fake_run("project", 1000.0, None), fake_run("project", 1000.0, 80.0)]
    summary = train_speed.summarize(runs)
    assert summary["project"]["time_to_target"] is None
    assert summary["time_to_target_ratio"] is None
    assert summary["throughput_ratio"] == pytest.approx(2.0)
    assert json.loads(json.dumps(train_speed._json_safe(summary))) == summary


def test_one_variant_alone_has_no_ratios():
    summary = train_speed.summarize([fake_run("project", 1000.0, 80.0)])
    assert summary["throughput_ratio"] is None and summary["time_to_target_ratio"] is None


@pytest.mark.parametrize("extra, expected", [
    (["--data", "no/such/file.npz"], "does not exist"),
    (["--train-limit", "1000"], "larger than"),
    (["--json-out", "no/such/folder/speed.json"], "does not exist"),
])
def test_bad_input_is_one_line_error(small_npz, capsys, extra, expected):
    argv = ["--data", str(small_npz), "--train-limit", str(TINY_TRAIN), *extra]
    assert train_speed.main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train_speed.py: error:")
    assert expected in lines[0] and "Traceback" not in captured.err


@pytest.mark.parametrize("flag, value", [("--repeats", "0"), ("--epochs", "x"),
                                         ("--target-loss", "nan"), ("--variants", "fast")])
def test_bad_flags_are_one_line_errors(capsys, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        train_speed.main([flag, value])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and flag in lines[0]


def load_levers():
    spec = importlib.util.spec_from_file_location("levers", REPO / "benchmarks" / "levers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_lever_benchmark_measures_each_setting_at_the_precision_asked(small_npz, capsys):
    levers = load_levers()
    # Each setting trains in a process of its own (about 15 s here): two cover the float32
    # baseline and a project setting, in the precision --precision picks, that changes the batch.
    settings = ["plain", "batch-64"]
    code = levers.main(["--data", str(small_npz), "--train-limit", str(TINY_TRAIN),
                        "--epochs", "1", "--repeats", "1", "--settings", *settings])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.strip().splitlines()
    summary = json.loads(lines[-1])
    medians = summary["medians_images_per_second"]
    assert set(medians) == set(settings)
    assert all(math.isfinite(value) and value > 0 for value in medians.values())
    assert summary["ratio_to_plain"]["plain"] == 1.0
    assert summary["ratio_to_plain"]["batch-64"] == pytest.approx(
        medians["batch-64"] / medians["plain"], rel=0.01)
    rows = [line for line in lines if line.startswith("| 1 |")]
    assert [row.split("|")[2].strip() for row in rows] == settings
    # plain trains in float32; every other setting in what --precision (auto) picks here
    assert "| plain | " in rows[0] and "| float32 |" in rows[0]
    auto = training.resolve_precision("auto")
    assert all(f"| {auto} |" in row for row in rows[1:])
    assert summary["precision"] == "auto" and summary["cpu"]["cores"] >= 1


def test_lever_benchmark_refuses_an_unknown_setting(capsys):
    levers = load_levers()
    with pytest.raises(SystemExit) as exit_info:
        levers.main(["--settings", "warp-drive"])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--settings" in lines[0]


def test_detect_example_measures_a_png_folder_detector(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        "detect_example", REPO / "benchmarks" / "detect_example.py")
    detect_example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(detect_example)
    code = detect_example.main(["--normal", "0", "1", "--train-limit", "300", "--test-limit",
                                "60", "--epochs", "1", "--out", str(tmp_path)])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["test_images"] == 60 and summary["normal_digits"] == [0, 1]
    assert summary["train_images"] == len(list((tmp_path / "mnist_png" / "train").rglob("*.png")))
    assert 0.0 <= summary["auroc"] <= 1.0 and summary["detect_images_per_second"] > 0
    with open(tmp_path / "scores.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert summary["flagged"] == sum(row["anomaly"] == "true" for row in rows)
    assert (tmp_path / "montage.png").is_file()


def test_input_pipeline_benchmark_times_the_training_stream(small_npz, capsys):
    input_pipeline = load_benchmark("input_pipeline")
    seconds = input_pipeline.main(["--data", str(small_npz), "--train-limit", "40",
                                   "--batch-sizes", "8", "16", "--batches", "12", "--warm-up", "2"])
    assert set(seconds) == {8, 16} and all(value > 0 for value in seconds.values())
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 8 |")
            or line.startswith("| 16 |")]
    assert len(rows) == 2


def test_seed_table_trains_each_seed_in_its_own_process_and_tabulates_analysis(
        small_npz, tmp_path, capsys):
    # The AE, whose analysis draws no prior samples: the VAE's own columns are checked on
    # hand-made rows below, and its plain port by the speed benchmark's test above. So this
    # test also times the original AE script, in the port's worker, as the seed table does.
    seed_table = load_benchmark("seed_table")
    out = tmp_path / "table"
    code = seed_table.main(["--model", "ae", "--seeds", "3", "--label", "tiny",
                            "--port-rounds", "1", "--port-epochs", "1", "2",
                            "--out", str(out), "--", "--data", str(small_npz), "--epochs", "1",
                            "--train-limit", str(TINY_TRAIN), "--precision", "float32"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out.strip().splitlines()[-1].removeprefix(
        seed_table.RESULT_MARKER))
    run_dir = out / "ae-tiny-seed3"
    metrics = json.loads((run_dir / "metrics.json").read_text())  # written by analysis.py
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"] == "ae"
    assert config["settings"]["seed"] == 3 and config["settings"]["epochs"] == 1
    (row,) = result["rows"]
    assert row["test_mse"] == metrics["test_mse"] and row["knn5_accuracy"] == metrics["knn5_accuracy"]
    # The whole process includes start-up and saving, so it outlasts the training itself.
    assert row["whole_process_seconds"] > row["training_seconds"] == config["training"]["wall_seconds"]
    assert result["median"]["test_mse"] == row["test_mse"] and "seeds_at_or_below_target" not in result
    assert "| 3 | " in captured.out and "| worst | " in captured.out
    assert "test loss" not in captured.out and "blots" not in captured.out  # VAE-only columns
    # The plain port ran once for 1 and once for 2 epochs, on the seeds' tiny data, and its
    # 40 epochs (the original AE's) are the line through the two.
    (port_round,) = result["port"]["rounds"]
    one, two = port_round["seconds"]["1"], port_round["seconds"]["2"]
    assert 0 < one and 0 < two
    assert result["port"]["epochs"] == 40
    assert result["port"]["estimate_seconds"] == pytest.approx(one + (two - one) * 39, abs=0.2)
    assert result["port"]["shares"]["3"] == pytest.approx(
        row["whole_process_seconds"] / result["port"]["estimate_seconds"], abs=1e-4)
    assert result["port"]["estimate_from_epochs_seconds"] == pytest.approx(
        two + port_round["warm_epoch_seconds"] * 38, abs=0.5)
    port_runs = [json.loads(path.read_text())
                 for path in sorted(out.glob("port-ae-*epochs-*.json"))]
    assert sorted(run["epochs"] for run in port_runs) == [1, 2]
    assert all(run["variant"] == "reference" and run["train_images"] == TINY_TRAIN
               and run["test_images"] == TINY_TEST for run in port_runs)
    # The original AE's test loss is its MSE: far below the VAE's 1000 x MSE + KL.
    assert all(0 < run["final_test_loss"] < 0.5 for run in port_runs)
    assert "share of the port's run" in captured.out


def test_seed_table_gives_the_vae_its_loss_blots_and_target_columns():
    seed_table = load_benchmark("seed_table")
    rows = [{"seed": 0, "test_loss": 47.5, "test_mse": 0.04, "test_kl": 5.0, "knn5_accuracy": 0.70,
             "silhouette": 0.1, "prior_blot_share": 0.001, "training_seconds": 100.0,
             "whole_process_seconds": 120.0},
            {"seed": 1, "test_loss": 48.5, "test_mse": 0.05, "test_kl": 4.0, "knn5_accuracy": 0.60,
             "silhouette": 0.2, "prior_blot_share": 0.002, "training_seconds": 110.0,
             "whole_process_seconds": 130.0}]
    table, summary = seed_table.markdown_table("vae", rows, 48.24, port_seconds=1000.0)
    lines = table.splitlines()
    assert lines[0].split(" | ")[1:4] == ["test loss", "test MSE", "test KL"]
    assert lines[0].endswith("| share of the port's run | loss <= 48.24 |")
    assert lines[2].endswith("| 0.10% | 100 | 120 | 12.0% | yes |")
    assert lines[3].endswith("| 0.20% | 110 | 130 | 13.0% | **no** |")
    # The worst seed: the highest loss and blots, the lowest 5-NN.
    assert summary["worst"]["test_loss"] == 48.5 and summary["worst"]["knn5_accuracy"] == 0.60
    assert summary["worst"]["prior_blot_share"] == 0.002
    assert summary["median"]["test_loss"] == pytest.approx(48.0)
    assert lines[-1].startswith("| worst | 48.50 |") and lines[-1].endswith("| **no** |")


def test_port_estimate_is_the_line_through_the_two_timed_runs():
    seed_table = load_benchmark("seed_table")
    # 60 s for 2 epochs and 120 s for 5: 20 s an epoch on top of 20 s of start-up.
    assert seed_table.port_estimate(2, 60.0, 5, 120.0, 100) == pytest.approx(2020.0)
    assert seed_table.port_estimate(2, 60.0, 5, 120.0, 40) == pytest.approx(820.0)


def test_seed_table_refuses_port_epochs_that_draw_no_line(capsys):
    seed_table = load_benchmark("seed_table")
    with pytest.raises(SystemExit) as exit_info:
        seed_table.main(["--port-rounds", "1", "--port-epochs", "5", "5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and "--port-epochs 5 5" in err[0]


def test_seed_table_reports_a_failed_training_in_one_line(small_npz, tmp_path, capsys):
    seed_table = load_benchmark("seed_table")
    code = seed_table.main(["--seeds", "0", "--out", str(tmp_path), "--",
                            "--data", str(tmp_path / "missing.npz")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "train_vae.py --seed 0 failed" in err[0]
    assert "missing.npz" in err[0]


def test_blots_counts_the_flagged_prior_samples_and_draws_them(trained_runs, tmp_path, capsys):
    import evaluation
    import run_folder

    blots = load_benchmark("blots")
    assert blots.main([str(trained_runs / "vae"), "--samples", "300",
                       "--out", str(tmp_path)]) == 0
    shares = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    model, _ = run_folder.load_model(trained_runs / "vae")
    assert shares[str(trained_runs / "vae")] == evaluation.blot_share(model.sample(300, seed=0))
    assert (tmp_path / "vae-blots.png").stat().st_size > 1000
    # An AE has no prior: one line, no picture.
    assert blots.main([str(trained_runs / "ae"), "--out", str(tmp_path / "ae")]) == 2
    assert "holds an AE" in capsys.readouterr().err and not (tmp_path / "ae").exists()


def test_short_run_scores_the_moving_averages_the_recomputed_and_training_mode(
        small_npz, capsys):
    short_run = load_benchmark("short_run")
    code = short_run.main(["--model", "ae", "--data", str(small_npz), "--train-limit",
                           str(TINY_TRAIN), "--epochs", "2", "--", "--precision", "float32"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out.strip().splitlines()[-1])
    ones = int((np.load(small_npz)["y_train"][:TINY_TRAIN] == 1).sum())
    assert result["train_images"] == ones and result["steps"] == 2 * math.ceil(ones / 32)
    figures = [result[name] for name in ("moving averages", "recomputed", "training mode")]
    for row in figures[:2]:
        assert 0 < row["test_mse"] < 1 and 0 <= row["auroc"] <= 1
    assert figures[2]["auroc"] is None
    # The moving averages come from the checkpoint, the recomputed statistics from the saved
    # model: after 2 steps they differ. (That the recomputed ones score like training mode is
    # test_models' test_recomputed_batch_norm_statistics_match_training_mode_after_a_short_run;
    # 2 steps on 14 images are too few to show it here.)
    moving, recomputed, training_mode = (row["test_mse"] for row in figures)
    assert abs(moving - recomputed) > 1e-3 and math.isfinite(training_mode)
