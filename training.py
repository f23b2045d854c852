"""What train_vae.py and train_ae.py share: their flags, the compile step and the run itself."""

import argparse
import itertools
import math
import pathlib
import sys
import time

import keras
import numpy as np

import data
import losses
import models
import plots
import run_folder

EPOCHS_DEFAULT = {"vae": 15, "ae": 10}
ORIGINAL_EPOCHS = {"vae": 100, "ae": 40}
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
MODEL_NAMES = {"vae": "variational autoencoder (VAE)", "ae": "vanilla autoencoder (AE)"}


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line ("prog: error: ...") and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _finite_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def positive_float(text):
    value = _finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def non_negative_float(text):
    value = _finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def build_parser(kind):
    """The command-line flags of train_{kind}.py; every default reproduces the README's run."""
    parser = OneLineParser(
        prog=f"train_{kind}.py",
        description=f"Train the convolutional {MODEL_NAMES[kind]} on MNIST and save the run "
                    f"(weights, config.json, history.csv, loss_curve.png) into --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", default=None,
                        help="an .npz in Keras' MNIST layout (x_train, y_train, x_test, y_test); "
                             "by default Keras' MNIST, or the bundled 20k subset when offline")
    parser.add_argument("--train-limit", type=positive_int, default=10000,
                        help="train on the first N training images (the original used 10,000)")
    parser.add_argument("--digits", type=int, nargs="+", default=None,
                        help="train only on these digits, e.g. --digits 0 1 (default: all ten)")
    parser.add_argument("--epochs", type=positive_int, default=EPOCHS_DEFAULT[kind],
                        help=f"training epochs (the original ran {ORIGINAL_EPOCHS[kind]})")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="images per step")
    parser.add_argument("--learning-rate", type=positive_float, default=5e-4,
                        help="Adam's learning rate")
    parser.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                        help="constant: the learning rate throughout, as the original; cosine: "
                             "decay it from --learning-rate to 0 over --epochs (cosine curve)")
    parser.add_argument("--latent-dim", type=positive_int, default=2, help="size of the latent code")
    if kind == "vae":
        parser.add_argument("--reconstruction-weight", type=non_negative_float, default=1000.0,
                            help="loss = weight * MSE + KL")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of weights, shuffling and sampling (keras.utils.set_random_seed)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="Keras dtype policy; auto picks mixed_bfloat16 on CPUs with bfloat16 "
                             "instructions (AVX512-BF16 or AMX), else float32. The loss is "
                             "always computed in float32")
    parser.add_argument("--data-parallel", action="store_true",
                        help="split each batch over all of the backend's devices with "
                             "keras.distribution.DataParallel (JAX backend only)")
    parser.add_argument("--out", default=f"runs/{kind}", help="the run folder to write")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last checkpoint, with its saved "
                             "settings, up to --epochs")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                        help="Keras' fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch")
    return parser


def cpu_has_bfloat16():
    """True where /proc/cpuinfo lists AVX512-BF16 or AMX-BF16 (Linux); False elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            flags = set(cpuinfo.read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_precision(precision):
    """The Keras dtype policy that `--precision` names; "auto" decides from the CPU.

    Mixed bfloat16 trains about twice as fast as float32 on CPUs with bfloat16
    instructions (README, Performance) and is emulated, slowly, on others.
    """
    if precision != "auto":
        return precision
    return "mixed_bfloat16" if cpu_has_bfloat16() else "float32"


def learning_rate_schedule(args, train_images):
    """The learning rate, or a Keras schedule of it, that `--lr-schedule` asks for."""
    if getattr(args, "lr_schedule", "constant") == "constant":
        return args.learning_rate
    steps = args.epochs * math.ceil(train_images / args.batch_size)
    return keras.optimizers.schedules.CosineDecay(args.learning_rate, decay_steps=steps)


def compile_model(model, learning_rate=5e-4, reconstruction_weight=1000.0):
    """Compiles a VAE or AE with Adam and the losses of `losses.py`.

    The compiled loss is the per-image reconstruction MSE. For the VAE it is
    weighted by `reconstruction_weight`, and the KL divergence that
    `VAE.call` adds joins it, so the total is `weight * MSE + KL`. The MSE is
    also logged on its own as `mse`.
    """
    variational = isinstance(model, models.VAE)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=losses.reconstruction_mse,
        loss_weights=float(reconstruction_weight) if variational else None,
        metrics=[keras.metrics.MeanMetricWrapper(losses.reconstruction_mse, name="mse")])
    return model


class TrainingStopped(Exception):
    """Training ended early (NaN loss); the message says why and what to do."""


class RunRecorder(keras.callbacks.Callback):
    """After each finished epoch: append to the history, rewrite history.csv and the checkpoint.

    Both files are written atomically (a new file renamed over the old), so an
    interrupt never leaves a torn file: Keras' CSVLogger appends in place.
    An epoch whose loss is NaN or infinite is not recorded, so the checkpoint
    always holds the last good epoch.

    Args:
        out_dir: the run folder.
        history: the history so far ({name: [value per epoch]}), empty for a new run.
        settings: the run's settings, stored in the checkpoint for --resume.
    """

    def __init__(self, out_dir, history, settings):
        super().__init__()
        self.out_dir = pathlib.Path(out_dir)
        self.history = history
        self.settings = settings

    @property
    def epochs_done(self):
        return len(self.history.get("loss", []))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not all(math.isfinite(float(value)) for value in logs.values()):
            return
        for name, value in logs.items():
            self.history.setdefault(name, []).append(float(value))
        run_folder.write_history_csv(self.out_dir / run_folder.HISTORY_FILE, self.history)
        run_folder.write_checkpoint(
            self.out_dir / run_folder.CHECKPOINT_FILE, self.model.get_weights(),
            [keras.ops.convert_to_numpy(variable) for variable in self.model.optimizer.variables],
            [keras.ops.convert_to_numpy(state) for state in rng_states(self.model)],
            {"epoch": self.epochs_done, "history": self.history, "settings": self.settings})


def rng_states(model):
    """The state variables of the model's random seed generators (the VAE's sampling noise)."""
    return [layer.seed_generator.state for layer in model.encoder.layers
            if isinstance(layer, models.Sampling)]


def restore_checkpoint(model, weights, optimizer_variables, saved_rng_states):
    """Puts a checkpoint's weights, optimizer state and noise state back into a compiled model."""
    model.set_weights(weights)
    model.optimizer.build(model.trainable_variables)
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
        images: float32 array, shape (N, 28, 28, 1).
        batch_size: images per batch; the last batch of an epoch may be smaller.
        seed: the run's seed.
        first_epoch: the epoch (0-based) that the stream starts with.
    """

    def __init__(self, images, batch_size, seed, first_epoch=0):
        super().__init__()
        self.images = images
        self.batch_size = batch_size
        self.seed = seed
        self.first_epoch = first_epoch
        self.batches_per_epoch = math.ceil(len(images) / batch_size)
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

    def __getitem__(self, index):
        epoch_offset, step = divmod(index, self.batches_per_epoch)
        order = self.epoch_order(self.first_epoch + epoch_offset)
        batch = self.images[order[step * self.batch_size:(step + 1) * self.batch_size]]
        return batch, batch  # an autoencoder's target is its input


def as_fit_data(batches):
    """What to give `fit` for a `PyDataset`: itself, or under TensorFlow a tf.data pipeline.

    Under the TensorFlow backend Keras turns a `PyDataset` into a tf.data
    pipeline with autotuning on. Destroying that pipeline waits for the
    autotuning thread, whose period doubles up to 60 s: each epoch's or
    evaluation's iterator stalled for about 5 s, and the end of a long run, or
    Ctrl-C, for up to a minute. The same pipeline with autotuning off has no
    such thread. JAX and PyTorch read the `PyDataset` directly.

    Args:
        batches: a `ShuffledImageStream` (endless) or `ImageBatches` (finite).

    Returns:
        An iterable of `(images, images)` batches for `fit`.
    """
    if keras.backend.backend() != "tensorflow":
        return batches
    import tensorflow as tf  # only under the TensorFlow backend

    indices = itertools.count() if batches.num_batches is None else range(batches.num_batches)
    images_spec = tf.TensorSpec((None, *batches.images.shape[1:]), tf.float32)
    dataset = tf.data.Dataset.from_generator(
        lambda: (batches[index] for index in indices),
        output_signature=(images_spec, images_spec))
    if batches.num_batches is not None:  # so Keras knows when an evaluation ends
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches.num_batches))
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(2).with_options(options)


class ImageBatches(keras.utils.PyDataset):
    """`(images, images)` batches in order, for evaluating on a fixed set.

    Give it to `fit` through `as_fit_data`, which avoids a multi-second stall
    at the end of each evaluation under TensorFlow.

    Args:
        images: float32 array, shape (N, 28, 28, 1).
        batch_size: images per batch; the last batch may be smaller.
    """

    def __init__(self, images, batch_size):
        super().__init__()
        self.images = images
        self.batch_size = batch_size

    def __len__(self):
        return math.ceil(len(self.images) / self.batch_size)

    def __getitem__(self, index):
        batch = self.images[index * self.batch_size:(index + 1) * self.batch_size]
        return batch, batch


SETTINGS = ("data", "train_limit", "digits", "batch_size", "learning_rate", "lr_schedule",
            "latent_dim",
            "reconstruction_weight", "seed", "precision")


def train(kind, args):
    """Trains one model as `args` say and writes its run folder. Returns the folder."""
    out_dir = run_folder.prepare_output_folder(args.out)
    history, checkpoint = {}, None
    if args.resume:
        state, *checkpoint = run_folder.read_checkpoint(out_dir / run_folder.CHECKPOINT_FILE)
        history = state["history"]
        for name, value in state["settings"].items():
            # The run's saved settings win, except a learning rate given on this command
            # line (after a NaN, say).
            if not (name == "learning_rate" and args.learning_rate_given):
                setattr(args, name, value)
        if args.epochs <= state["epoch"]:
            raise run_folder.RunFolderError(
                f"{out_dir} has already trained {state['epoch']} epochs: "
                f"give --epochs above {state['epoch']} to train on")
        print(f"resuming {out_dir} after epoch {state['epoch']}, with the run's saved settings")
    dataset = data.load_dataset(args.data)
    train_images, train_labels = data.select_training_images(
        dataset.x_train, dataset.y_train, args.train_limit, args.digits)
    print(dataset.describe() + f"; training on {len(train_images):,}"
          + (f" images of digits {sorted(set(args.digits))}" if args.digits else " images"))

    keras.utils.set_random_seed(args.seed)
    if args.data_parallel:
        if keras.backend.backend() != "jax":
            raise run_folder.RunFolderError(
                f"--data-parallel needs the JAX backend, not {keras.backend.backend()}: "
                f"run with KERAS_BACKEND=jax")
        devices = keras.distribution.list_devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        print(f"data parallel over {len(devices)} devices: {', '.join(devices)}")
    precision = resolve_precision(args.precision)
    keras.mixed_precision.set_global_policy(precision)
    reconstruction_weight = getattr(args, "reconstruction_weight", None)
    model = models.build_model(kind, latent_dim=args.latent_dim, seed=args.seed)
    compile_model(model, learning_rate_schedule(args, len(train_images)),
                  reconstruction_weight or 0.0)
    if checkpoint:
        restore_checkpoint(model, *checkpoint)
    settings = {name: getattr(args, name) for name in SETTINGS if hasattr(args, name)}
    recorder = RunRecorder(out_dir, history, settings)
    print(f"{kind.upper()}: {args.epochs} epochs, batch {args.batch_size}, "
          f"learning rate {args.learning_rate:g} ({args.lr_schedule}), latent {args.latent_dim}, {precision}, "
          f"backend {keras.backend.backend()}")
    started = time.perf_counter()
    first_epoch = recorder.epochs_done
    stream = ShuffledImageStream(train_images, args.batch_size, args.seed, first_epoch)
    # shuffle=False: the stream shuffles itself; Keras would also reorder its batches.
    model.fit(as_fit_data(stream), steps_per_epoch=stream.batches_per_epoch, shuffle=False,
              initial_epoch=first_epoch, epochs=args.epochs,
              validation_data=as_fit_data(ImageBatches(dataset.x_test, max(args.batch_size, 256))),
              callbacks=[keras.callbacks.TerminateOnNaN(), recorder], verbose=args.verbose)
    if recorder.epochs_done < args.epochs:  # TerminateOnNaN stopped training
        good = recorder.epochs_done
        raise TrainingStopped(
            f"the loss became NaN or infinite in epoch {good + 1}; the likely cause is a "
            f"learning rate too high (--learning-rate {args.learning_rate:g}). "
            + (f"The checkpoint of epoch {good} is kept: lower the rate and continue with --resume"
               if good else "Nothing was saved: lower the rate and train again"))
    wall_seconds = round(time.perf_counter() - started, 1)

    config = {
        "model": kind,
        "model_config": model.get_config(),
        "training": {
            "epochs": args.epochs, "batch_size": args.batch_size,
            "learning_rate": args.learning_rate, "lr_schedule": args.lr_schedule,
            "reconstruction_weight": reconstruction_weight,
            "seed": args.seed, "train_limit": args.train_limit,
            "digits": sorted(set(args.digits)) if args.digits else None,
            "train_images": len(train_images), "precision": precision,
            "wall_seconds": wall_seconds, "resumed": bool(args.resume),
        },
        "data": {"path": str(pathlib.Path(args.data).resolve()) if args.data else None,
                 "source": dataset.source},
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
    }
    # An old config goes first, then the weights, then the new config: a folder with a
    # config.json always has the weights that match it.
    (out_dir / run_folder.CONFIG_FILE).unlink(missing_ok=True)
    run_folder.save_weights(model, out_dir / run_folder.WEIGHTS_FILE)
    run_folder.write_json(out_dir / run_folder.CONFIG_FILE, config)
    plots.save(plots.loss_curve(recorder.history, f"{kind.upper()} training on "
                                f"{len(train_images):,} images"), out_dir / "loss_curve.png")
    final = {name: values[-1] for name, values in recorder.history.items()}
    print(f"saved {out_dir}: {args.epochs} epochs, {wall_seconds} s"
          + (" this session" if args.resume else "") + "; "
          + ", ".join(f"{name} {value:.4g}" for name, value in sorted(final.items())))
    return out_dir


USER_ERRORS = (data.DataError, run_folder.RunFolderError)


def run_reporting_user_errors(prog, work, args):
    """Runs `work(args)`; a user error becomes one line on stderr and exit status 2."""
    try:
        work(args)
    except USER_ERRORS as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    return 0


def main(kind, argv=None):
    """Entry point of train_{kind}.py: parse flags, train, and turn user errors into one line."""
    args = build_parser(kind).parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    args.learning_rate_given = any(flag.split("=")[0] == "--learning-rate" for flag in given)
    plots.set_headless()
    try:
        train(kind, args)
    except USER_ERRORS as error:
        print(f"train_{kind}.py: error: {error}", file=sys.stderr)
        return 2
    except TrainingStopped as error:
        print(f"train_{kind}.py: stopped: {error}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        checkpoint = pathlib.Path(args.out) / run_folder.CHECKPOINT_FILE
        if checkpoint.is_file():
            print(f"train_{kind}.py: interrupted; the last finished epoch is saved in {checkpoint}: "
                  f"continue with python train_{kind}.py --out {args.out} --epochs {args.epochs} "
                  f"--resume", file=sys.stderr)
        else:
            print(f"train_{kind}.py: interrupted before the first epoch finished; "
                  f"nothing was saved: train again", file=sys.stderr)
        return 130
    return 0
