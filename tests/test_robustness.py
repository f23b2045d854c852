"""Checkpoints, resume, Ctrl-C, NaN and reproducibility of training runs."""

import dataclasses
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import losses
import run_folder
import scale_out
import settings
import training
from conftest import REPO, tiny_run_args
from test_scripts import assert_one_line_error, folder_digest


def final_weights(run_dir):
    model, _ = run_folder.load_model(run_dir)
    return model.get_weights()


def checkpoint_epoch(run_dir):
    state, *_ = run_folder.read_checkpoint(run_dir / run_folder.CHECKPOINT_FILE)
    return state["epoch"]


def test_image_stream_reads_each_epoch_once_in_an_order_fixed_by_seed_and_epoch():
    images = np.arange(10, dtype="float32").reshape(10, 1, 1, 1)
    stream = training.ShuffledImageStream(images, batch_size=4, seed=5)
    assert stream.num_batches is None and stream.batches_per_epoch == 3  # 4 + 4 + 2

    def epoch(source, first_index):
        batches = [source[index] for index in range(first_index, first_index + 3)]
        assert all(np.array_equal(inputs, targets) for inputs, targets in batches)
        return np.concatenate([inputs for inputs, _ in batches]).ravel()

    first, second = epoch(stream, 0), epoch(stream, 3)
    assert sorted(first) == sorted(second) == list(range(10))  # every image once per epoch
    assert not np.array_equal(first, second)  # reshuffled
    # A stream that starts at epoch 1 (a resumed run) reads what the full stream read
    # second, and the same seed always gives the same order.
    resumed = training.ShuffledImageStream(images, batch_size=4, seed=5, first_epoch=1)
    np.testing.assert_array_equal(epoch(resumed, 0), second)
    np.testing.assert_array_equal(epoch(training.ShuffledImageStream(images, 4, 5), 0), first)
    assert not np.array_equal(epoch(training.ShuffledImageStream(images, 4, 6), 0), first)


def test_fit_data_is_the_stream_with_tf_data_autotuning_off():
    import keras

    images = np.arange(10, dtype="float32").reshape(10, 1, 1, 1)
    stream = training.ShuffledImageStream(images, batch_size=4, seed=5)
    fit_data = training.as_fit_data(stream)
    if keras.backend.backend() != "tensorflow":
        assert fit_data is stream
        return
    # Autotuning's thread made tearing the pipeline down wait up to a minute.
    assert fit_data.options().autotune.enabled is False
    read = [(inputs.numpy(), targets.numpy()) for inputs, targets in fit_data.take(7)]
    for index, (inputs, targets) in enumerate(read):  # 7 batches: into the third epoch
        np.testing.assert_array_equal(inputs, stream[index][0])
        np.testing.assert_array_equal(targets, inputs)


class _NoPythonBatches(training.ShuffledImageStream):
    def __getitem__(self, index):
        raise AssertionError("the TensorFlow pipeline read a batch through Python")


@pytest.mark.parametrize("whole_batches, role", [(False, scale_out.ProcessRole()),
                                                 (True, scale_out.ProcessRole(1, 2))])
def test_tensorflow_pipeline_gathers_the_streams_batches_in_the_graph(whole_batches, role):
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the in-graph pipeline is TensorFlow's")
    images = np.arange(22, dtype="float32").reshape(22, 1, 1, 1)
    stream = training.ShuffledImageStream(images, 8, seed=3, first_epoch=2, role=role,
                                          whole_batches=whole_batches)
    fit_data = training.as_fit_data(_NoPythonBatches(images, 8, seed=3, first_epoch=2, role=role,
                                                     whole_batches=whole_batches))
    read = [inputs.numpy() for inputs, _ in fit_data.take(3 * stream.batches_per_epoch)]
    assert len(read) == 3 * stream.batches_per_epoch  # three epochs, no batch merged or lost
    for index, inputs in enumerate(read):
        np.testing.assert_array_equal(inputs, stream[index][0])


def test_test_set_batches_cover_the_images_in_order():
    images = np.arange(7, dtype="float32").reshape(7, 1, 1, 1)
    batches = training.ImageBatches(images, batch_size=3)
    assert len(batches) == 3
    read = np.concatenate([batches[index][0] for index in range(len(batches))])
    np.testing.assert_array_equal(read, images)
    # What fit gets: every test image once, in order, twice over (two evaluations).
    fit_data = training.as_fit_data(batches)
    for _ in range(2):
        read = np.concatenate([np.asarray(inputs) for inputs, _ in fit_data])
        np.testing.assert_array_equal(read, images)
    # A process's share of each batch, the last batch's included.
    share = training.ImageBatches(images, batch_size=4, role=scale_out.ProcessRole(1, 2))
    read = [np.asarray(inputs) for inputs, _ in training.as_fit_data(share)]
    assert len(read) == len(share)
    for index, inputs in enumerate(read):
        np.testing.assert_array_equal(inputs, share[index][0])


def test_two_plus_two_resumed_epochs_equal_four_straight(tiny_npz, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    # --test-every 2: the test set is evaluated after epochs 2 and 4, also across a resume.
    # (A test evaluation draws the VAE's sampling noise, so a run ended at an epoch that the
    # straight run does not evaluate would not resume to the same weights.)
    assert training.main("vae", tiny_run_args(tiny_npz, straight, "--epochs", "4",
                                              "--test-every", "2")) == 0
    assert training.main("vae", tiny_run_args(tiny_npz, resumed, "--epochs", "2",
                                              "--test-every", "2")) == 0
    assert checkpoint_epoch(resumed) == 2
    assert training.main("vae", tiny_run_args(tiny_npz, resumed, "--epochs", "4",
                                              "--resume")) == 0
    assert checkpoint_epoch(resumed) == 4
    for straight_weight, resumed_weight in zip(final_weights(straight), final_weights(resumed),
                                               strict=True):
        np.testing.assert_allclose(resumed_weight, straight_weight, rtol=1e-5, atol=1e-6)
    history = run_folder.read_history_csv(resumed / run_folder.HISTORY_FILE)
    assert len(history["loss"]) == 4
    straight_history = run_folder.read_history_csv(straight / "history.csv")
    np.testing.assert_allclose(history["loss"], straight_history["loss"], rtol=1e-4)
    for run_history in (history, straight_history):
        assert np.isnan(run_history["val_loss"][0::2]).all()
        assert np.isfinite(run_history["val_loss"][1::2]).all()
    np.testing.assert_allclose(history["val_loss"][1::2], straight_history["val_loss"][1::2],
                               rtol=1e-4)


def test_the_test_set_is_evaluated_every_nth_epoch_and_after_the_last():
    assert training.test_epochs(10, 4) == [4, 8, 10]
    assert training.test_epochs(8, 4) == [4, 8]
    assert training.test_epochs(3, 5) == [3]
    assert training.test_epochs(3, 1) == [1, 2, 3]


def test_history_csv_leaves_untested_epochs_empty_and_reads_them_back_as_nan(tmp_path):
    path = tmp_path / "history.csv"
    run_folder.write_history_csv(path, {"loss": [3.0, 2.0], "val_loss": [float("nan"), 1.5]})
    assert path.read_text().splitlines()[1:] == ["1,3.0,", "2,2.0,1.5"]
    history = run_folder.read_history_csv(path)
    assert history["loss"] == [3.0, 2.0]
    assert np.isnan(history["val_loss"][0]) and history["val_loss"][1] == 1.5


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_warmup_rises_linearly_to_the_learning_rate_then_the_schedule_takes_over(schedule):
    run_settings = settings.TrainingSettings(epochs=10, batch_size=100, learning_rate=2e-3,
                                             lr_schedule=schedule, warmup_epochs=2)
    rate = training.learning_rate_schedule(run_settings, train_images=1000)  # 10 steps an epoch
    rates = [float(rate(step)) for step in (0, 10, 20, 60, 100)]
    np.testing.assert_allclose(rates[:3], [0.0, 1e-3, 2e-3], atol=1e-9)
    if schedule == "cosine":  # halfway through the decay it is at half, and 0 at the end
        np.testing.assert_allclose(rates[3:], [1e-3, 0.0], atol=1e-9)
    else:
        np.testing.assert_allclose(rates[3:], [2e-3, 2e-3], atol=1e-9)
    without = dataclasses.replace(run_settings, warmup_epochs=0, lr_schedule="constant")
    assert training.learning_rate_schedule(without, train_images=1000) == 2e-3


def test_same_seed_gives_identical_weights_and_another_seed_does_not(tiny_npz, tmp_path,
                                                                    trained_runs):
    for name, seed in (("second", "0"), ("other", "1")):
        assert training.main("ae", tiny_run_args(tiny_npz, tmp_path / name, "--seed", seed)) == 0
    first = final_weights(trained_runs / "ae")  # seed 0, trained earlier in this session
    second, other = (final_weights(tmp_path / name) for name in ("second", "other"))
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_resume_past_the_last_epoch_is_refused(capsys, tiny_npz, tmp_path):
    run_dir = tmp_path / "run"
    assert training.main("ae", tiny_run_args(tiny_npz, run_dir, "--epochs", "1")) == 0
    capsys.readouterr()
    code = training.main("ae", tiny_run_args(tiny_npz, run_dir, "--epochs", "1", "--resume"))
    assert_one_line_error(capsys, code, "already trained 1 epochs")


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(capsys, monkeypatch, tiny_npz,
                                                           tmp_path):
    run_dir = tmp_path / "run"
    assert training.main("vae", tiny_run_args(tiny_npz, run_dir, "--epochs", "1")) == 0
    before = folder_digest(run_dir)
    capsys.readouterr()
    # Force a NaN into the loss of the resumed epochs.
    kl_divergence = losses.kl_divergence
    monkeypatch.setattr(losses, "kl_divergence",
                        lambda z_mean, z_log_var: kl_divergence(z_mean, z_log_var) * np.nan)
    code = training.main("vae", tiny_run_args(tiny_npz, run_dir, "--epochs", "3", "--resume"))
    captured = capsys.readouterr()
    assert code == 3
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "NaN or infinite" in lines[0] and "learning rate" in lines[0]
    assert folder_digest(run_dir) == before  # checkpoint, weights, config: all as they were
    assert checkpoint_epoch(run_dir) == 1


def test_ctrl_c_saves_says_how_to_resume_and_the_run_resumes(tiny_npz, tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, "train_ae.py", *tiny_run_args(tiny_npz, run_dir, "--epochs", "200")]
    # A shell that starts the test suite in the background makes its children ignore
    # SIGINT, and Python then installs no Ctrl-C handler: give the run the default one.
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not (run_dir / run_folder.CHECKPOINT_FILE).exists():
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "Traceback" not in stderr
    last_line = stderr.strip().splitlines()[-1]
    assert "interrupted" in last_line and "--resume" in last_line
    saved = checkpoint_epoch(run_dir)
    assert 1 <= saved < 200
    assert not (run_dir / "config.json").exists()  # not a finished run yet
    assert training.main("ae", tiny_run_args(tiny_npz, run_dir, "--epochs", str(saved + 1),
                                             "--resume")) == 0
    config = json.loads((run_dir / "config.json").read_text())
    assert config["settings"]["epochs"] == saved + 1 and config["training"]["resumed"]
    assert len(run_folder.read_history_csv(run_dir / "history.csv")["loss"]) == saved + 1
    assert not [path for path in run_dir.iterdir() if path.name.startswith(".tmp-")]


OLD_CHECKPOINT_SETTINGS = ("data", "train_limit", "digits", "batch_size", "learning_rate",
                           "lr_schedule", "latent_dim", "reconstruction_weight", "seed",
                           "precision")


def test_a_checkpoint_from_before_the_settings_dataclass_resumes(tiny_npz, tmp_path):
    # Earlier versions stored only these settings in the checkpoint (training.SETTINGS), and
    # their decoder was the original's (what the missing upsampling field reads back as).
    run_dir = tmp_path / "run"
    assert training.main("vae", tiny_run_args(tiny_npz, run_dir, "--epochs", "1",
                                              "--upsampling", "transpose")) == 0
    state, weights, optimizer_variables, rng_states = run_folder.read_checkpoint(
        run_dir / run_folder.CHECKPOINT_FILE)
    state["settings"] = {name: state["settings"][name] for name in OLD_CHECKPOINT_SETTINGS}
    run_folder.write_checkpoint(run_dir / run_folder.CHECKPOINT_FILE, weights,
                                optimizer_variables, rng_states, state)
    assert training.main("vae", tiny_run_args(tiny_npz, run_dir, "--epochs", "2",
                                              "--resume")) == 0
    assert checkpoint_epoch(run_dir) == 2
    config = json.loads((run_dir / run_folder.CONFIG_FILE).read_text())
    assert config["settings"]["train_limit"] == 256 and config["settings"]["epochs"] == 2


def test_a_resume_that_would_change_the_run_is_refused_and_leaves_it_untouched(
        capsys, tiny_npz, tmp_path):
    run_dir = tmp_path / "run"
    assert training.main("ae", tiny_run_args(tiny_npz, run_dir, "--epochs", "1")) == 0
    before = folder_digest(run_dir)
    capsys.readouterr()
    code = training.main("ae", tiny_run_args(tiny_npz, run_dir, "--epochs", "2", "--resume",
                                             "--latent-dim", "7"))
    assert_one_line_error(capsys, code, "--latent-dim")
    assert folder_digest(run_dir) == before
