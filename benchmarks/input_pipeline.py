"""Host cost per batch of the training stream: what the CPU spends to hand `fit` one batch.

    python benchmarks/input_pipeline.py                        # batches 32, 128, 256 and 1024
    KERAS_BACKEND=jax python benchmarks/input_pipeline.py      # JAX reads the PyDataset itself
    python benchmarks/input_pipeline.py --batch-sizes 32 --batches 3000
    python benchmarks/input_pipeline.py --help                 # every flag and its default

It reads batches from exactly what `training.train` gives `fit`:
`training.as_fit_data(training.ShuffledImageStream(...))`, a tf.data pipeline
under TensorFlow and the `PyDataset` itself under JAX and PyTorch, on the first
--train-limit training images of --data, in one thread, as `fit` reads them.
The first --warm-up batches are not timed (tf.data starts its threads then).

Each row gives the host's time per batch and the images per second that this
host can supply at most: a device that trains faster than that waits for data.
"""

import os
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


def build_parser(settings):
    parser = settings.OneLineParser(
        prog="input_pipeline.py",
        description="Time per batch that the host spends producing the training stream.",
        formatter_class=settings.DefaultsHelpFormatter)
    parser.add_argument("--data", default=str(REPO / "data" / "mnist-20k.npz"),
                        help="an .npz in Keras' MNIST layout")
    parser.add_argument("--train-limit", type=settings.positive_int, default=10000,
                        help="stream the first N training images")
    parser.add_argument("--batch-sizes", type=settings.positive_int, nargs="+",
                        default=[32, 128, 256, 1024], help="global batch sizes to time")
    parser.add_argument("--batches", type=settings.positive_int, default=2000,
                        help="timed batches per batch size (they run on across epochs)")
    parser.add_argument("--warm-up", type=settings.positive_int, default=50,
                        help="batches read before the clock starts")
    return parser


def seconds_per_batch(fit_data, batches, warm_up):
    """Mean wall seconds to pull one batch from `fit_data` after `warm_up` batches."""
    iterator = iter(fit_data)
    for _ in range(warm_up):
        next(iterator)
    started = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return (time.perf_counter() - started) / batches


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if str(REPO) not in sys.path:  # the project's modules; settings loads no Keras
        sys.path.insert(0, str(REPO))
    import settings

    args = build_parser(settings).parse_args(argv)
    import data  # Keras loads here, after the flags: --help answers at once
    import keras
    import training

    dataset = data.load_dataset(args.data)
    images, _ = data.select_training_images(dataset.x_train, dataset.y_train, args.train_limit)
    print(f"{dataset.describe()}; streaming {len(images):,} images, backend "
          f"{keras.backend.backend()}, {args.batches} timed batches after {args.warm_up}")
    print("| batch | host µs per batch | host µs per image | images/s the host can supply |")
    print("| ---: | ---: | ---: | ---: |")
    results = {}
    for batch_size in args.batch_sizes:
        stream = training.ShuffledImageStream(images, batch_size, seed=0)
        seconds = seconds_per_batch(training.as_fit_data(stream), args.batches, args.warm_up)
        results[batch_size] = seconds
        print(f"| {batch_size} | {seconds * 1e6:,.0f} | {seconds * 1e6 / batch_size:.2f} | "
              f"{batch_size / seconds:,.0f} |")
    return results


if __name__ == "__main__":
    main()
