"""Reconstruction error against latent size: the AE and the VAE trained at several latent sizes.

The original README says that "reconstruction error would drastically reduce
with an increase of dimensionality to the latent space". This measures it: for
each latent size, both models are trained with the default runs' recipe
(`settings.TrainingSettings.defaults_for`, so `train_vae.py` / `train_ae.py`
with only `--latent-dim` changed) and scored on the test set.

    python benchmarks/latent_sweep.py                          # 2 4 8 16 32, default epochs
    python benchmarks/latent_sweep.py --latent-dims 2 8 --epochs 2
    python benchmarks/latent_sweep.py --help                   # every flag and its default

Into --out it writes one run folder per model and latent size
(`vae-latent-8/`, ... as `train_vae.py` writes them; `benchmarks/generators.py`
reads the latent-2 ones), `latent_sweep.json`, `latent_sweep.png`, and it
prints the table. The scores of each run:

  test_mse    mean squared error of the deterministic reconstruction
              (`model.reconstruct`: the VAE decodes its latent means)
  test_loss   the training loss of the saved model on the test set:
              1000 x MSE + KL for the VAE (its z sampled, as in training),
              the MSE for the AE
  test_kl     the VAE's KL term on the test set (0 for the AE)
"""

import dataclasses
import os
import pathlib
import sys
import time

import matplotlib.pyplot as plt
from matplotlib.ticker import FixedLocator, NullLocator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import settings  # noqa: E402  (light: no Keras, so the flags are parsed before Keras loads)

PROG = "latent_sweep.py"
MODELS = ("ae", "vae")
DEFAULT_LATENT_DIMS = (2, 4, 8, 16, 32)
RESULTS_FILE = "latent_sweep.json"
FIGURE_FILE = "latent_sweep.png"
MODEL_LABELS = {"ae": "AE (vanilla autoencoder)", "vae": "VAE (variational autoencoder)"}


def build_parser():
    defaults = {model: settings.TrainingSettings.defaults_for(model) for model in MODELS}
    parser = settings.OneLineParser(
        prog=PROG,
        description="Train the AE and the VAE at several latent sizes with the default runs' "
                    "recipe, and write the test reconstruction MSE and loss of each as "
                    f"{RESULTS_FILE}, a figure {FIGURE_FILE}, and a printed table.",
        formatter_class=settings.DefaultsHelpFormatter)
    parser.add_argument("--latent-dims", type=settings.positive_int, nargs="+",
                        default=list(DEFAULT_LATENT_DIMS), metavar="SIZE",
                        help="the latent sizes to train at")
    parser.add_argument("--epochs", type=settings.positive_int, default=None,
                        help="epochs of every run (default: each model's default run's, "
                             f"VAE {defaults['vae'].epochs}, AE {defaults['ae'].epochs}; in "
                             f"{settings.BFLOAT16_POLICY} AE {settings.BFLOAT16_EPOCHS['ae']})")
    parser.add_argument("--seed", type=int, default=defaults["vae"].seed,
                        help="seed of weights, shuffling and sampling")
    parser.add_argument("--data", default=None,
                        help="an .npz in Keras' MNIST layout (default: as train_vae.py, Keras' "
                             "MNIST or the bundled 20k subset when offline)")
    parser.add_argument("--train-limit", type=settings.positive_int,
                        default=defaults["vae"].train_limit,
                        help="train on the first N training images")
    parser.add_argument("--out", default="runs/latent_sweep",
                        help="folder for the run folders, the JSON and the figure")
    return parser


def run_settings(model, latent_dim, args):
    """The default run's settings of `model`, with only the sweep's choices changed."""
    changes = {"latent_dim": latent_dim, "seed": args.seed, "data": args.data,
               "train_limit": args.train_limit, "verbose": 0,
               "out": str(pathlib.Path(args.out) / f"{model}-latent-{latent_dim}")}
    if args.epochs is not None:
        changes["epochs"] = args.epochs
    return dataclasses.replace(settings.TrainingSettings.defaults_for(model), **changes)


def score_run(run_dir, test_images):
    """The test scores of one finished run folder (see the module docstring)."""
    import report
    import run_folder

    model, config = run_folder.load_model(run_dir)
    test_mse = float(model.reconstruction_errors(test_images).mean())
    # The saved model's loss, as analysis.py reports it: training recomputes the batch-norm
    # statistics after the last epoch, so fit's last val_loss is of slightly older statistics.
    losses = report.test_losses(model, test_images, 256)
    return {"model": config["model"], "latent_dim": model.latent_dim,
            "epochs": config["settings"].epochs, "test_mse": test_mse,
            "test_loss": losses["test_loss"], "test_kl": losses["test_kl"],
            "training_seconds": config["training"]["wall_seconds"],
            "precision": config["training"]["precision"], "run_folder": str(run_dir)}


def markdown_table(runs):
    """One row per latent size: both models' test MSE, the VAE's loss and KL, training times."""
    by_key = {(run["model"], run["latent_dim"]): run for run in runs}
    latent_dims = sorted({run["latent_dim"] for run in runs})
    lines = ["| latent size | AE test MSE | VAE test MSE | VAE test loss (1000 MSE + KL) "
             "| VAE test KL | AE training (s) | VAE training (s) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for latent_dim in latent_dims:
        ae, vae = by_key.get(("ae", latent_dim)), by_key.get(("vae", latent_dim))
        cells = [f"{ae['test_mse']:.4f}" if ae else "—",
                 f"{vae['test_mse']:.4f}" if vae else "—",
                 f"{vae['test_loss']:.2f}" if vae else "—",
                 f"{vae['test_kl']:.2f}" if vae else "—",
                 f"{ae['training_seconds']:.0f}" if ae else "—",
                 f"{vae['training_seconds']:.0f}" if vae else "—"]
        lines.append(f"| {latent_dim} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mse_figure(runs, title):
    """Test MSE against latent size, one line per model, on a log-2 x axis."""
    figure, axis = plt.subplots(figsize=(6.8, 4.4))
    for model, marker in zip(MODELS, ("s", "o")):
        points = sorted((run["latent_dim"], run["test_mse"]) for run in runs
                        if run["model"] == model)
        if points:
            latent_dims, mses = zip(*points)
            line, = axis.plot(latent_dims, mses, marker=marker, label=MODEL_LABELS[model])
            for latent_dim, mse in points:  # each value by its point, to read off exactly
                # The VAE's error is the higher one: its values above its line, the AE's below.
                axis.annotate(f"{mse:.4f}", (latent_dim, mse), textcoords="offset points",
                              xytext=(0, -14 if model == "ae" else 7), ha="center", fontsize=8,
                              color=line.get_color())
    axis.set_xscale("log", base=2)
    latent_dims = sorted({run["latent_dim"] for run in runs})
    # Ticks at the latent sizes trained, written as plain numbers.
    axis.xaxis.set_major_locator(FixedLocator(latent_dims))
    axis.xaxis.set_minor_locator(NullLocator())
    axis.set_xticklabels([str(latent_dim) for latent_dim in latent_dims])
    # From 0, so the drop reads at its true size; headroom above for the legend.
    axis.set_ylim(0, 1.3 * max(run["test_mse"] for run in runs))
    axis.set_xlabel("latent size (log scale)")
    axis.set_ylabel("test reconstruction MSE (per pixel)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    return figure


def run(args):
    import data
    import keras
    import plots
    import run_folder
    import training

    plots.set_headless()
    out_dir = run_folder.prepare_output_folder(args.out)
    latent_dims = list(dict.fromkeys(args.latent_dims))  # once each, in the order given
    dataset = data.load_dataset(args.data)
    data.select_training_images(dataset.x_train, dataset.y_train, args.train_limit)  # check first
    total = len(latent_dims) * len(MODELS)
    print(f"{PROG}: {dataset.describe()}; {total} runs: AE and VAE at latent sizes "
          f"{', '.join(map(str, latent_dims))}", flush=True)
    started = time.perf_counter()
    runs = []
    for latent_dim in latent_dims:
        for model in MODELS:
            keras.backend.clear_session()  # each run builds its model afresh
            # Without --epochs, each run takes its default run's epochs for its dtype policy.
            run_dir = training.train(run_settings(model, latent_dim, args),
                                     given={"epochs"} if args.epochs is not None else set())
            runs.append(score_run(run_dir, dataset.x_test))
            print(f"[{len(runs)}/{total}] {model.upper()} latent {latent_dim}: test MSE "
                  f"{runs[-1]['test_mse']:.4f}, test loss {runs[-1]['test_loss']:.4g} "
                  f"({time.perf_counter() - started:.0f} s so far)", flush=True)
    wall_seconds = round(time.perf_counter() - started, 1)
    epochs = {run["model"]: run["epochs"] for run in runs}
    results = {
        "benchmark": "latent_sweep",
        "settings": {"latent_dims": latent_dims, "epochs": epochs, "seed": args.seed,
                     "train_images": args.train_limit, "test_images": len(dataset.x_test),
                     "data": dataset.source, "backend": keras.backend.backend()},
        "runs": runs,
        "wall_seconds": wall_seconds,
    }
    run_folder.write_json(out_dir / RESULTS_FILE, results)
    plots.save(mse_figure(runs, f"Test reconstruction error against latent size "
                                f"(AE {epochs['ae']}, VAE {epochs['vae']} epochs)"),
               out_dir / FIGURE_FILE)
    print(markdown_table(runs))
    print(f"{total} runs in {wall_seconds:.0f} s; wrote {out_dir / RESULTS_FILE} and "
          f"{out_dir / FIGURE_FILE}")
    return results


def main(argv=None):
    args = build_parser().parse_args(argv)
    import training  # Keras loads here, after the flags: --help answers at once

    try:
        return training.run_reporting_user_errors(PROG, run, args)
    except training.TrainingStopped as error:  # a NaN loss: the message says what to do
        print(f"{PROG}: stopped: {error}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
