"""What each speed lever is worth: training throughput of the project's VAE with one lever changed.

    python benchmarks/levers.py                       # every setting, 3 rounds, about 20 minutes
    python benchmarks/levers.py --settings project float32 --repeats 5
    python benchmarks/levers.py --help                # every flag and its default

Every setting trains the project's VAE (`models.VAE`, which computes its own
loss; batch 32, Adam 5e-4) on the first `--train-limit`
training images for `--epochs` epochs, without a test set, in a fresh
subprocess; rounds alternate the settings. Throughput is the training images
of epochs 2..E over their time (epoch 1 traces the graph). The settings:

  project           what train_vae.py does: --precision auto (mixed_bfloat16 on
                    CPUs with bfloat16 instructions), batch_norm="auto"
                    (TensorFlow's fused kernel, fused_batch_norm.py), and training.ShuffledImageStream
                    (one data iterator for the whole run)
  float32           the project with float32 instead of mixed_bfloat16
  keras-batch-norm  the project with batch_norm="keras" (keras.layers.BatchNormalization)
  numpy-arrays      the project with fit(images, images, shuffle=True) on NumPy
                    arrays: a new data iterator each epoch
  plain             all three changed back: float32, Keras' batch norm, NumPy arrays
  xla               the project with compile(jit_compile=True)
  steps-per-execution-8   the project with compile(steps_per_execution=8)
  inter-op-threads-1      the project with TensorFlow running one op at a time
                    (tf.config.threading.set_inter_op_parallelism_threads(1); each
                    op still uses every core)
  jax, torch        the project under KERAS_BACKEND=jax or torch (the fused batch
                    norm is TensorFlow's, so these run Keras' own)
  python-generator  the project fed as it was before the in-graph pipeline: a
                    tf.data.Dataset.from_generator over the stream's batches, one
                    Python call per batch
  resize, transpose4x4, transpose2x2
                    the project with that --upsampling (the base is the
                    original's 3x3 transposed convolution)
  batch-64, batch-128     the project at that batch size (throughput only: the
                    loss per epoch is not the same)

`--precision` sets the precision of every TensorFlow setting but `float32` and
`plain` (always float32): `--precision float32` measures the levers where
bfloat16 is not used (AVX2 CPUs, or `ONEDNN_MAX_CPU_ISA=AVX2` to imitate one).

The last line printed is one JSON object: the median images/s of each setting
and its ratio to `plain`.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
SETTINGS = ("plain", "project", "float32", "keras-batch-norm", "numpy-arrays", "xla",
            "steps-per-execution-8", "inter-op-threads-1", "jax", "torch", "python-generator",
            "resize", "transpose4x4", "transpose2x2", "batch-64", "batch-128")
DEFAULT_SETTINGS = ("plain", "project", "float32", "keras-batch-norm", "numpy-arrays")
RESULT_MARKER = "LEVERS_RESULT "
PROG = "levers.py"


def _import_project():
    """Puts the repository root on sys.path; returns the project's `settings` module.

    It is light (no Keras), so the flags are parsed before Keras loads.
    """
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import settings

    return settings


def build_parser(settings):
    parser = settings.OneLineParser(
        prog=PROG,
        description="Training throughput of the project's VAE with one speed lever changed "
                    "at a time, each run in a fresh subprocess.",
        formatter_class=settings.DefaultsHelpFormatter)
    parser.add_argument("--data", default=str(REPO / "data" / "mnist-20k.npz"),
                        help="an .npz in Keras' MNIST layout")
    parser.add_argument("--train-limit", type=settings.positive_int, default=4000,
                        help="train on the first N training images")
    parser.add_argument("--epochs", type=settings.positive_int, default=4,
                        help="epochs of each run; epoch 1 is the warm-up")
    parser.add_argument("--batch-size", type=settings.positive_int, default=32,
                        help="images per step")
    parser.add_argument("--repeats", type=settings.positive_int, default=3,
                        help="rounds; each round runs every setting once")
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(DEFAULT_SETTINGS),
                        help="which settings to run (see the module docstring)")
    parser.add_argument("--seed", type=int, default=0, help="keras.utils.set_random_seed")
    parser.add_argument("--precision", choices=settings.PRECISIONS, default="auto",
                        help="the precision of the settings other than float32 and plain")
    return parser


def run_setting(setting, args):
    """Trains in this process as `setting` says; returns the measurement dict."""
    import keras

    _import_project()
    import data
    import models
    import training

    dataset = data.load_dataset(args.data)
    images, _ = data.select_training_images(dataset.x_train, dataset.y_train, args.train_limit)
    if setting == "inter-op-threads-1":
        import tensorflow as tf  # a TensorFlow-only setting; set before any op runs

        tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(args.seed)
    precision = ("float32" if setting in ("float32", "plain")
                 else training.resolve_precision(args.precision))
    keras.mixed_precision.set_global_policy(precision)
    batch_norm = "keras" if setting in ("keras-batch-norm", "plain") else "auto"
    upsampling = setting if setting in ("resize", "transpose4x4", "transpose2x2") else "transpose"
    batch_size = int(setting.split("-")[1]) if setting.startswith("batch-") else args.batch_size
    model = models.build_model("vae", latent_dim=2, seed=args.seed, batch_norm=batch_norm,
                               upsampling=upsampling)
    model.compile(optimizer=keras.optimizers.Adam(5e-4),
                  jit_compile=True if setting == "xla" else "auto",
                  steps_per_execution=8 if setting == "steps-per-execution-8" else 1)

    epoch_seconds = []

    class EpochClock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.began = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_seconds.append(time.perf_counter() - self.began)

    if setting in ("numpy-arrays", "plain"):
        model.fit(images, images, batch_size=batch_size, epochs=args.epochs, shuffle=True,
                  callbacks=[EpochClock()], verbose=0)
    else:
        stream = training.ShuffledImageStream(images, batch_size, args.seed)
        fit_data = (_python_generator(stream) if setting == "python-generator"
                    else training.as_fit_data(stream))
        model.fit(fit_data, steps_per_epoch=stream.batches_per_epoch,
                  epochs=args.epochs,
                  shuffle=False, callbacks=[EpochClock()], verbose=0)
    timed = epoch_seconds[1:] or epoch_seconds
    return {"setting": setting, "backend": keras.backend.backend(), "precision": precision,
            "images_per_second": len(images) * len(timed) / sum(timed),
            "epoch_seconds": [round(seconds, 2) for seconds in epoch_seconds]}


def _python_generator(stream):
    """The stream as the project fed it before: one Python call per batch, autotuning off."""
    import itertools

    import tensorflow as tf

    spec = tf.TensorSpec((None, *stream.images.shape[1:]), tf.float32)
    dataset = tf.data.Dataset.from_generator(
        lambda: (stream[index] for index in itertools.count()), output_signature=(spec, spec))
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(2).with_options(options)


def _run_in_subprocess(setting, args):
    environment = dict(os.environ)
    if setting in ("jax", "torch"):
        environment["KERAS_BACKEND"] = setting
    command = [sys.executable, __file__, "--worker", setting, "--data", args.data,
               "--train-limit", str(args.train_limit), "--epochs", str(args.epochs),
               "--batch-size", str(args.batch_size), "--seed", str(args.seed),
               "--precision", args.precision]
    finished = subprocess.run(command, env=environment, capture_output=True, text=True,
                              check=False)
    for line in finished.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER):])
    last_error = (finished.stderr.strip().splitlines() or ["no output"])[-1]
    raise SystemExit(f"{PROG}: error: the {setting} run failed (exit {finished.returncode}): "
                     f"{last_error}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    settings = _import_project()
    if argv[:1] == ["--worker"]:
        worker = argparse.ArgumentParser(prog=f"{PROG} --worker")
        worker.add_argument("--worker", choices=SETTINGS, required=True)
        for flag in ("--data", "--precision"):
            worker.add_argument(flag, required=True)
        for flag in ("--train-limit", "--epochs", "--batch-size", "--seed"):
            worker.add_argument(flag, type=int, required=True)
        args = worker.parse_args(argv)
        print(RESULT_MARKER + json.dumps(run_setting(args.worker, args)), flush=True)
        return 0
    args = build_parser(settings).parse_args(argv)
    if not pathlib.Path(args.data).is_file():
        raise SystemExit(f"{PROG}: error: --data {args.data} does not exist")
    runs = {setting: [] for setting in args.settings}
    print("| round | setting | backend | precision | train images/s | epoch seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for round_number in range(1, args.repeats + 1):
        for setting in args.settings:
            result = _run_in_subprocess(setting, args)
            runs[setting].append(result)
            print(f"| {round_number} | {setting} | {result['backend']} | {result['precision']} | "
                  f"{result['images_per_second']:,.0f} | "
                  f"{', '.join(f'{s:.2f}' for s in result['epoch_seconds'])} |", flush=True)
    medians = {setting: statistics.median(r["images_per_second"] for r in results)
               for setting, results in runs.items()}
    print("\n| setting | median train images/s | against plain |")
    print("| --- | --- | --- |")
    for setting, median in medians.items():
        ratio = f"{median / medians['plain']:.2f}x" if "plain" in medians else "n/a"
        print(f"| {setting} | {median:,.0f} | {ratio} |")
    import precision_policy  # Keras loads here, after the runs

    summary = {"medians_images_per_second": {k: round(v, 1) for k, v in medians.items()},
               "ratio_to_plain": ({k: round(v / medians["plain"], 3) for k, v in medians.items()}
                                  if "plain" in medians else None),
               "repeats": args.repeats, "train_images": args.train_limit, "epochs": args.epochs,
               "batch_size": args.batch_size, "precision": args.precision,
               "cpu": precision_policy.cpu_description()}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
