"""The exported detector: a run's anomaly scorer as one ONNX file that runs without this repository.

    export(model, path)   writes the ONNX model that `detect.py RUN --export FILE.onnx` gives

The ONNX model takes `images`, float32 (N, H, W, C) in [0, 1], and returns
`scores` (N,), the run's anomaly scores (`model.anomaly_scores`), and `maps`
(N, H, W), where each score comes from (`model.anomaly_maps`). Its metadata
(ONNX `metadata_props`, strings; lists and numbers as JSON) holds what turns a
score into a verdict and a percentile:

    threshold              a score above it is an anomaly
    threshold_percentile   the percentile of the training scores the threshold is
    score_quantiles        the training scores at score_percentiles ...
    score_percentiles      ... 0, 0.1, ..., 100, so that np.interp(score, quantiles,
                           percentiles, left=0, right=100) is the CSV's percentile column
    image_shape            [H, W, C] the model takes
    anomaly_score          "relative" or "mse" (models.ANOMALY_SCORES)
    model                  "VAE" or "AE"

examples/onnx_detect.py reads it with numpy, Pillow and onnxruntime alone.

The route is Keras' own `model.export(format="onnx")`: under the TensorFlow
backend, which detect.py runs under, it traces the model with tf.function and
converts it with tf2onnx. tf2onnx is tested only up to TensorFlow 2.15, but its
1.17.0 converts this model's operations under TensorFlow 2.21 and onnxruntime
gives the same scores as Keras (docs/own-images.md, "Deploying the detector").
"""

import contextlib
import json
import pathlib
import sys
import tempfile
import warnings

import keras
import numpy as np
import onnx

import atomic_files
import models

INPUT_NAME = "images"
OUTPUT_NAMES = ("scores", "maps")


def detector_model(model):
    """A functional model of the run's deterministic scoring: images -> {"scores", "maps"}.

    The same layers and loss functions as `model.anomaly_scores` and
    `model.anomaly_maps`: the encoder's mean (VAE) or code (AE), decoded, then
    compared with the image.
    """
    images = keras.Input(shape=tuple(model.image_shape), name=INPUT_NAME)  # (N, H, W, C)
    codes = model.encoder(images)
    if model.variational:
        codes = codes[0]  # the latent mean, not a sample: (N, latent_dim)
    reconstructions = model.decoder(codes)  # (N, H, W, C)
    scores = models.ANOMALY_SCORES[model.anomaly_score](images, reconstructions)  # (N,)
    maps = models.ANOMALY_MAPS[model.anomaly_score](images, reconstructions)  # (N, H, W)
    detector = keras.Model(images, {"scores": scores, "maps": maps}, name="detector")
    # Keras exports only a model that has been called once.
    detector(np.zeros((1, *model.image_shape), dtype="float32"))
    return detector


def metadata(model):
    """The ONNX model's metadata_props: the threshold and what the CSV columns need."""
    return {
        "threshold": json.dumps(model.anomaly_threshold),
        "threshold_percentile": json.dumps(model.threshold_percentile),
        "score_quantiles": json.dumps(model.score_quantiles),
        "score_percentiles": json.dumps([float(value) for value in models.SCORE_PERCENTILES]),
        "image_shape": json.dumps(list(model.image_shape)),
        "anomaly_score": model.anomaly_score,
        "model": "VAE" if model.variational else "AE",
    }


def export(model, path):
    """Writes `model`'s detector to `path` as ONNX, atomically, with `metadata(model)`.

    The model must have its threshold and score quantiles (see
    `detection.threshold_of`).

    Raises:
        atomic_files.WriteError: if `path` cannot be written.
    """
    with tempfile.TemporaryDirectory() as folder:
        exported = pathlib.Path(folder) / "detector.onnx"
        # Keras announces the file on stdout, where detect.py writes its CSV; tf2onnx warns
        # about NumPy names it probes for.
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            detector_model(model).export(str(exported), format="onnx", verbose=False)
        proto = onnx.load(str(exported))
    for key, value in metadata(model).items():
        proto.metadata_props.add(key=key, value=value)
    atomic_files.write_bytes(path, proto.SerializeToString())
