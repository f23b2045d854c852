"""Data parallelism: keras.distribution.DataParallel on 2 virtual CPU devices, process roles, and
each process's share of the batches."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import scale_out
import settings as run_settings
import training
from conftest import REPO, tiny_run_args
from test_scripts import assert_one_line_error

SCRIPT = """
import json, sys
sys.path.insert(0, {repo!r})
import run_folder, training
npz, out = sys.argv[1:]
base = {base!r}
histories = {{}}
for name, extra in (("single", []), ("parallel", ["--data-parallel"])):
    assert training.main("vae", base + ["--out", f"{{out}}/{{name}}"] + extra) == 0
    histories[name] = run_folder.read_history_csv(f"{{out}}/{{name}}/history.csv")
print("HISTORIES " + json.dumps(histories))
"""


@pytest.mark.skipif(training.keras.backend.backend() != "jax",
                    reason="data parallelism needs JAX: .ci/run runs this file with "
                           "KERAS_BACKEND=jax")
def test_data_parallel_on_two_devices_matches_single_device(tiny_npz, tmp_path):
    # One epoch: later epochs drift apart by more than the batches explain (Adam turns
    # rounding-sized gradients into steps of the full rate; see test_scale_out).
    base = tiny_run_args(tiny_npz, "unused", "--epochs", "1")
    base = base[:base.index("--out")]
    script = tmp_path / "data_parallel.py"
    script.write_text(SCRIPT.format(repo=str(REPO), base=base))
    environment = {**os.environ, "KERAS_BACKEND": "jax",
                   "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    result = subprocess.run([sys.executable, str(script), str(tiny_npz), str(tmp_path / "runs")],
                            env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data parallel over 2 devices" in result.stdout
    histories = json.loads(result.stdout.split("HISTORIES ", 1)[1])
    single, parallel = histories["single"], histories["parallel"]
    for name in ("loss", "mse", "val_loss"):
        assert parallel[name] == pytest.approx(single[name], rel=0.01), name


def test_data_parallel_needs_jax(capsys, tiny_npz, tmp_path):
    if training.keras.backend.backend() == "jax":
        pytest.skip("this process runs JAX")
    code = training.main("vae", tiny_run_args(tiny_npz, tmp_path / "run", "--data-parallel"))
    assert_one_line_error(capsys, code, "--data-parallel needs the JAX backend")


def test_process_roles_come_from_flags_or_keras_environment_variables():
    def role(environ=None, **flags):
        settings = run_settings.TrainingSettings(**flags)
        return scale_out.process_role(settings, environ or {})

    assert role() == role(data_parallel=True) == scale_out.ProcessRole(0, 1, None)
    environ = {"KERAS_DISTRIBUTION_JOB_ADDRESSES": "10.0.0.1:1234",
               "KERAS_DISTRIBUTION_NUM_PROCESSES": "4", "KERAS_DISTRIBUTION_PROCESS_ID": "3"}
    assert role(environ) == scale_out.ProcessRole()  # no --data-parallel: the variables wait
    from_environment = role(environ, data_parallel=True)
    assert from_environment == scale_out.ProcessRole(3, 4, "10.0.0.1:1234")
    assert not from_environment.writes_run_folder
    assert role(environ, data_parallel=True, process_id=0).writes_run_folder  # flags win
    assert from_environment.share(32) == slice(24, 32)
    for flags, message in (({"num_processes": 2}, "only apply to --data-parallel"),
                           ({"data_parallel": True, "num_processes": 2}, "--job-addresses"),
                           ({"data_parallel": True, "num_processes": 2, "process_id": 2,
                             "job_addresses": "h:1"}, "not one of 0..1")):
        with pytest.raises(run_settings.SettingsError, match=message):
            role(**flags)


def test_each_process_reads_its_share_of_every_global_batch():
    images = np.arange(22, dtype="float32").reshape(22, 1, 1, 1)
    whole = training.ShuffledImageStream(images, batch_size=8, seed=3, whole_batches=True)
    assert whole.batches_per_epoch == 2  # 22 // 8: the 6 left over wait for a later epoch
    shares = [training.ShuffledImageStream(images, 8, 3, role=scale_out.ProcessRole(index, 2),
                                           whole_batches=True) for index in (0, 1)]
    for index in range(5):  # into the third epoch
        global_batch = whole[index][0].ravel()
        first, second = (share[index][0].ravel() for share in shares)
        assert len(first) == len(second) == 4
        np.testing.assert_array_equal(np.concatenate([first, second]), global_batch)
    # The test set: every process its half of each batch, the whole set once over both.
    test_shares = [training.ImageBatches(images[:20], 8, scale_out.ProcessRole(index, 2))
                   for index in (0, 1)]
    read = [np.concatenate([share[batch][0].ravel() for share in test_shares])
            for batch in range(len(test_shares[0]))]
    np.testing.assert_array_equal(np.concatenate(read), images[:20].ravel())
