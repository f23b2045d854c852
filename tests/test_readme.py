"""The README's "Use it from Python" snippet runs as written (on tiny data, in a run folder)."""

import re
import shutil

import keras
import numpy as np

from conftest import REPO


def readme_python_snippet():
    """The first ```python block under the README's "## Use it from Python" heading."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Use it from Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_the_use_it_from_python_snippet_runs(trained_runs, tiny_npz, tmp_path, monkeypatch):
    snippet = readme_python_snippet()
    # Only the data and the length of training change; each replacement must find its text,
    # so that a README edit that drops one fails here rather than going untested.
    for old, new in (("data.load_dataset()", f"data.load_dataset({str(tiny_npz)!r})"),
                     (".x_train, epochs=2", ".x_train[:64], epochs=1, verbose=0")):
        assert old in snippet, old
        snippet = snippet.replace(old, new)
    shutil.copytree(trained_runs / "vae", tmp_path / "runs" / "vae")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(snippet, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["codes"].shape == (8, 2)
    assert namespace["pictures"].shape == namespace["images"].shape == (8, 28, 28, 1)
    assert namespace["samples"].shape == (16, 28, 28, 1)
    assert namespace["errors"].shape == (8,) and np.all(namespace["errors"] >= 0)
    np.testing.assert_allclose(namespace["maps"].sum(axis=(1, 2)), namespace["errors"], rtol=1e-5)
    assert namespace["percentiles"].shape == (8,)
    assert np.all((0 <= namespace["percentiles"]) & (namespace["percentiles"] <= 100))
    vae = namespace["vae"]  # the run stored its threshold, and the flags follow it
    np.testing.assert_array_equal(namespace["is_anomaly"],
                                  namespace["errors"] > vae.anomaly_threshold)
    steps = keras.ops.convert_to_numpy(namespace["model"].optimizer.iterations)
    assert steps == 2  # 64 images at batch 32: the snippet trained
