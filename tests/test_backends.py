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
folder = sys.argv[1]
images = np.load(folder + "/images.npy")
for kind in sys.argv[2:]:
    model = models.build_model(kind, seed=1)
    model.load_weights(f"{{folder}}/{{kind}}.weights.h5")
    latents = model.encode(images)
    np.savez(f"{{folder}}/{{kind}}-out.npz", latents=latents, decoded=model.decode(latents))
"""
KINDS = ("vae", "ae")


@pytest.mark.parametrize("backend", sorted(BACKEND_PACKAGES))
def test_weights_reload_under_another_backend(backend, tmp_path):
    # One process per backend reloads both models: a Keras start-up costs more than a model.
    if backend == keras.backend.backend():
        pytest.skip("same backend as this process; covered by test_models")
    if importlib.util.find_spec(BACKEND_PACKAGES[backend]) is None:
        pytest.skip(f"{backend} is not installed (pip install -r requirements-backends.txt)")
    images = np.random.default_rng(0).random((8, 28, 28, 1)).astype("float32")
    np.save(tmp_path / "images.npy", images)
    saved = {kind: models.build_model(kind, seed=1) for kind in KINDS}
    for kind, model in saved.items():
        run_folder.save_weights(model, tmp_path / f"{kind}.weights.h5")
    script = tmp_path / "reload.py"
    script.write_text(RELOAD_SCRIPT.format(repo=str(REPO)))
    result = subprocess.run([sys.executable, str(script), str(tmp_path), *KINDS],
                            env={**os.environ, "KERAS_BACKEND": backend},
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    for kind, model in saved.items():
        reloaded = np.load(tmp_path / f"{kind}-out.npz")
        latents = model.encode(images)
        np.testing.assert_allclose(reloaded["latents"], latents, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(reloaded["decoded"], model.decode(latents), rtol=1e-4, atol=1e-5)
