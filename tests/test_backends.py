"""A model saved under one Keras backend reloads under the others with the same outputs.

The other backends run in subprocesses (a process has one Keras backend). A
backend whose package is not installed is skipped with the reason.
"""

import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import models
import run_folder
from conftest import REPO

BACKEND_PACKAGES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}

RELOAD_SCRIPT = """
import sys
import numpy as np
sys.path.insert(0, {repo!r})
import models
kind, weights, images, out = sys.argv[1:]
model = models.build_model(kind, seed=1)
model.load_weights(weights)
images = np.load(images)
latents = model.encode(images)
np.savez(out, latents=latents, decoded=model.decode(latents))
"""


@pytest.mark.parametrize("kind", ["vae", "ae"])
@pytest.mark.parametrize("backend", sorted(BACKEND_PACKAGES))
def test_weights_reload_under_another_backend(kind, backend, tmp_path):
    if backend == keras.backend.backend():
        pytest.skip("same backend as this process; covered by test_models")
    if importlib.util.find_spec(BACKEND_PACKAGES[backend]) is None:
        pytest.skip(f"{backend} is not installed (pip install -r requirements-backends.txt)")
    model = models.build_model(kind, seed=1)
    images = np.random.default_rng(0).random((8, 28, 28, 1)).astype("float32")
    run_folder.save_weights(model, tmp_path / "model.weights.h5")
    np.save(tmp_path / "images.npy", images)
    script = tmp_path / "reload.py"
    script.write_text(RELOAD_SCRIPT.format(repo=str(REPO)))
    result = subprocess.run(
        [sys.executable, str(script), kind, str(tmp_path / "model.weights.h5"),
         str(tmp_path / "images.npy"), str(tmp_path / "out.npz")],
        env={**os.environ, "KERAS_BACKEND": backend},
        capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    reloaded = np.load(tmp_path / "out.npz")
    latents = model.encode(images)
    np.testing.assert_allclose(reloaded["latents"], latents, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(reloaded["decoded"], model.decode(latents), rtol=1e-4, atol=1e-5)
