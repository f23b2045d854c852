"""One-class anomaly detection on MNIST, after Ruff et al. 2018 ("Deep One-Class
Classification", ICML), Table 1.

For each digit d: train an autoencoder on the training images of d only (with
train_*.py's tuned recipe and recomputed batch-norm statistics), score every
test image by its reconstruction error, and report the ROC AUC of "d is
normal, the nine other digits are anomalies". The table sets the mean beside
the paper's DCAE and Deep SVDD rows.

    python benchmarks/one_class.py                       # VAE, defaults, all ten digits, seed 0
    python benchmarks/one_class.py --seeds 0 1 2         # the docs' table: 3 seeds
    python benchmarks/one_class.py --model ae --score mse --epochs 30   # other models and scores
"""

import json
import os
import pathlib
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

# Ruff et al. 2018, Table 1, MNIST, AUROC in %, normal digit 0..9.
PAPER_ROWS = {
    "DCAE (Ruff et al. 2018)": [97.6, 98.3, 85.4, 86.7, 86.5, 78.2, 94.6, 92.3, 86.5, 90.4],
    "One-class Deep SVDD (Ruff et al. 2018)": [98.0, 99.7, 91.7, 91.9, 94.9, 88.5, 98.3, 94.6,
                                               93.9, 96.5],
}
# Later anchors, by their published mean AUROC % only (full MNIST training set).
PAPER_MEANS = {"OCGAN (Perera et al. 2019)": 97.5, "MemAE (Gong et al. 2019)": 97.5,
               "GEOM (Golan and El-Yaniv 2018)": 98.0, "ARNet (Ye et al. 2022)": 98.3}
SCORES = ("relative", "mse", "vae-loss")


def build_parser(with_score=True):
    """The flags; `with_score=False` leaves out --score (anomaly_scores.py tries them all)."""
    import settings

    parser = settings.OneLineParser(
        prog="one_class.py",
        description="One-class MNIST benchmark (Ruff et al. 2018, Table 1): ROC AUC per normal "
                    "digit, as a Markdown table and a JSON file.",
        formatter_class=settings.DefaultsHelpFormatter)
    parser.add_argument("--model", choices=("ae", "vae"), default="vae", help="which autoencoder")
    parser.add_argument("--latent-dim", type=settings.positive_int, default=16,
                        help="size of the latent code")
    parser.add_argument("--epochs", type=settings.positive_int, default=50,
                        help="epochs per digit (about 1,000 images each)")
    parser.add_argument("--batch-size", type=settings.positive_int, default=32,
                        help="images per step")
    parser.add_argument("--learning-rate", type=settings.positive_float, default=2e-3,
                        help="Adam's peak learning rate, as train_*.py's tuned recipe")
    parser.add_argument("--lr-schedule", choices=settings.LR_SCHEDULES, default="cosine",
                        help="as train_*.py's --lr-schedule")
    parser.add_argument("--warmup-epochs", type=settings.non_negative_int, default=2,
                        help="as train_*.py's --warmup-epochs")
    parser.add_argument("--upsampling", choices=settings.UPSAMPLINGS, default="resize",
                        help="the decoder's upsampling, as train_*.py's --upsampling")
    parser.add_argument("--reconstruction-weight", type=settings.non_negative_float,
                        default=1000.0, help="VAE only: loss = weight * MSE + KL")
    if with_score:
        parser.add_argument("--score", choices=SCORES, default="relative",
                            help="anomaly score of the deterministic reconstruction: relative "
                                 "(squared error over the ink of image and reconstruction, both "
                                 "averaged over 2 x 2 blocks: losses.relative_squared_error), mse "
                                 "(per-image MSE), or (VAE) "
                                 "vae-loss: weight * MSE + KL of the latent mean")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="one run per seed and digit; the table gives the mean over seeds")
    parser.add_argument("--normal-digits", type=int, nargs="+", default=list(range(10)),
                        help="the digits to take as the normal class, one experiment each")
    parser.add_argument("--data", default=None,
                        help="an .npz in Keras' MNIST layout; by default as train_*.py")
    parser.add_argument("--train-limit", type=settings.positive_int, default=10000,
                        help="use the first N training images (about N/10 per digit)")
    parser.add_argument("--precision", choices=settings.PRECISIONS, default="auto",
                        help="Keras dtype policy (see train_vae.py --help)")
    parser.add_argument("--out", default="runs/one_class",
                        help="folder for the JSON and Markdown results")
    return parser


def anomaly_scores(model, images, score, reconstruction_weight, batch_size=256):
    """One anomaly score per image: larger means less like the training digit."""
    import numpy as np

    import losses

    if score in ("mse", "relative"):
        model.anomaly_score = score
        return model.anomaly_scores(images, batch_size)
    z_mean, z_log_var, _ = model.encoder.predict(images, batch_size=batch_size, verbose=0)
    reconstructions = model.decode(z_mean, batch_size)
    return np.asarray(losses.vae_loss(images, reconstructions, z_mean, z_log_var,
                                      reconstruction_weight))


def train_one_class_model(args, dataset, normal_digit, seed, recompute_statistics=True):
    """Trains `args.model` on the training images of one digit; returns `(model, images)`.

    The recipe and batches are those of `train_*.py --digits DIGIT` with the same flags
    and seed, and so are the weights, except that train_vae.py's test evaluations draw
    the VAE's noise and so change it for the epochs after them. With
    `recompute_statistics` (as train_*.py does), the batch-norm statistics are those of
    the final weights, not the lagging moving averages.
    """
    import keras

    import data
    import settings
    import training

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    keras.mixed_precision.set_global_policy(training.resolve_precision(args.precision))
    images, _ = data.select_training_images(dataset.x_train, dataset.y_train, args.train_limit,
                                            [normal_digit])
    run_settings = settings.TrainingSettings(
        model=args.model, latent_dim=args.latent_dim, seed=seed, epochs=args.epochs,
        batch_size=args.batch_size, learning_rate=args.learning_rate,
        lr_schedule=args.lr_schedule, warmup_epochs=args.warmup_epochs,
        upsampling=args.upsampling, reconstruction_weight=args.reconstruction_weight)
    model = training.build_model(run_settings, dataset.image_shape)
    training.compile_model(model, training.learning_rate_schedule(run_settings, len(images)))
    # train_*.py's input pipeline, not `fit` on the arrays, whose per-epoch tf.data
    # iterators stall (see training.ShuffledImageStream, "Why endless").
    stream = training.ShuffledImageStream(images, args.batch_size, seed)
    model.fit(training.as_fit_data(stream), steps_per_epoch=stream.batches_per_epoch,
              shuffle=False, epochs=args.epochs, verbose=0)
    if recompute_statistics:
        model.recompute_batch_norm_statistics(images)
    return model, images


def one_experiment(args, dataset, normal_digit, seed):
    """Trains on one digit with one seed and returns the test ROC AUC in %."""
    import evaluation

    model, images = train_one_class_model(args, dataset, normal_digit, seed)
    scores = anomaly_scores(model, dataset.x_test, args.score, args.reconstruction_weight)
    train_scores = anomaly_scores(model, images, args.score, args.reconstruction_weight)
    report = evaluation.anomaly_report(train_scores, scores, dataset.y_test, [normal_digit])
    return 100.0 * report["auroc"], len(images)


def markdown_table(label, per_digit):
    """Our row beside the paper's rows; `per_digit` maps digit -> AUROC %."""
    digits = list(range(10))
    header = "| method | " + " | ".join(str(d) for d in digits) + " | mean |"
    lines = [header, "|" + " --- |" * (len(digits) + 2)]
    rows = {label: [per_digit.get(d) for d in digits], **PAPER_ROWS}
    for name, values in rows.items():
        present = [value for value in values if value is not None]
        cells = [f"{value:.1f}" if value is not None else "—" for value in values]
        mean = f"{statistics.mean(present):.1f}" if present else "—"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {mean} |")
    for name, mean in PAPER_MEANS.items():
        lines.append(f"| {name} | " + " | ".join(["—"] * len(digits)) + f" | {mean:.1f} |")
    return "\n".join(lines)


def run(args):
    import data
    import run_folder

    outside = [digit for digit in args.normal_digits if not 0 <= digit <= 9]
    if outside:
        raise data.DataError(f"--normal-digits names {outside}, outside 0..9: give digits 0 to 9")
    if args.score == "vae-loss" and args.model != "vae":
        raise data.DataError("--score vae-loss needs --model vae: the AE has no KL term")
    out_dir = run_folder.prepare_output_folder(args.out)
    dataset = data.load_dataset(args.data)
    print(dataset.describe())
    started = time.perf_counter()
    results = {}
    for normal_digit in args.normal_digits:
        aurocs = []
        for seed in args.seeds:
            auroc, count = one_experiment(args, dataset, normal_digit, seed)
            aurocs.append(auroc)
            print(f"normal digit {normal_digit}, seed {seed}: {count} training images, "
                  f"AUROC {auroc:.1f} % ({time.perf_counter() - started:.0f} s so far)", flush=True)
        results[normal_digit] = {"auroc_percent": statistics.mean(aurocs),
                                 "auroc_percent_per_seed": aurocs}
    wall_seconds = time.perf_counter() - started
    name = (f"{args.model}-latent{args.latent_dim}-epochs{args.epochs}-{args.score}")
    label = (f"this project: {args.model.upper()}, latent {args.latent_dim}, {args.epochs} epochs, "
             f"score {args.score}, {len(args.seeds)} seed(s)")
    table = markdown_table(label, {d: r["auroc_percent"] for d, r in results.items()})
    summary = {
        "settings": {key: value for key, value in vars(args).items()},
        "data": dataset.source,
        "auroc_percent": {str(d): r["auroc_percent"] for d, r in results.items()},
        "auroc_percent_per_seed": {str(d): r["auroc_percent_per_seed"] for d, r in results.items()},
        "mean_auroc_percent": statistics.mean(r["auroc_percent"] for r in results.values()),
        # Each seed's mean over the digits, in the order of --seeds.
        "mean_auroc_percent_per_seed": [
            statistics.mean(r["auroc_percent_per_seed"][index] for r in results.values())
            for index in range(len(args.seeds))],
        "wall_seconds": round(wall_seconds, 1),
    }
    run_folder.write_json(out_dir / f"{name}.json", summary)
    run_folder.write_text(out_dir / f"{name}.md", table + "\n")
    print(table)
    print("mean AUROC per seed: " + ", ".join(
        f"seed {seed} {mean:.2f} %" for seed, mean in zip(args.seeds,
                                                         summary["mean_auroc_percent_per_seed"])))
    print(f"mean AUROC {summary['mean_auroc_percent']:.1f} % in {wall_seconds:.0f} s; "
          f"wrote {out_dir / name}.json and .md")
    return summary


def main(argv=None):

    args = build_parser().parse_args(argv)
    import training  # Keras loads here, after the flags: --help answers at once

    return training.run_reporting_user_errors("one_class.py", run, args)


if __name__ == "__main__":
    sys.exit(main())
