"""The short-run check: is a run of a few dozen steps scored in inference mode as it trained?

    python benchmarks/short_run.py                   # VAE, 2 epochs on the digit 1 of 2,000 images
    python benchmarks/short_run.py --model ae
    python benchmarks/short_run.py -- --recipe original   # flags after -- go to train_*.py
    python benchmarks/short_run.py --help            # every flag and its default

It trains `train_{model}.py --digits 1 --train-limit 2000 --epochs 2` (about
220 training images, 14 steps an epoch at batch 32) and then scores the 10,000
test images three ways:

  moving averages   inference mode with the batch-norm statistics that training
                    kept (momentum 0.99): the weights of the run's last
                    checkpoint, written before the statistics are recomputed
  recomputed        inference mode with the statistics recomputed over the
                    training images at the end of the run: the saved model
  training mode     each batch normalized by its own statistics, as in training

and prints, for each, the mean MSE of the reconstructions of the digit's test
images and, in inference mode, the AUROC of "the digit 1 is normal, the other
digits are anomalies" (per-image MSE as the score). Training mode is scored on
batches of the digit's test images only: a batch of all digits would be
normalized by statistics that training never saw. The last line printed is
one JSON object with the figures.
"""

import argparse
import json
import os
import pathlib
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import settings  # noqa: E402  (light: no Keras, so the flags are parsed before Keras loads)

PROG = "short_run.py"


def build_parser():
    parser = settings.OneLineParser(
        prog=PROG, formatter_class=settings.DefaultsHelpFormatter,
        description="Train a short one-class run and score the test set with the moving-average, "
                    "the recomputed and the training-mode batch-norm statistics.")
    parser.add_argument("--model", choices=("vae", "ae"), default="vae", help="which script")
    parser.add_argument("--digit", type=int, default=1, help="the normal digit")
    parser.add_argument("--train-limit", type=settings.positive_int, default=2000,
                        help="take the digit's images among the first N training images")
    parser.add_argument("--epochs", type=settings.positive_int, default=2, help="epochs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the run")
    parser.add_argument("--data", default=None,
                        help="an .npz in Keras' MNIST layout (default: as train_*.py)")
    parser.add_argument("train_flags", nargs=argparse.REMAINDER,
                        help="after --: more flags for the training script")
    return parser


def training_mode_errors(model, images, batch_size=256):
    """Per-image MSE with every batch normalized by its own statistics (training mode).

    A training-mode call also moves the moving averages, so call this last.
    """
    import numpy as np

    import losses

    errors = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        reconstructions = model.decoder(model.encoder(batch, training=True)[0], training=True) \
            if model.variational else model(batch, training=True)
        errors.append(np.asarray(losses.reconstruction_mse(batch, reconstructions)))
    return np.concatenate(errors)


def run(args):
    import evaluation
    import run_folder
    import training

    train_flags = args.train_flags[1:] if args.train_flags[:1] == ["--"] else args.train_flags
    with tempfile.TemporaryDirectory(prefix="short_run-") as folder:
        run_dir = pathlib.Path(folder) / args.model
        argv = ["--digits", str(args.digit), "--train-limit", str(args.train_limit),
                "--epochs", str(args.epochs), "--seed", str(args.seed), "--verbose", "0",
                "--out", str(run_dir), *(["--data", args.data] if args.data else []),
                *train_flags]
        code = training.main(args.model, argv)
        if code:
            return code
        model, config = run_folder.load_model(run_dir)
        run_settings = config["settings"]  # a settings.TrainingSettings
        dataset = training.load_data(run_settings)
        train_images, _ = training.training_images(run_settings, dataset)
        _, saved_weights, _, _ = run_folder.read_checkpoint(run_dir / run_folder.CHECKPOINT_FILE)
        lagging, _ = run_folder.load_model(run_dir)
        lagging.set_weights(saved_weights)

        normal = dataset.y_test == args.digit

        def scored(model_to_score):
            train_errors = model_to_score.reconstruction_errors(train_images)
            test_errors = model_to_score.reconstruction_errors(dataset.x_test)
            report = evaluation.anomaly_report(train_errors, test_errors, dataset.y_test,
                                               [args.digit])
            return {"test_mse": float(test_errors[normal].mean()), "auroc": report["auroc"]}

        # Training mode normalizes each batch by its own statistics, so it is scored on
        # batches of the normal digit's test images only, as training saw that digit only.
        results = {"moving averages": scored(lagging), "recomputed": scored(model),
                   "training mode": {"test_mse": float(training_mode_errors(
                       model, dataset.x_test[normal]).mean()), "auroc": None}}
    steps = args.epochs * -(-len(train_images) // run_settings.batch_size)
    print(f"{args.model.upper()}, {len(train_images)} training images of the digit {args.digit}, "
          f"{args.epochs} epochs ({steps} steps)")
    print(f"| batch-norm statistics | test MSE of the digit {args.digit} | AUROC |")
    print("| --- | --- | --- |")
    for name, figures in results.items():
        auroc = "—" if figures["auroc"] is None else f"{figures['auroc']:.3f}"
        print(f"| {name} | {figures['test_mse']:.4f} | {auroc} |")
    print(json.dumps({"model": args.model, "train_images": len(train_images), "steps": steps,
                      "train_flags": train_flags, **results}))
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    import training  # Keras loads here, after the flags

    return training.run_reporting_user_errors(PROG, run, args)


if __name__ == "__main__":
    sys.exit(main())
