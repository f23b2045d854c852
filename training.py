"""What train_vae.py and train_ae.py share: their flags, the compile step and the run itself."""

import argparse
import math
import pathlib
import sys
import time

import keras

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
    parser.add_argument("--out", default=f"runs/{kind}", help="the run folder to write")
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


class HistoryWriter(keras.callbacks.Callback):
    """After each epoch, rewrites history.csv atomically; at the end, draws the loss curve.

    Keras' CSVLogger appends to its file in place, so an interrupted run can leave
    a torn last line; this writes a whole new file and renames it instead.

    Args:
        out_dir: the run folder.
        title: the loss curve's title.
    """

    def __init__(self, out_dir, title):
        super().__init__()
        self.out_dir = pathlib.Path(out_dir)
        self.title = title
        self.history = {}

    def on_epoch_end(self, epoch, logs=None):
        for name, value in (logs or {}).items():
            self.history.setdefault(name, []).append(float(value))
        run_folder.write_history_csv(self.out_dir / run_folder.HISTORY_FILE, self.history)

    def on_train_end(self, logs=None):
        if self.history:
            plots.save(plots.loss_curve(self.history, self.title),
                       self.out_dir / "loss_curve.png")


def train(kind, args):
    """Trains one model as `args` say and writes its run folder. Returns the folder."""
    out_dir = run_folder.prepare_output_folder(args.out)
    dataset = data.load_dataset(args.data)
    train_images, train_labels = data.select_training_images(
        dataset.x_train, dataset.y_train, args.train_limit, args.digits)
    print(dataset.describe() + f"; training on {len(train_images):,}"
          + (f" images of digits {sorted(set(args.digits))}" if args.digits else " images"))

    keras.utils.set_random_seed(args.seed)
    precision = resolve_precision(args.precision)
    keras.mixed_precision.set_global_policy(precision)
    reconstruction_weight = getattr(args, "reconstruction_weight", None)
    model = models.build_model(kind, latent_dim=args.latent_dim, seed=args.seed)
    compile_model(model, args.learning_rate, reconstruction_weight or 0.0)
    config = {
        "model": kind,
        "model_config": model.get_config(),
        "training": {
            "epochs": args.epochs, "batch_size": args.batch_size,
            "learning_rate": args.learning_rate, "reconstruction_weight": reconstruction_weight,
            "seed": args.seed, "train_limit": args.train_limit,
            "digits": sorted(set(args.digits)) if args.digits else None,
            "train_images": len(train_images), "precision": precision,
        },
        "data": {"path": args.data, "source": dataset.source},
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
    }
    writer = HistoryWriter(out_dir, f"{kind.upper()} training on {len(train_images):,} images")
    started = time.perf_counter()
    print(f"{kind.upper()}: {args.epochs} epochs, batch {args.batch_size}, "
          f"learning rate {args.learning_rate:g}, latent {args.latent_dim}, {precision}, "
          f"backend {keras.backend.backend()}")
    model.fit(train_images, train_images, batch_size=args.batch_size, epochs=args.epochs,
              validation_data=(dataset.x_test, dataset.x_test),
              validation_batch_size=max(args.batch_size, 256), callbacks=[writer],
              verbose=args.verbose)
    config["training"]["wall_seconds"] = round(time.perf_counter() - started, 1)
    # Weights first, config last: a folder with a config always has matching weights.
    run_folder.save_weights(model, out_dir / run_folder.WEIGHTS_FILE)
    run_folder.write_json(out_dir / run_folder.CONFIG_FILE, config)
    final = {name: values[-1] for name, values in writer.history.items()}
    print(f"saved {out_dir}: {args.epochs} epochs in {config['training']['wall_seconds']} s; "
          + ", ".join(f"{name} {value:.4g}" for name, value in sorted(final.items())))
    return out_dir


def main(kind, argv=None):
    """Entry point of train_{kind}.py: parse flags, train, and turn user errors into one line."""
    args = build_parser(kind).parse_args(argv)
    plots.set_headless()
    try:
        train(kind, args)
    except (data.DataError, run_folder.RunFolderError) as error:
        print(f"train_{kind}.py: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"train_{kind}.py: interrupted; nothing in {pathlib.Path(args.out)} was overwritten",
              file=sys.stderr)
        return 130
    return 0
