"""Shared fixtures: the repo on sys.path, a tiny MNIST file, and a clean Keras state per test."""

import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import data  # noqa: E402
import precision_policy  # noqa: E402

TINY_TRAIN = 256
TINY_TEST = 128

# The AVX2 imitation (an ONEDNN_MAX_CPU_ISA cap below bfloat16 on a CPU that has it): TensorFlow
# still reads bfloat16 in the CPU's flags and hands oneDNN bfloat16 kernels, which the cap
# refuses ("could not create a primitive descriptor"). Tests that train in bfloat16 skip there.
needs_bfloat16_kernels = pytest.mark.skipif(
    os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in precision_policy.ISA_CAPS_WITHOUT_BFLOAT16,
    reason="ONEDNN_MAX_CPU_ISA caps oneDNN below bfloat16, and TensorFlow does not know it")


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="session")
def mnist_arrays():
    """The bundled real MNIST subset, as raw uint8 arrays."""
    with np.load(data.BUNDLED_MNIST) as archive:
        return {key: archive[key] for key in data.NPZ_KEYS}


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory, mnist_arrays):
    """A small real-MNIST .npz: 256 training and 128 test images, all ten digits."""
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    return write_npz(path,
                     x_train=mnist_arrays["x_train"][:TINY_TRAIN],
                     y_train=mnist_arrays["y_train"][:TINY_TRAIN],
                     x_test=mnist_arrays["x_test"][:TINY_TEST],
                     y_test=mnist_arrays["y_test"][:TINY_TEST])


@pytest.fixture(autouse=True)
def clean_keras_state():
    """Each test starts in float32 with a fresh Keras session (training may change the policy)."""
    keras.mixed_precision.set_global_policy("float32")
    keras.backend.clear_session()
    yield
    keras.mixed_precision.set_global_policy("float32")


def tiny_run_args(npz, out, *extra):
    """Command-line flags for a one-epoch float32 run on the tiny data set."""
    return ["--data", str(npz), "--train-limit", str(TINY_TRAIN), "--epochs", "1",
            "--batch-size", "32", "--precision", "float32", "--verbose", "0", "--out", str(out),
            *extra]


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory, tiny_npz):
    """One tiny VAE and one tiny AE run folder (seed 0), trained once for the whole session.

    Tests may add analysis outputs to them, but copy a folder before spoiling it.
    """
    import training

    root = tmp_path_factory.mktemp("runs")
    for kind in ("vae", "ae"):
        assert training.main(kind, tiny_run_args(tiny_npz, root / kind)) == 0
    return root
