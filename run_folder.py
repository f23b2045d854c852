"""A run folder: everything one training run writes, and how to rebuild its model.

    runs/vae/
        config.json          model kind and config, the run's settings, data used
        model.keras          the whole model: keras.saving.load_model after `import models`
        model.weights.h5     the trained weights (Keras 3 format)
        history.csv          one row per epoch: loss, mse, kl and their val_ twins
        checkpoint.npz       the last finished epoch, for --resume: weights, optimizer
                             state, sampling-noise state, epoch number, history, settings
        loss_curve.png       the history, plotted

Every file is written atomically (`atomic_files.py`): first to a temporary file
in the same folder, then renamed over the old one, so an interrupted run never
leaves a half-written file and never damages a file written before.
"""

import csv
import dataclasses
import json
import math
import os
import pathlib
import tempfile
import warnings
import zipfile

import numpy as np

import losses
import models
import settings as run_settings
from atomic_files import atomic_path, write_bytes, write_json, write_text  # noqa: F401 (API)

CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"
WEIGHTS_FILE = "model.weights.h5"
HISTORY_FILE = "history.csv"
CHECKPOINT_FILE = "checkpoint.npz"
WEIGHTS_FILE_IN_MODEL_ARCHIVE = "model.weights.h5"  # Keras' name inside a .keras zip


class RunFolderError(ValueError):
    """An unusable run folder: the message names the problem and the fix."""


def write_history_csv(path, history):
    """Writes a Keras history dict ({metric: [value per epoch]}) as CSV, one row per epoch."""
    columns = sorted(history)
    epochs = len(history[columns[0]]) if columns else 0
    rows = [",".join(["epoch"] + columns)]
    # An epoch without a test evaluation (--test-every) has NaN there: an empty cell.
    rows += [",".join([str(epoch + 1)] + ["" if math.isnan(value) else repr(value)
                                          for value in (float(history[column][epoch])
                                                        for column in columns)])
             for epoch in range(epochs)]
    write_text(path, "\n".join(rows) + "\n")


def read_history_csv(path):
    """Reads `write_history_csv`'s file back into {metric: [value per epoch]}."""
    with open(path, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    if not rows:
        return {}
    return {column: [float(row[column]) if row[column] else math.nan for row in rows]
            for column in rows[0] if column != "epoch"}


def save_weights(model, path):
    with atomic_path(path) as temporary:
        model.save_weights(temporary)


def save_model(model, path):
    with atomic_path(path) as temporary:
        model.save(temporary)


def write_run(run_dir, model, config):
    """Writes a finished run: the model (as .keras and as weights), then its config.json.

    The old config goes first and the new one last, so a folder with a
    config.json always holds the model that matches it.

    The weights file is copied out of model.keras, which holds the same
    `model.weights.h5`, rather than written by h5py: h5py writing to a full
    disk prints tracebacks from its destructors besides raising, and a plain
    file write fails with one `OSError`.
    """
    run_dir = pathlib.Path(run_dir)
    (run_dir / CONFIG_FILE).unlink(missing_ok=True)
    save_model(model, run_dir / MODEL_FILE)
    with zipfile.ZipFile(run_dir / MODEL_FILE) as archive:
        weights = archive.read(WEIGHTS_FILE_IN_MODEL_ARCHIVE)
    write_bytes(run_dir / WEIGHTS_FILE, weights)
    write_json(run_dir / CONFIG_FILE, config)


def prepare_output_folder(path):
    """Creates the output folder, or raises RunFolderError if it can't be written."""
    path = pathlib.Path(path)
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"output path {path} is a file, not a folder: "
                             f"choose another --out or remove that file")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise RunFolderError(f"cannot write to output folder {path} ({error.strerror}): "
                             f"choose another --out") from None
    return path


def read_config(run_dir):
    """Reads a run folder's config.json; raises RunFolderError if it is missing or broken."""
    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(run_settings.missing_run_folder(run_dir))
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise RunFolderError(f"run folder {run_dir} has no {CONFIG_FILE}: "
                             f"it is not a finished training run; train again into it")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["model"], config["model_config"]
        if "settings" not in config:
            config = _upgrade_config(config)
        config["settings"] = run_settings.TrainingSettings.from_dict(
            config["settings"], config["model"], config_path)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise RunFolderError(f"{config_path} is not a valid run config ({error!r}): "
                             f"train again, or restore the file") from None
    return config


def _upgrade_config(config):
    """A config.json written before the settings dataclass, in today's layout.

    Those kept the settings and the run's facts together under "training", and
    the VAE's reconstruction weight only there.
    """
    training = config.get("training", {})
    names = {field.name for field in dataclasses.fields(run_settings.TrainingSettings)}
    config = dict(config, settings={name: value for name, value in training.items()
                                    if name in names and value is not None})
    if config["model"] == "vae" and "reconstruction_weight" not in config["model_config"]:
        stored_weight = training.get("reconstruction_weight")
        config["model_config"] = dict(config["model_config"], reconstruction_weight=(
            losses.DEFAULT_RECONSTRUCTION_WEIGHT if stored_weight is None else stored_weight))
    return config


def load_model(run_dir):
    """Rebuilds the model of a run folder from its config and loads its weights.

    This works for every run folder, also those written before runs saved
    `model.keras`; `config["settings"]` is a `settings.TrainingSettings`.

    Returns:
        `(model, config)`.

    Raises:
        RunFolderError: if the config or the weights are missing, broken, or
            don't match each other.
    """
    run_dir = pathlib.Path(run_dir)
    config = read_config(run_dir)
    if config["model"] not in models.MODEL_CLASSES:
        raise RunFolderError(f"{run_dir / CONFIG_FILE} names model {config['model']!r}; "
                             f"expected one of {sorted(models.MODEL_CLASSES)}")
    weights_path = run_dir / WEIGHTS_FILE
    if not weights_path.is_file():
        raise RunFolderError(f"run folder {run_dir} has no {WEIGHTS_FILE}: "
                             f"training did not finish; train again into it")
    try:
        model = models.build_model(config["model"], **config["model_config"])
    except (TypeError, ValueError) as error:
        raise RunFolderError(f"{run_dir / CONFIG_FILE} cannot build a model ({error}): "
                             f"restore the file or train again") from None
    try:
        # Keras only warns when it skips part of the file and leaves those layers
        # freshly initialized; for us that is a mismatch like any other.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.load_weights(weights_path)
        skipped = [str(warning.message) for warning in caught if "Skipping" in str(warning.message)]
        if skipped:
            raise ValueError(skipped[0])
    except Exception as error:  # h5py and Keras raise many kinds on a bad file
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RunFolderError(f"{weights_path} does not fit the model in {CONFIG_FILE} "
                             f"({first_line[:160]}): the weights are truncated, or the "
                             f"config was edited; train again") from None
    return model, config


def write_checkpoint(path, weights, optimizer_variables, rng_states, state):
    """Writes one checkpoint file atomically: all arrays and a JSON `state` together.

    One file, so weights, optimizer state and epoch number can never disagree.

    Args:
        weights: `model.get_weights()`.
        optimizer_variables: the optimizer's variable values, in its order.
        rng_states: the states of the model's random seed generators.
        state: JSON-serializable dict (epoch, history, settings).
    """
    arrays = {"state": np.array(json.dumps(state))}
    for prefix, values in (("weight", weights), ("optimizer", optimizer_variables),
                           ("rng", rng_states)):
        arrays.update({f"{prefix}_{index:04d}": np.asarray(value)
                       for index, value in enumerate(values)})
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as file:
            np.savez(file, **arrays)
            file.flush()
            os.fsync(file.fileno())


def read_checkpoint(path):
    """Reads `write_checkpoint`'s file; raises RunFolderError if it is missing or broken.

    Returns:
        `(state, weights, optimizer_variables, rng_states)`.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise RunFolderError(f"there is no checkpoint {path} to resume: "
                             f"train without --resume, or give the --out of an earlier run")
    try:
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as archive:
            state = json.loads(str(archive["state"]))
            groups = {prefix: [archive[name] for name in sorted(archive.files)
                               if name.startswith(prefix + "_")]
                      for prefix in ("weight", "optimizer", "rng")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise RunFolderError(f"checkpoint {path} is unreadable ({error}): "
                             f"train again without --resume") from None
    return state, groups["weight"], groups["optimizer"], groups["rng"]
