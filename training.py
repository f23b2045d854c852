"""The training run that train_vae.py and train_ae.py share: data in, a run folder out.

    settings (settings.TrainingSettings) -> train(settings) -> runs/<model>/

A run compiles the model with Adam (the model computes its own loss), trains it
on an endless shuffled stream so that a resumed run sees exactly the batches an
uninterrupted one would, checkpoints every finished epoch, and writes the run
folder that `run_folder` describes.
"""

import importlib.util
import math
import pathlib
import sys
import time

import keras
import numpy as np

import atomic_files
import data
import faults
import memory_estimate
import models
import plots
import precision_policy
import run_folder
import run_lock
import scale_out
import settings as run_settings

TENSORBOARD_FOLDER = "tensorboard"

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf  # for the in-graph input pipeline (see as_fit_data)


def resolve_precision(precision):
    """The Keras dtype policy that `--precision` names; "auto" decides from the device that
    trains (see precision_policy.py)."""
    if precision != "auto":
        return precision
    return precision_policy.choose_precision(precision, precision_policy.training_device())


def learning_rate_schedule(settings, train_images):
    """The learning rate, or a Keras schedule of it, that `settings.lr_schedule` asks for."""
    steps_per_epoch = math.ceil(train_images / settings.batch_size)
    warmup_steps = min(settings.warmup_epochs, settings.epochs) * steps_per_epoch
    if settings.lr_schedule == "constant" and not warmup_steps:
        return settings.learning_rate
    # CosineDecay warms up linearly from its initial rate to warmup_target, then decays to
    # alpha * warmup_target; alpha=1 keeps the rate constant after the warm-up.
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup_steps else settings.learning_rate,
        decay_steps=max(settings.epochs * steps_per_epoch - warmup_steps, 1),
        alpha=1.0 if settings.lr_schedule == "constant" else 0.0,
        warmup_target=settings.learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps)


def compile_model(model, learning_rate=5e-4):
    """Compiles a VAE or AE with Adam; the model computes its own loss (see models.py).

    The optimizer's variables are made here, as Keras does when it loads a
    compiled model, not in `fit`'s first step: under TensorFlow a first step
    that makes variables is traced twice, which costs seconds per run.
    """
    model.compile(optimizer=keras.optimizers.Adam(learning_rate))
    model.optimizer.build(model.trainable_variables)
    return model


def test_epochs(epochs, test_every):
    """The epochs (1-based) after which fit evaluates the test set: every N-th, and the last."""
    return sorted({*range(test_every, epochs + 1, test_every), epochs})


class TrainingStopped(Exception):
    """Training ended early (NaN loss); the message says why and what to do."""


class RunRecorder(keras.callbacks.Callback):
    """After each finished epoch: append to the history, rewrite history.csv and the checkpoint.

    Both files are written atomically (a new file renamed over the old), so an
    interrupt never leaves a torn file: Keras' CSVLogger appends in place.
    The checkpoint goes first: if its write fails (a full disk), history.csv
    is not touched, so it never claims an epoch that the checkpoint lacks.
    An epoch whose loss is NaN or infinite is not recorded, so the checkpoint
    always holds the last good epoch.

    Args:
        out_dir: the run folder.
        history: the history so far ({name: [value per epoch]}), empty for a new run.
        settings: the run's settings, stored in the checkpoint for --resume.
        writes_files: False in the processes of a multi-process run other than
            process 0: they keep the history and write nothing.
    """

    def __init__(self, out_dir, history, settings, writes_files=True):
        super().__init__()
        self.out_dir = pathlib.Path(out_dir)
        self.history = history
        self.settings = settings
        self.writes_files = writes_files

    @property
    def epochs_done(self):
        return len(self.history.get("loss", []))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not all(math.isfinite(float(value)) for value in logs.values()):
            return
        done = self.epochs_done
        for name, value in logs.items():
            # A test metric first seen after epochs without a test evaluation starts with NaNs.
            self.history.setdefault(name, [math.nan] * done).append(float(value))
        for values in self.history.values():  # and one missing now (--test-every) gets a NaN
            values.extend([math.nan] * (done + 1 - len(values)))
        if not self.writes_files:
            return
        optimizer_variables = [keras.ops.convert_to_numpy(variable)
                               for variable in self.model.optimizer.variables]
        rng = [keras.ops.convert_to_numpy(state) for state in rng_states(self.model)]
        with faults.stops_deferred():  # a stop now comes after both files, not between them
            run_folder.write_checkpoint(
                self.out_dir / run_folder.CHECKPOINT_FILE, self.model.get_weights(),
                optimizer_variables, rng,
                {"epoch": self.epochs_done, "history": self.history, "settings": self.settings})
            run_folder.write_history_csv(self.out_dir / run_folder.HISTORY_FILE, self.history)


def rng_states(model):
    """The state variables of the model's random seed generators (the VAE's sampling noise)."""
    return [layer.seed_generator.state for layer in model.encoder.layers
            if isinstance(layer, models.Sampling)]


def restore_checkpoint(model, weights, optimizer_variables, saved_rng_states):
    """Puts a checkpoint's weights, optimizer state and noise state back into a model from
    `compile_model`, whose optimizer variables already exist."""
    model.set_weights(weights)
    for variable, value in zip(model.optimizer.variables, optimizer_variables, strict=True):
        variable.assign(value)
    for variable, value in zip(rng_states(model), saved_rng_states, strict=True):
        variable.assign(value)


class ShuffledImageStream(keras.utils.PyDataset):
    """An endless stream of `(images, images)` batches, each epoch shuffled by (seed, epoch).

    Batch `index` of the stream is batch `index % batches_per_epoch` of epoch
    `first_epoch + index // batches_per_epoch`, in an order drawn from
    `numpy.random.default_rng([seed, epoch])`. Every batch is a pure function
    of its index, so a resumed run sees exactly the batches an uninterrupted
    run would have. Give `fit` `steps_per_epoch=stream.batches_per_epoch`.

    Why endless: `fit` then keeps one data iterator for the whole run. With a
    finite dataset the TensorFlow backend makes a new tf.data iterator each
    epoch, and tearing the old one down waits for tf.data's autotuning thread,
    which stalled about half the epochs by about 5 s on a 2-core CPU.

    Args:
        images: float32 array in [0, 1] or uint8 pixels, shape (N, height, width, channels).
        batch_size: images per batch (the global batch, over all processes).
        seed: the run's seed.
        first_epoch: the epoch (0-based) that the stream starts with.
        role: a `scale_out.ProcessRole`; each batch holds only this process's
            share of the global batch. Default: the only process.
        whole_batches: False: the last batch of an epoch may be smaller; True
            (data-parallel runs, whose batches must split evenly over the
            devices): each epoch reads `N // batch_size` full batches, and the
            images left over in that epoch's order wait for a later epoch.
    """

    def __init__(self, images, batch_size, seed, first_epoch=0, role=scale_out.ProcessRole(),
                 whole_batches=False):
        super().__init__()
        self.images = images
        self.batch_size = batch_size
        self.seed = seed
        self.first_epoch = first_epoch
        self.role = role
        self.batches_per_epoch = (len(images) // batch_size if whole_batches
                                  else math.ceil(len(images) / batch_size))
        self._epoch_order = (None, None)  # (epoch, permutation) of the last batch read

    @property
    def num_batches(self):
        return None  # endless

    def epoch_order(self, epoch):
        """The permutation of the training images that epoch `epoch` (0-based) reads."""
        cached_epoch, order = self._epoch_order
        if cached_epoch != epoch:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.images))
            self._epoch_order = (epoch, order)  # one assignment: safe if read from a thread
        return order

    def epoch_indices(self, epoch):
        """This process's image indices in epoch `epoch` (0-based), in the order its batches read them.

        Batch `step` of the epoch is the next `share_size` of them (fewer for the
        last batch of an epoch that does not split evenly).
        """
        order = self.epoch_order(epoch)[:self.batches_per_epoch * self.batch_size]
        return _process_shares(order, self.batch_size, self.role)

    @property
    def share_size(self):
        """Images per batch that this process feeds (the global batch over the processes)."""
        return self.batch_size // self.role.count

    def __getitem__(self, index):
        epoch_offset, step = divmod(index, self.batches_per_epoch)
        order = self.epoch_order(self.first_epoch + epoch_offset)
        indices = order[step * self.batch_size:(step + 1) * self.batch_size]
        batch = self.images[indices[self.role.share(len(indices))]]
        return batch, batch  # an autoencoder's target is its input


def _process_shares(order, batch_size, role):
    """The indices of `order` that `role` feeds, batch after batch of `batch_size`.

    Each share is `len(batch) // role.count` long: `batch_size // role.count`
    for every whole batch and no more for the last, so batching the result by
    `batch_size // role.count` gives back this process's share of each batch.
    """
    if role.count == 1:
        return order
    batches = (order[start:start + batch_size] for start in range(0, len(order), batch_size))
    return np.concatenate([batch[role.share(len(batch))] for batch in batches])


def as_fit_data(batches):
    """What to give `fit` for a `PyDataset`: itself, or under TensorFlow a tf.data pipeline.

    Under TensorFlow the batches are gathered in the graph from the in-memory
    images (`tf.gather` by index), so no Python code runs per batch: Python
    computes each epoch's order once (a `tf.numpy_function` over an epoch
    counter), from the same `epoch_order` that `__getitem__` reads, so the
    batches (and an exact resume) are the same. Not `Dataset.from_generator`:
    on a 2-core AVX2 CPU its machinery cost 15 times the kernel time of the
    whole training and halved the images per second (docs/performance.md).
    The pipeline's autotuning is off: destroying an autotuned pipeline waits
    for its autotuning thread, whose period doubles up to 60 s, which stalled
    each epoch's or evaluation's iterator for about 5 s, and the end of a
    long run, or Ctrl-C, for up to a minute. JAX and PyTorch read the
    `PyDataset` directly.

    Args:
        batches: a `ShuffledImageStream` (endless) or `ImageBatches` (finite).

    Returns:
        An iterable of `(images, images)` batches for `fit`.
    """
    if keras.backend.backend() != "tensorflow":
        return batches
    images = tf.convert_to_tensor(batches.images)  # (N, height, width, channels), held once
    if batches.num_batches is None:  # endless: one Python call per epoch, for its order
        orders = tf.data.Dataset.counter(batches.first_epoch).map(
            lambda epoch: _epoch_indices_in_graph(batches, epoch))
        indices = orders.flat_map(
            lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batches.share_size))
    else:
        indices = tf.data.Dataset.from_tensor_slices(batches.indices()).batch(batches.share_size)
    # uint8 images become float32 here, on the pipeline's thread, ahead of the training step.
    dataset = indices.map(lambda index: _pair(models.unit_range(tf.gather(images, index))))
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(2).with_options(options)


def _epoch_indices_in_graph(stream, epoch):
    """`stream.epoch_indices(epoch)` as a graph op: shape (images read in the epoch,), int64."""
    indices = tf.numpy_function(lambda epoch: stream.epoch_indices(int(epoch)).astype("int64"),
                                [epoch], tf.int64, stateful=False)
    indices.set_shape((None,))
    return indices


def _pair(images):
    return images, images  # an autoencoder's target is its input


class ImageBatches(keras.utils.PyDataset):
    """`(images, images)` batches in order, for evaluating on a fixed set.

    Give it to `fit` through `as_fit_data`, which avoids a multi-second stall
    at the end of each evaluation under TensorFlow.

    Args:
        images: float32 array in [0, 1] or uint8 pixels, shape (N, height, width, channels).
        batch_size: images per batch; the last batch may be smaller.
        role: a `scale_out.ProcessRole`; each batch holds only this process's share.
    """

    def __init__(self, images, batch_size, role=scale_out.ProcessRole()):
        super().__init__()
        self.images = images
        self.batch_size = batch_size
        self.role = role

    def __len__(self):
        return math.ceil(len(self.images) / self.batch_size)

    @property
    def share_size(self):
        """Images per batch that this process feeds."""
        return self.batch_size // self.role.count

    def indices(self):
        """This process's image indices, batch after batch (see `_process_shares`)."""
        return _process_shares(np.arange(len(self.images)), self.batch_size, self.role)

    def __getitem__(self, index):
        batch = self.images[index * self.batch_size:(index + 1) * self.batch_size]
        batch = batch[self.role.share(len(batch))]
        return batch, batch


def build_model(settings, image_shape=models.IMAGE_SHAPE):
    """The model that `settings` describe, for images of `image_shape` (H, W, C)."""
    config = {"latent_dim": settings.latent_dim, "seed": settings.seed,
              "batch_norm": settings.batch_norm, "image_shape": tuple(image_shape),
              "upsampling": settings.upsampling, "anomaly_score": settings.anomaly_score}
    if settings.model == "vae":
        config["reconstruction_weight"] = settings.reconstruction_weight
    try:
        return models.build_model(settings.model, **config)
    except ValueError as error:  # e.g. --batch-norm fused under a backend without the kernel
        raise run_settings.SettingsError(str(error)) from None


def load_data(settings, keep_uint8=False):
    """The data set that `settings` name, checked against what the model can take.

    With `keep_uint8` (as training loads it), 8-bit images stay uint8 in memory
    and the model converts each batch (`models.unit_range`); else the images are
    float32 in [0, 1].
    """
    dataset = data.load_dataset(settings.data, settings.dataset, settings.image_size,
                                settings.color_mode, settings.validation_split, settings.seed,
                                keep_uint8)
    data.check_image_size(dataset.image_shape, models.image_size_multiple())
    return dataset


def training_images(settings, dataset, limit_given=True):
    """The images a run trains on: the first --train-limit, then only --digits' classes.

    A --train-limit that was not given is an upper bound, so that the default
    run works on data sets smaller than the original's 10,000 images.
    """
    limit = settings.train_limit
    if not limit_given:
        limit = min(limit, len(dataset.x_train))
    return data.select_training_images(
        dataset.x_train, dataset.y_train, limit, settings.digits,
        len(dataset.class_names) if dataset.labelled else 0)


def set_anomaly_threshold(model, train_images, percentile):
    """Stores in `model` the threshold detect.py uses: a percentile of the training errors.

    The errors are those of the saved model as detect.py and analysis.py load
    it, in float32, whatever precision trained it.
    """
    policy = keras.mixed_precision.global_policy()
    if policy.name == "float32":  # the trained model is already the saved one
        return model.set_anomaly_threshold(train_images, percentile)
    keras.mixed_precision.set_global_policy("float32")
    try:
        saved = models.build_model(model.__class__.__name__.lower(), **model.get_config())
        saved.set_weights(model.get_weights())
        threshold = saved.set_anomaly_threshold(train_images, percentile)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    model.anomaly_threshold, model.threshold_percentile = threshold, saved.threshold_percentile
    model.score_quantiles = saved.score_quantiles
    return threshold


def train(settings, given=frozenset(), callbacks=()):
    """Trains one model as `settings` say and writes its run folder. Returns the folder.

    Args:
        settings: a `settings.TrainingSettings`.
        given: names of the flags given on the command line; with
            `settings.resume`, these may change the run's saved learning rate
            and epochs, and no other setting.
        callbacks: more Keras callbacks for `fit`, after the run's own (a
            benchmark's clock, say).
    """
    if settings.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise run_settings.SettingsError("--tensorboard needs the tensorboard package: "
                                         "pip install tensorboard, or train without it")
    role = scale_out.process_role(settings)
    out_dir = (run_folder.prepare_output_folder(settings.out) if role.writes_run_folder
               else pathlib.Path(settings.out))
    history, checkpoint = {}, None
    if settings.resume:
        state, *checkpoint = run_folder.read_checkpoint(out_dir / run_folder.CHECKPOINT_FILE)
        history = state["history"]
        saved = run_settings.TrainingSettings.from_dict(
            state["settings"], settings.model, out_dir / run_folder.CHECKPOINT_FILE)
        settings = run_settings.resumed_settings(saved, settings, given)
        # A run stopped after its last epoch but before its run folder was written
        # (a full disk, SIGTERM) resumes to write it.
        finished = (out_dir / run_folder.CONFIG_FILE).is_file()
        if settings.epochs < state["epoch"] or (settings.epochs == state["epoch"] and finished):
            raise run_folder.RunFolderError(
                f"{out_dir} has already trained {state['epoch']} epochs: "
                f"give --epochs above {state['epoch']} to train on")
        print(f"resuming {out_dir} after epoch {state['epoch']}, with the run's saved settings")
    dataset = load_data(settings, keep_uint8=True)
    train_images, _ = training_images(settings, dataset, "train_limit" in given)
    print(dataset.describe())
    if dataset.labelled and dataset.class_title != "digit":
        print("classes: " + ", ".join(f"{index} {name}"
                                      for index, name in enumerate(dataset.class_names)))
    chosen = (f" of {dataset.class_title}s " + ", ".join(dataset.class_names[index]
                                                         for index in settings.digits)
              if settings.digits else "")
    print(f"training on {len(train_images):,} images{chosen}")
    memory_estimate.refuse_if_too_big(settings, len(train_images), dataset.image_shape)

    keras.utils.set_random_seed(settings.seed)
    devices = 1
    if settings.data_parallel:
        devices = scale_out.start_data_parallel(role, settings.batch_size, len(train_images))
    precision = resolve_precision(settings.precision)
    settings = run_settings.recipe_for_policy(settings, precision, given)
    keras.mixed_precision.set_global_policy(precision)
    model = compile_model(build_model(settings, dataset.image_shape),
                          learning_rate_schedule(settings, len(train_images)))
    if settings.verbose == 1:
        model.encoder.summary()
        model.decoder.summary()
    if checkpoint:
        restore_checkpoint(model, *checkpoint)
    recorder = RunRecorder(out_dir, history, settings.to_dict(), role.writes_run_folder)
    print(f"{settings.model.upper()}: {settings.epochs} epochs, batch {settings.batch_size}, "
          f"learning rate {settings.learning_rate:g} ({settings.lr_schedule}"
          + (f", {settings.warmup_epochs} warm-up epochs" if settings.warmup_epochs else "")
          + f"), {settings.upsampling} upsampling, "
          f"latent {settings.latent_dim}, {precision}, backend {keras.backend.backend()}")
    started = time.perf_counter()
    first_epoch = recorder.epochs_done
    stream = ShuffledImageStream(train_images, settings.batch_size, settings.seed, first_epoch,
                                 role, whole_batches=settings.data_parallel)
    # Every batch must split evenly over the devices: drop the last few test images if not.
    test_images = dataset.x_test[:len(dataset.x_test) - len(dataset.x_test) % devices]
    test_batches = ImageBatches(test_images, max(settings.batch_size, 256), role)
    logging = ([keras.callbacks.TensorBoard(log_dir=str(out_dir / TENSORBOARD_FOLDER))]
               if settings.tensorboard and role.writes_run_folder else [])
    # shuffle=False: the stream shuffles itself; Keras would also reorder its batches.
    model.fit(as_fit_data(stream), steps_per_epoch=stream.batches_per_epoch, shuffle=False,
              initial_epoch=first_epoch, epochs=settings.epochs,
              validation_data=as_fit_data(test_batches),
              validation_freq=test_epochs(settings.epochs, settings.test_every),
              callbacks=[keras.callbacks.TerminateOnNaN(), recorder, *logging, *callbacks],
              verbose=settings.verbose)
    if recorder.epochs_done < settings.epochs:  # TerminateOnNaN stopped training
        good = recorder.epochs_done
        raise TrainingStopped(
            f"the loss became NaN or infinite in epoch {good + 1}; the likely cause is a "
            f"learning rate too high (--learning-rate {settings.learning_rate:g}). "
            + (f"The checkpoint of epoch {good} is kept: lower the rate and continue with --resume"
               if good else "Nothing was saved: lower the rate and train again"))
    if settings.data_parallel:
        scale_out.stop_data_parallel()
    # The saved model is used in inference mode: give it batch-norm statistics of its final
    # weights, not the lagging moving averages of training.
    model.recompute_batch_norm_statistics(train_images)
    wall_seconds = round(time.perf_counter() - started, 1)
    if not role.writes_run_folder:
        print(f"process {role.index} of {role.count} done; process 0 writes {out_dir}")
        return out_dir
    threshold = set_anomaly_threshold(model, train_images, settings.threshold_percentile)

    config = {
        "model": settings.model,
        "model_config": model.get_config(),
        "settings": settings.to_dict(),
        "training": {"train_images": len(train_images), "precision": precision,
                     "wall_seconds": wall_seconds, "resumed": settings.resume},
        "data": {"path": str(pathlib.Path(settings.data).resolve()) if settings.data else None,
                 "source": dataset.source, **dataset.display_info()},
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
    }
    # Unfinished until write_run writes config.json last: a write that fails on the way
    # leaves a folder that --resume completes.
    (out_dir / run_folder.CONFIG_FILE).unlink(missing_ok=True)
    plots.save(plots.loss_curve(recorder.history, f"{settings.model.upper()} training on "
                                f"{len(train_images):,} images"), out_dir / "loss_curve.png")
    run_folder.write_run(out_dir, model, config)
    final = {name: values[-1] for name, values in recorder.history.items()}
    print(f"saved {out_dir}: {settings.epochs} epochs, {wall_seconds} s"
          + (" this session" if settings.resume else "") + "; "
          + ", ".join(f"{name} {value:.4g}" for name, value in sorted(final.items()))
          + f"; anomaly threshold {threshold:.4g} ({settings.threshold_percentile:g}th percentile "
            f"of the training errors)")
    return out_dir


USER_ERRORS = (data.DataError, run_folder.RunFolderError, run_settings.SettingsError)


def run_reporting_user_errors(prog, work, *args):
    """Runs `work(*args)`; a user error becomes one line on stderr and exit status 2."""
    try:
        work(*args)
    except USER_ERRORS as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except atomic_files.WriteError as error:
        print(f"{prog}: error: {error}: free space or fix the folder, then run again",
              file=sys.stderr)
        return faults.EXIT_WRITE_FAILED
    return 0


def main(model, argv=None):
    """Entry point of train_{model}.py: parse flags, train, and turn user errors into one line."""
    settings, given = run_settings.parse_training_flags(model, argv)
    return run(settings, given)


def run(settings, given=frozenset()):
    """Trains as `settings` say; returns the exit status, with user errors as one line."""
    prog = f"train_{settings.model}.py"
    plots.set_headless()
    try:
        # Process 0 alone holds the folder; the others of a multi-process run write nothing.
        holds_folder = scale_out.process_role(settings).writes_run_folder
        with faults.sigterm_as_interrupt(), run_lock.hold_run_folder(settings.out, holds_folder):
            train(settings, given)
    except USER_ERRORS as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except TrainingStopped as error:
        print(f"{prog}: stopped: {error}", file=sys.stderr)
        return 3
    except atomic_files.WriteError as error:
        print(faults.stopped_line(prog, settings.out, f"error: {error}"), file=sys.stderr)
        return faults.EXIT_WRITE_FAILED
    except faults.Terminated:
        print(faults.stopped_line(prog, settings.out, "terminated (SIGTERM)"), file=sys.stderr)
        return faults.EXIT_TERMINATED
    except KeyboardInterrupt:
        print(faults.stopped_line(prog, settings.out, "interrupted"), file=sys.stderr)
        return faults.EXIT_INTERRUPTED
    return 0
