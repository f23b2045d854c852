"""Faults that machines and schedulers bring: a full disk, failed writes, SIGTERM, a second
run into a held folder, and settings too big for memory."""

import errno
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import analysis
import atomic_files
import faults
import memory_estimate
import models
import run_folder
import run_lock
import training
from conftest import REPO, tiny_run_args
from test_scripts import assert_one_line_error, folder_digest


def checkpoint_epoch(run_dir):
    state, *_ = run_folder.read_checkpoint(run_dir / run_folder.CHECKPOINT_FILE)
    return state["epoch"]


def history_epochs(run_dir):
    path = run_dir / run_folder.HISTORY_FILE
    return len(run_folder.read_history_csv(path)["loss"]) if path.exists() else 0


def one_stderr_line(captured):
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


# (the file whose write fails, whether to resume afterwards): the files of each epoch and of
# the end of the run. The other end-of-run files (model.keras, config.json) go the same way.
WRITE_FAILURES = [("checkpoint.npz", False), ("history.csv", False), ("loss_curve.png", False),
                  ("model.weights.h5", True)]


@pytest.mark.parametrize("file_name, resume_after", WRITE_FAILURES,
                         ids=[case[0] for case in WRITE_FAILURES])
def test_a_failed_write_anywhere_is_one_line_and_keeps_the_checkpoint(
        file_name, resume_after, capfd, monkeypatch, tmp_path, tiny_npz, trained_runs):
    run_dir = tmp_path / "vae"
    shutil.copytree(trained_runs / "vae", run_dir)  # 1 epoch done; the resume trains epoch 2
    replace = os.replace

    def replace_failing_with_enospc(source, target):  # every atomic write ends in os.replace
        if os.path.basename(target) == file_name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(source))
        return replace(source, target)

    monkeypatch.setattr(atomic_files.os, "replace", replace_failing_with_enospc)
    capfd.readouterr()
    code = training.main("vae", tiny_run_args(tiny_npz, run_dir, "--epochs", "2", "--resume"))
    line = one_stderr_line(capfd.readouterr())
    assert code == 74
    assert f"could not write {run_dir / file_name} (No space left on device)" in line
    assert f"--out {run_dir} --resume" in line
    # The checkpoint holds the last epoch it could; history.csv never claims more.
    saved = checkpoint_epoch(run_dir)
    assert saved == (1 if file_name == "checkpoint.npz" else 2)
    assert history_epochs(run_dir) <= saved
    assert not [path for path in run_dir.iterdir() if path.name.startswith(".tmp-")]
    if file_name in ("model.weights.h5", "loss_curve.png"):  # the run folder was not finished
        assert not (run_dir / run_folder.CONFIG_FILE).exists()
    if resume_after:  # the line's command finishes the run
        monkeypatch.setattr(atomic_files.os, "replace", replace)
        assert training.main("vae", tiny_run_args(tiny_npz, run_dir, "--epochs", "2",
                                                  "--resume")) == 0
        model, config = run_folder.load_model(run_dir)
        assert history_epochs(run_dir) == checkpoint_epoch(run_dir) == 2
        assert config["settings"].epochs == 2


def test_a_failed_write_in_analysis_is_one_line(capfd, monkeypatch, tmp_path, trained_runs):
    run_dir = tmp_path / "ae"
    shutil.copytree(trained_runs / "ae", run_dir)
    replace = os.replace

    def replace_failing_with_eio(source, target):
        if os.path.basename(target) == "metrics.json":
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(source))
        return replace(source, target)

    metrics = run_dir / "metrics.json"  # other tests may have analysed the shared run before
    before = metrics.read_bytes() if metrics.exists() else None
    monkeypatch.setattr(atomic_files.os, "replace", replace_failing_with_eio)
    capfd.readouterr()
    code = analysis.main([str(run_dir)])
    line = one_stderr_line(capfd.readouterr())
    assert code == 74
    assert f"could not write {run_dir / 'metrics.json'} (Input/output error)" in line
    assert (metrics.read_bytes() if metrics.exists() else None) == before


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 4 MiB tmpfs: room for one VAE checkpoint (2.7 MB), not for its replacement beside it."""
    mount_point = tmp_path / "small_disk"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or 'not permitted'}); "
                    f"the injected-ENOSPC tests cover the same paths")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=False)


def test_a_full_disk_keeps_the_first_checkpoint_and_says_so(capfd, small_tmpfs, tiny_npz):
    run_dir = small_tmpfs / "run"
    capfd.readouterr()
    code = training.main("vae", tiny_run_args(tiny_npz, run_dir, "--epochs", "2",
                                              "--train-limit", "64"))
    line = one_stderr_line(capfd.readouterr())  # also no tracebacks that h5py prints itself
    assert code == 74
    assert f"could not write {run_dir / 'checkpoint.npz'} (No space left on device)" in line
    assert checkpoint_epoch(run_dir) == 1 and history_epochs(run_dir) == 1
    assert not [path for path in run_dir.iterdir() if path.name.startswith(".tmp-")]


def start_training(run_dir, tiny_npz, epochs):
    return subprocess.Popen(
        [sys.executable, "train_ae.py", *tiny_run_args(tiny_npz, run_dir, "--epochs", str(epochs))],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path, process, seconds=120):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None and time.monotonic() < deadline, f"no {path.name} appeared"
        time.sleep(0.2)


def test_a_held_folder_refuses_a_second_run_and_a_resume_and_sigterm_keeps_the_checkpoint(
        capsys, tiny_npz, tmp_path):
    run_dir = tmp_path / "run"
    training_process = start_training(run_dir, tiny_npz, epochs=200)
    # Meanwhile a process that only holds a lock, to be killed with SIGKILL.
    killed_dir = tmp_path / "killed"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time, run_lock\n"
                               "with run_lock.hold_run_folder(sys.argv[1]):\n"
                               "    print('held', flush=True); time.sleep(300)",
         str(killed_dir)], cwd=REPO, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "KERAS_BACKEND": "jax"})  # it needs no TensorFlow: start faster
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(run_lock.RunFolderBusy, match=f"in use by process {holder.pid} "):
            with run_lock.hold_run_folder(killed_dir):
                pass
        holder.kill()
        holder.wait(timeout=30)
        with run_lock.hold_run_folder(killed_dir):  # a killed run leaves no lock behind
            pass

        wait_for(run_dir / run_folder.CHECKPOINT_FILE, training_process)
        training_process.send_signal(signal.SIGSTOP)  # it keeps its lock, and writes nothing
        before = folder_digest(run_dir)
        for extra in ([], ["--resume"]):
            code = training.main("ae", tiny_run_args(tiny_npz, run_dir, "--epochs", "300",
                                                     *extra))
            assert_one_line_error(capsys, code, f"{run_dir} is in use by process "
                                                f"{training_process.pid} (python train_ae.py")
        assert folder_digest(run_dir) == before
        training_process.send_signal(signal.SIGCONT)
        training_process.send_signal(signal.SIGTERM)
        _, stderr = training_process.communicate(timeout=60)
    finally:
        for process in (training_process, holder):
            if process.poll() is None:
                process.kill()
    assert training_process.returncode == 143
    assert "Traceback" not in stderr
    last_line = stderr.strip().splitlines()[-1]
    assert "terminated (SIGTERM)" in last_line and f"--out {run_dir} --resume" in last_line
    saved = checkpoint_epoch(run_dir)
    assert 1 <= saved < 200 and history_epochs(run_dir) == saved
    assert training.main("ae", tiny_run_args(tiny_npz, run_dir, "--epochs", str(saved + 1),
                                             "--resume")) == 0
    assert checkpoint_epoch(run_dir) == saved + 1


def test_a_stop_signal_in_a_deferred_block_takes_effect_as_the_block_ends():
    went_on = False
    with pytest.raises(faults.Terminated), faults.sigterm_as_interrupt():
        with faults.stops_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)  # time enough for Python to run a handler
            went_on = True
    assert went_on


def test_sigterm_while_an_epoch_is_saved_leaves_its_checkpoint_and_history_alike(
        capsys, monkeypatch, tiny_npz, tmp_path):
    run_dir = tmp_path / "run"
    write_checkpoint = run_folder.write_checkpoint

    def write_then_stop(*args, **kwargs):  # SIGTERM lands between the checkpoint and history
        write_checkpoint(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)

    monkeypatch.setattr(run_folder, "write_checkpoint", write_then_stop)
    code = training.main("ae", tiny_run_args(tiny_npz, run_dir, "--epochs", "3"))
    assert code == faults.EXIT_TERMINATED
    assert "terminated (SIGTERM)" in one_stderr_line(capsys.readouterr())
    assert checkpoint_epoch(run_dir) == history_epochs(run_dir) == 1


@pytest.mark.parametrize("kind", ["vae", "ae"])
@pytest.mark.parametrize("latent_dim, image_shape", [(1, (28, 28, 1)), (3, (28, 28, 1)),
                                                     (2, (32, 24, 3))])
def test_the_paper_parameter_count_is_the_models(kind, latent_dim, image_shape):
    model = models.build_model(kind, latent_dim=latent_dim, image_shape=image_shape)
    assert memory_estimate.parameter_count(kind, latent_dim, image_shape) == model.count_params()


def test_memory_need_grows_with_latent_size_and_batch_and_is_compared_with_what_is_free():
    settings = training.run_settings.TrainingSettings()  # the default VAE run: about 47 MiB
    memory_estimate.refuse_if_too_big(settings, 10000, available=memory_estimate.GIB)
    with pytest.raises(training.run_settings.SettingsError,
                       match=r"needs about 47 MiB of memory .* but 10 MiB is available"):
        memory_estimate.refuse_if_too_big(settings, 10000, available=10 * 1024 ** 2)
    small = memory_estimate.bytes_needed("vae", 2, 32)
    assert memory_estimate.bytes_needed("vae", 100000, 32) > 200 * small
    assert memory_estimate.bytes_needed("vae", 2, 3200) > 50 * small
    # The batch is at most the training set: 64 images in batches of 10,000 are one batch of 64.
    memory_estimate.refuse_if_too_big(
        training.run_settings.TrainingSettings(batch_size=10 ** 9), 64,
        available=memory_estimate.bytes_needed("vae", 2, 64))


def test_a_size_that_cannot_fit_is_refused_before_training(capsys, tiny_npz, tmp_path):
    run_dir = tmp_path / "run"
    code = training.main("vae", tiny_run_args(tiny_npz, run_dir, "--latent-dim", "1000000000"))
    assert_one_line_error(capsys, code, "--latent-dim 1000000000 with --batch-size 32 needs about")
    assert not (run_dir / run_folder.CHECKPOINT_FILE).exists()
