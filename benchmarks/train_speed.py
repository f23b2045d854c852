"""Training speed: the project's VAE or AE training path against a plain Keras 3 reference.

    python benchmarks/train_speed.py                  # 3 rounds x 2 variants, 12 epochs each
    python benchmarks/train_speed.py --json-out speed.json
    python benchmarks/train_speed.py --model ae       # the original AE script instead
    python benchmarks/train_speed.py --help           # every flag and its default

Both variants train the same architecture (the original scripts' convolutional
VAE, latent 2; with `--model ae`, the original AE: the same encoder ending in a
Dense bottleneck of 2) on the same data (by default the bundled
`data/mnist-20k.npz`: the first `--train-limit` training images; the test
images for the test loss), at batch 32 with Adam 5e-4, on the loss 1000 x MSE
(mean over pixels) + KL (sum over latent dimensions), or the MSE alone for the AE:

  reference  the most direct Keras 3 way, written out in this file: a functional
             encoder and decoder, a `keras.Model` subclass whose `compute_loss`
             computes the loss (the AE: a functional model compiled with
             `loss="mse"`, fit on (x, x)), float32, `fit` on NumPy arrays with
             every default.
  project    exactly what `train_vae.py` (or `train_ae.py`) does: the run calls `training.train`
             with the settings those flags would give (`settings.TrainingSettings`:
             data, train limit, epochs, batch size, learning rate and schedule,
             latent 2, reconstruction weight, seed, precision; auto picks
             mixed_bfloat16 on CPUs with bfloat16 instructions) and `out` a
             temporary folder, so `models.VAE`, the project's data pipeline, its
             `fit` arguments and its per-epoch callbacks (history, checkpoint) are
             all the project's own, and follow any change to them. The only thing
             added is the timing callback, through `training.train`'s `callbacks`
             hook (after the run's own callbacks).

Each run is a fresh subprocess (rounds alternate reference, project, reference,
project, ...), so neither the dtype policy nor thread pools nor caches leak from
one run into the next. Both variants are seeded alike (`--seed`) and are
evaluated alike: `fit` gets the test images as `validation_data` (the project
passes them itself; the reference gets them with the project's batch,
max(batch, 256)), so after every epoch Keras reports the test loss
(1000 x MSE + KL with the sampled z, as in training) as `val_loss`.

What each run measures:

  throughput       training images per second over epochs 2..E: the images of
                   those epochs over their training time. An epoch's training
                   time runs from `on_epoch_begin` to `on_epoch_end` less the
                   test-set evaluation inside it (the per-epoch callbacks, such as
                   the project's history and checkpoint writes, count as
                   training). Epoch 1 is the warm-up (graph tracing); with a
                   single epoch it is all there is, and the table marks the
                   figure "(cold)".
  time to target   training-clock seconds from the start of `fit`'s training
                   (`on_train_begin`: graph tracing and all) to the end of the first epoch
                   whose test loss is below `--target-loss`, excluding the time
                   spent on the per-epoch test-set evaluations (the JSON file of
                   --json-out also has the time with them); with the epoch at
                   which that happened. Runs that never get there show
                   "not reached".
  final test loss  the test loss after the last epoch.
  whole process    wall seconds of the run's subprocess from start to exit, as the
                   parent times it: imports, data, fit, and what the variant does
                   after fit (the project saves its run folder) included.
  peak RSS         the subprocess's peak resident memory (getrusage ru_maxrss),
                   whatever the variant does after `fit` (the project saves its
                   run folder and loss curve) included.

The output is a Markdown table (one row per run, then one median row per
variant) and, as the last line, one JSON object with the medians, the ratios
project / reference (`throughput_ratio` above 1 and `time_to_target_ratio`
below 1 mean the project path is faster; `whole_process_speedup` is the
reference's median whole-process time over the project's) and the CPU
(`precision_policy.cpu_description`: model, vector extensions, oneDNN cap). A median time to target is null
when most runs of that variant missed the target; its ratio is then null too.
"""

import argparse
import json
import math
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
VARIANTS = ("reference", "project")
MODELS = ("vae", "ae")
DEFAULT_TARGET_LOSS = {"vae": 57.0, "ae": 0.0416}
LATENT_DIM = 2
LEARNING_RATE = 5e-4
RECONSTRUCTION_WEIGHT = 1000.0
RESULT_MARKER = "TRAIN_SPEED_RESULT "
PROG = "train_speed.py"


# ---------------------------------------------------------------------------------------------
# Command line


def _import_project():
    """Puts the repository root on sys.path; returns the project's `settings` module.

    It is light (no Keras), so the flags are parsed before Keras loads.
    """
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import settings

    return settings


def build_parser(settings):
    """The benchmark's flags; `settings` is the project's (light) settings module."""
    parser = settings.OneLineParser(
        prog=PROG,
        description="Measure the project's VAE training path (train_vae.py) against a plain "
                    "Keras 3 reference of the same model and loss: throughput, time to a target "
                    "test loss, final test loss and peak memory, each run in a fresh subprocess.",
        formatter_class=settings.DefaultsHelpFormatter)
    parser.add_argument("--model", choices=MODELS, default="vae",
                        help="which original script the two variants train")
    parser.add_argument("--data", default=str(REPO / "data" / "mnist-20k.npz"),
                        help="an .npz in Keras' MNIST layout (x_train, y_train, x_test, y_test)")
    parser.add_argument("--train-limit", type=settings.positive_int, default=10000,
                        help="train on the first N training images")
    parser.add_argument("--epochs", type=settings.positive_int, default=12,
                        help="epochs of each run")
    parser.add_argument("--batch-size", type=settings.positive_int, default=32,
                        help="images per step")
    parser.add_argument("--target-loss", type=settings.positive_float, default=None,
                        help="time to target: the first epoch whose test loss (1000 x MSE + KL; "
                             "the AE's MSE) is below this (default: "
                             f"{DEFAULT_TARGET_LOSS['vae']:g} for the VAE, what the plain port "
                             "reaches after about 10 epochs; "
                             f"{DEFAULT_TARGET_LOSS['ae']:g} for the AE, the original's "
                             "40-epoch test MSE; docs/performance.md)")
    parser.add_argument("--repeats", type=settings.positive_int, default=3,
                        help="rounds; each round runs every variant once, in --variants order")
    parser.add_argument("--precision", choices=settings.PRECISIONS, default="auto",
                        help="the project path's --precision; the reference is always float32")
    parser.add_argument("--project-learning-rate", type=settings.positive_float,
                        default=LEARNING_RATE,
                        help="the project path's --learning-rate (the reference keeps 5e-4)")
    parser.add_argument("--project-lr-schedule", choices=("constant", "cosine"),
                        default="constant",
                        help="the project path's --lr-schedule (the reference keeps constant)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                        help="which variants to run")
    parser.add_argument("--seed", type=int, default=0,
                        help="keras.utils.set_random_seed of every run (weights, shuffling, noise)")
    parser.add_argument("--json-out", default=None,
                        help="also write every run's measurements and the summary to this file")
    return parser


def _worker_parser():
    """Flags of one run in its subprocess; the parent checked them already."""
    parser = argparse.ArgumentParser(prog=f"{PROG} --worker")
    parser.add_argument("--worker", choices=VARIANTS, required=True)
    parser.add_argument("--model", choices=MODELS, required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--train-limit", type=int, required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--target-loss", type=float, required=True)
    parser.add_argument("--precision", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--project-learning-rate", type=float, required=True)
    parser.add_argument("--project-lr-schedule", required=True)
    return parser


def _worker_argv(variant, args):
    argv = ["--worker", variant, "--model", args.model, "--data", str(args.data), "--train-limit", str(args.train_limit),
            "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
            "--target-loss", repr(args.target_loss), "--precision", args.precision,
            "--seed", str(args.seed),
            "--project-learning-rate", repr(args.project_learning_rate),
            "--project-lr-schedule", args.project_lr_schedule]
    return argv


# ---------------------------------------------------------------------------------------------
# One run (in its own subprocess)


def _epoch_clock_class(keras):
    class EpochClock(keras.callbacks.Callback):
        """Times each epoch's training and test-set evaluation; notes when the target is reached.

        Only epoch-level hooks: defining a batch hook would switch Keras' callback
        dispatch from asynchronous to synchronous and so change what is measured.
        """

        def __init__(self, fit_started, target_loss):
            super().__init__()
            self.fit_started = fit_started  # None: when fit begins training
            self.fit_seconds = None
            self.target_loss = target_loss
            self.eval_seconds = 0.0
            self.epochs = []
            self.target_epoch = None
            self.time_to_target = None
            self.time_to_target_with_eval = None

        def on_train_begin(self, logs=None):
            if self.fit_started is None:
                self.fit_started = time.perf_counter()

        def on_train_end(self, logs=None):
            self.fit_seconds = time.perf_counter() - self.fit_started

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch_began = time.perf_counter()
            self._epoch_eval = 0.0

        def on_test_begin(self, logs=None):
            self._test_began = time.perf_counter()

        def on_test_end(self, logs=None):
            self._epoch_eval += time.perf_counter() - self._test_began

        def on_epoch_end(self, epoch, logs=None):
            now = time.perf_counter()
            self.eval_seconds += self._epoch_eval
            logs = logs or {}
            test_loss = float(logs.get("val_loss", math.nan))
            wall = now - self.fit_started
            self.epochs.append({
                "epoch": epoch + 1,
                "train_seconds": now - self._epoch_began - self._epoch_eval,
                "eval_seconds": self._epoch_eval,
                "test_loss": test_loss,
                "train_loss": float(logs.get("loss", math.nan)),
            })
            if self.target_epoch is None and test_loss < self.target_loss:
                self.target_epoch = epoch + 1
                self.time_to_target = wall - self.eval_seconds
                self.time_to_target_with_eval = wall

    return EpochClock


def _reference_encoder_trunk(images, layers):
    """The original encoder's convolutions: (N, 28, 28, 1) -> (N, 3136)."""
    x = images
    for filters, strides in zip((32, 64, 64, 64), (1, 2, 2, 1)):
        x = layers.Conv2D(filters, 3, strides=strides, padding="same")(x)
        x = layers.ReLU()(x)
        x = layers.BatchNormalization()(x)
    return layers.Flatten()(x)


def _reference_decoder(latent, layers):
    """The original decoder: (N, 2) -> (N, 28, 28, 1) through 3x3 transposed convolutions."""
    x = layers.Dense(7 * 7 * 64)(latent)
    x = layers.Reshape((7, 7, 64))(x)
    for filters, strides in zip((64, 64, 64), (1, 2, 2)):
        x = layers.Conv2DTranspose(filters, 3, strides=strides, padding="same")(x)
        x = layers.ReLU()(x)
        x = layers.BatchNormalization()(x)
    return layers.Conv2DTranspose(1, 3, strides=1, padding="same", activation="sigmoid")(x)


def build_reference_vae(seed=None):
    """The plain reference: the same VAE and loss, written the most direct Keras 3 way.

    Deliberately independent of the project's modules. Returns an uncompiled
    `keras.Model` whose `call` returns `(reconstructions, z_mean, z_log_var)`.
    """
    import keras
    from keras import layers, ops

    class Sampling(layers.Layer):
        """z = mean + exp(log_var / 2) * eps, eps ~ N(0, I)."""

        def __init__(self, seed=None, **kwargs):
            super().__init__(**kwargs)
            self.seed_generator = keras.random.SeedGenerator(seed)

        def call(self, inputs):
            z_mean, z_log_var = inputs
            epsilon = keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)
            return z_mean + ops.exp(0.5 * z_log_var) * epsilon

    class ReferenceVAE(keras.Model):
        def __init__(self, encoder, decoder, **kwargs):
            super().__init__(**kwargs)
            self.encoder = encoder
            self.decoder = decoder

        def call(self, images, training=False):
            z_mean, z_log_var, z = self.encoder(images, training=training)
            return self.decoder(z, training=training), z_mean, z_log_var

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            reconstructions, z_mean, z_log_var = y_pred
            mse = ops.mean(ops.square(x - reconstructions), axis=(1, 2, 3))
            kl = -0.5 * ops.sum(1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=1)
            return ops.mean(RECONSTRUCTION_WEIGHT * mse + kl)

    images = keras.Input(shape=(28, 28, 1))
    x = _reference_encoder_trunk(images, layers)
    z_mean = layers.Dense(LATENT_DIM)(x)
    z_log_var = layers.Dense(LATENT_DIM)(x)
    z = Sampling(seed)([z_mean, z_log_var])
    encoder = keras.Model(images, [z_mean, z_log_var, z], name="encoder")

    latent = keras.Input(shape=(LATENT_DIM,))
    decoder = keras.Model(latent, _reference_decoder(latent, layers), name="decoder")
    return ReferenceVAE(encoder, decoder, name="reference_vae")


def build_reference_ae():
    """The plain reference AE: the original encoder, a Dense bottleneck, the original decoder.

    Returns an uncompiled functional `keras.Model` from images to reconstructions.
    """
    import keras
    from keras import layers

    images = keras.Input(shape=(28, 28, 1))
    bottleneck = layers.Dense(LATENT_DIM)(_reference_encoder_trunk(images, layers))
    return keras.Model(images, _reference_decoder(bottleneck, layers), name="reference_ae")


def _peak_rss_mib():
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes vs KiB


def _train_reference(args, keras, clock_class):
    """Trains the reference in float32 with `fit` on NumPy arrays; returns (clock, fit seconds)."""
    import data  # the reference shares only the data loading with the project

    dataset = data.load_dataset(args.data)
    train_images, _ = data.select_training_images(dataset.x_train, dataset.y_train,
                                                  args.train_limit)
    keras.utils.set_random_seed(args.seed)
    keras.mixed_precision.set_global_policy("float32")
    clock = clock_class(None, args.target_loss)  # starts its clock when fit begins
    if args.model == "vae":
        model = build_reference_vae(seed=args.seed)
        model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE))
        targets, validation_data = None, (dataset.x_test,)
    else:  # the original AE script: the MSE as Keras' own loss, images as their own targets
        model = build_reference_ae()
        model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="mse")
        targets, validation_data = train_images, (dataset.x_test, dataset.x_test)
    model.fit(train_images, targets, batch_size=args.batch_size, epochs=args.epochs,
              validation_data=validation_data, validation_batch_size=max(args.batch_size, 256),
              callbacks=[clock], verbose=0)
    return clock, clock.fit_seconds, len(dataset.x_test)


def _train_project(args, keras, clock_class):
    """Runs train_vae.py's (or train_ae.py's) training in this process, timing its `fit`.

    The clock goes in through `training.train`'s `callbacks` hook, after the
    run's own callbacks. Returns (clock, fit seconds, test images).
    """
    import data
    import settings
    import training

    clock = clock_class(None, args.target_loss)  # starts its clock when fit begins
    with tempfile.TemporaryDirectory(prefix="train_speed-") as out_dir:
        run_settings = settings.TrainingSettings(
            model=args.model, data=args.data, train_limit=args.train_limit, epochs=args.epochs,
            batch_size=args.batch_size, learning_rate=args.project_learning_rate,
            lr_schedule=args.project_lr_schedule, latent_dim=LATENT_DIM,
            # The original architecture and a test evaluation after every epoch, as the
            # reference: the same model, so the throughputs compare, and a loss per epoch.
            warmup_epochs=0, upsampling="transpose", test_every=1,
            reconstruction_weight=RECONSTRUCTION_WEIGHT, seed=args.seed,
            precision=args.precision, out=str(pathlib.Path(out_dir) / args.model), verbose=0)
        try:
            training.train(run_settings, given={"epochs"}, callbacks=[clock])
        except training.USER_ERRORS as error:
            raise SystemExit(f"{PROG}: error: train_{args.model}.py's training failed: "
                             f"{error}") from None
    return clock, clock.fit_seconds, len(data.load_dataset(args.data).x_test)


def run_worker(argv):
    """Trains one variant as `argv` says and prints its measurements as one marked JSON line."""
    args = _worker_parser().parse_args(argv)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import keras

    clock_class = _epoch_clock_class(keras)
    train = _train_reference if args.worker == "reference" else _train_project
    clock, fit_seconds, test_images = train(args, keras, clock_class)
    epochs = clock.epochs
    if not epochs:
        raise SystemExit(f"{PROG}: error: the {args.worker} run finished no epoch")
    timed = epochs[1:] or epochs  # epoch 1 is the warm-up, unless it is all there is
    train_seconds = sum(epoch["train_seconds"] for epoch in timed)
    result = {
        "variant": args.worker,
        "precision": keras.mixed_precision.global_policy().name,
        "epochs": len(epochs),
        "train_images": args.train_limit,
        "test_images": test_images,
        "throughput": args.train_limit * len(timed) / train_seconds,
        "throughput_warm": len(epochs) > 1,
        "time_to_target": clock.time_to_target,
        "time_to_target_with_eval": clock.time_to_target_with_eval,
        "target_epoch": clock.target_epoch,
        "final_test_loss": epochs[-1]["test_loss"],
        "fit_seconds": fit_seconds,
        "eval_seconds": clock.eval_seconds,
        "peak_rss_mib": _peak_rss_mib(),
        "history": epochs,
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
    }
    print(RESULT_MARKER + json.dumps(_json_safe(result)), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# The parent: runs, table, summary


class RunFailed(RuntimeError):
    """A run's subprocess failed; the message says which and why."""


def _json_safe(value):
    """Non-finite floats as None, so that the output is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def run_subprocess(variant, args):
    """Runs one variant in a fresh Python process; returns its measurements (a dict)."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    command = [sys.executable, str(pathlib.Path(__file__).resolve()), *_worker_argv(variant, args)]
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, env=env, cwd=str(REPO))
    process_seconds = time.perf_counter() - started
    results = [line[len(RESULT_MARKER):] for line in completed.stdout.splitlines()
               if line.startswith(RESULT_MARKER)]
    if completed.returncode != 0 or not results:
        lines = [line for line in (completed.stderr + completed.stdout).splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else "no output"
        raise RunFailed(f"the {variant} run failed (exit code {completed.returncode}): {reason}")
    return {**json.loads(results[-1]), "process_seconds": process_seconds}


def _median(values):
    """The median, where None (a missed target) counts as infinitely slow; None if that wins."""
    values = [math.inf if value is None else value for value in values]
    if not values:
        return None
    median = statistics.median(values)
    return None if math.isinf(median) else median


def summarize(runs):
    """Medians per variant and the ratios project / reference, from the runs' measurements."""
    summary = {}
    for variant in VARIANTS:
        mine = [run for run in runs if run["variant"] == variant]
        if not mine:
            continue
        summary[variant] = {
            "runs": len(mine),
            "precision": mine[0]["precision"],
            "throughput": _median([run["throughput"] for run in mine]),
            "time_to_target": _median([run["time_to_target"] for run in mine]),
            "target_epoch": _median([run["target_epoch"] for run in mine]),
            "reached_target": sum(run["target_epoch"] is not None for run in mine),
            "final_test_loss": _median([run["final_test_loss"] for run in mine]),
            "peak_rss_mib": _median([run["peak_rss_mib"] for run in mine]),
            "process_seconds": _median([run["process_seconds"] for run in mine]),
        }

    def ratio(key):
        if "reference" not in summary or "project" not in summary:
            return None
        project, reference = summary["project"][key], summary["reference"][key]
        if project is None or not reference:
            return None
        return project / reference

    speedup = ratio("process_seconds")
    return {
        "whole_process_speedup": None if not speedup else 1 / speedup,
        "throughput_ratio": ratio("throughput"),
        "time_to_target_ratio": ratio("time_to_target"),
        "final_test_loss_ratio": ratio("final_test_loss"),
        "peak_rss_ratio": ratio("peak_rss_mib"),
        **summary,
    }


def _format(value, digits, unit=""):
    return "—" if value is None else f"{value:,.{digits}f}{unit}"


def _table_row(label, variant, precision, throughput, warm, time_to_target, target_epoch,
               final_loss, epochs, peak_rss, process_seconds):
    if target_epoch is None:
        to_target, at_epoch = "not reached", "—"
    else:
        to_target, at_epoch = _format(time_to_target, 1), f"{target_epoch:g}"
    throughput_text = _format(throughput, 0) + ("" if warm else " (cold)")
    return (f"| {label} | {variant} | {precision} | {throughput_text} | {to_target} | {at_epoch} "
            f"| {_format(final_loss, 2)} | {epochs} | {_format(peak_rss, 0)} "
            f"| {_format(process_seconds, 1)} |")


def markdown_table(runs, summary):
    lines = ["| run | variant | precision | train images/s | time to target (s) | target epoch "
             "| final test loss | epochs | peak RSS (MiB) | whole process (s) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for index, run in enumerate(runs, start=1):
        lines.append(_table_row(index, run["variant"], run["precision"], run["throughput"],
                                run["throughput_warm"], run["time_to_target"], run["target_epoch"],
                                run["final_test_loss"], run["epochs"], run["peak_rss_mib"],
                                run["process_seconds"]))
    for variant in VARIANTS:
        if variant in summary:
            medians = summary[variant]
            mine = [run for run in runs if run["variant"] == variant]
            lines.append(_table_row(
                "**median**", variant, medians["precision"], medians["throughput"],
                all(run["throughput_warm"] for run in mine), medians["time_to_target"],
                medians["target_epoch"], medians["final_test_loss"],
                _format(statistics.median(run["epochs"] for run in mine), 0),
                medians["peak_rss_mib"], medians["process_seconds"]))
    return "\n".join(lines)


def _rounded(summary):
    digits = {"throughput": 1, "time_to_target": 2, "target_epoch": 1, "final_test_loss": 3,
              "peak_rss_mib": 1, "process_seconds": 1}
    out = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            out[key] = {name: (round(item, digits[name])
                               if name in digits and item is not None else item)
                        for name, item in value.items()}
        else:
            out[key] = None if value is None else round(value, 4)
    return out


def main(argv=None):
    """Parses the flags, runs every variant --repeats times and prints the table and JSON line."""
    if argv is None:
        argv = sys.argv[1:]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "--worker" in argv:
        return run_worker(argv)
    settings = _import_project()
    args = build_parser(settings).parse_args(argv)
    import data  # Keras loads here, after the flags: --help answers at once
    import precision_policy
    args.variants = list(dict.fromkeys(args.variants))  # once each, in the order given
    if args.target_loss is None:
        args.target_loss = DEFAULT_TARGET_LOSS[args.model]
    args.data = str(pathlib.Path(args.data).resolve())
    try:
        dataset = data.load_dataset(args.data)
        data.select_training_images(dataset.x_train, dataset.y_train, args.train_limit)
        if args.json_out is not None and not pathlib.Path(args.json_out).resolve().parent.is_dir():
            raise data.DataError(f"--json-out {args.json_out}: its folder does not exist")
    except data.DataError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2

    settings = {
        "model": args.model, "data": args.data, "train_images": args.train_limit, "test_images": len(dataset.x_test),
        "epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": LEARNING_RATE,
        "project_learning_rate": args.project_learning_rate,
        "project_lr_schedule": args.project_lr_schedule,
        "reconstruction_weight": RECONSTRUCTION_WEIGHT, "target_loss": args.target_loss,
        "repeats": args.repeats,
        "precision": args.precision, "seed": args.seed, "cpu_count": os.cpu_count(),
        "cpu": precision_policy.cpu_description(),
    }
    print(f"{PROG}: {dataset.describe()}; {args.repeats} round(s) of {', '.join(args.variants)}, "
          f"the {args.model.upper()}: "
          f"{args.train_limit:,} images, {args.epochs} epochs, batch {args.batch_size}, "
          f"target test loss {args.target_loss:g}", file=sys.stderr, flush=True)
    runs = []
    total = args.repeats * len(args.variants)
    try:
        for _ in range(args.repeats):
            for variant in args.variants:
                run = run_subprocess(variant, args)
                runs.append(run)
                reached = ("target not reached" if run["target_epoch"] is None else
                           f"target at epoch {run['target_epoch']} after "
                           f"{run['time_to_target']:.1f} s")
                print(f"[{len(runs)}/{total}] {variant} ({run['precision']}): "
                      f"{run['throughput']:,.0f} images/s, test loss {run['final_test_loss']:.2f} "
                      f"after {run['epochs']} epochs, {reached}, peak RSS "
                      f"{run['peak_rss_mib']:,.0f} MiB, whole process "
                      f"{run['process_seconds']:.1f} s",
                      file=sys.stderr, flush=True)
    except RunFailed as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted after {len(runs)} of {total} runs", file=sys.stderr)
        return 130

    summary = summarize(runs)
    print(markdown_table(runs, summary))
    line = {"benchmark": "train_speed", **_rounded(summary), "settings": settings}
    if args.json_out is not None:
        full = {**line, "runs": runs}
        pathlib.Path(args.json_out).write_text(json.dumps(_json_safe(full), indent=2) + "\n",
                                               encoding="utf-8")
    print(json.dumps(_json_safe(line)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
