"""Analyse a trained run: test metrics and pictures of the latent space.

    python analysis.py runs/vae              # writes PNGs and metrics.json into runs/vae
    python analysis.py runs/ae --show        # also opens the figures in windows

The model is rebuilt from the run folder alone (config.json + model.weights.h5).
"""

import argparse
import os
import sys

# Keep TensorFlow's start-up chatter out of the user's terminal; set before Keras loads.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PREDICT_BATCH_SIZE = 256
RECONSTRUCTION_EXAMPLES = 8
MANIFOLD_CELLS = 15
PRIOR_SAMPLES = 32


def build_parser():
    import training

    parser = training.OneLineParser(
        prog="analysis.py",
        description="Evaluate a run folder on the MNIST test set and write metrics.json and "
                    "PNG figures into it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("run_dir", help="a run folder written by train_vae.py or train_ae.py")
    parser.add_argument("--data", default=None,
                        help="an .npz in Keras' MNIST layout; by default the data the run used")
    parser.add_argument("--batch-size", type=training.positive_int, default=PREDICT_BATCH_SIZE,
                        help="images per predict/evaluate batch")
    parser.add_argument("--show", action="store_true", help="also open each figure in a window")
    return parser


def test_losses(model, config, images, batch_size):
    """Test-set MSE, KL and total loss, as in training (the VAE samples z)."""
    import training

    settings = config["training"]
    training.compile_model(model, settings["learning_rate"],
                           settings.get("reconstruction_weight") or 0.0)
    results = model.evaluate(images, images, batch_size=batch_size, return_dict=True, verbose=0)
    return {"test_mse": float(results["mse"]), "test_kl": float(results.get("kl", 0.0)),
            "test_loss": float(results["loss"])}


def latent_grid(latents, cells):
    """Evenly spaced coordinates covering the 1st to 99th percentile of each latent axis."""
    import numpy as np

    low, high = np.percentile(latents, [1, 99], axis=0)
    return np.linspace(low[0], high[0], cells), np.linspace(low[1], high[1], cells)


def two_dimensional(latents):
    """The latents themselves if 2-D, else their first two principal components."""
    if latents.shape[1] == 2:
        return latents, ("z[0]", "z[1]"), ""
    from sklearn.decomposition import PCA

    projected = PCA(n_components=2, random_state=0).fit_transform(latents)
    return projected, ("principal component 1", "principal component 2"), " (PCA projection)"


def write_figures(model, kind, test_images, test_labels, test_latents, run_dir, show, batch_size):
    """Writes the latent scatter, reconstructions, manifold (2-D) and prior samples (VAE)."""
    import numpy as np

    import plots

    name = kind.upper()
    written = []

    def save(figure, file_name):
        plots.save(figure, run_dir / file_name, show)
        written.append(file_name)

    points, axis_names, projection = two_dimensional(test_latents)
    save(plots.latent_scatter(points, test_labels,
                              f"{name}: latent {'means' if kind == 'vae' else 'codes'} of "
                              f"{len(test_labels):,} test digits{projection}", axis_names),
         "latent_scatter.png")

    examples = test_images[:RECONSTRUCTION_EXAMPLES]
    reconstructions = model.decode(test_latents[:RECONSTRUCTION_EXAMPLES], batch_size)
    save(plots.image_rows([examples, reconstructions], ["original", "reconstruction"],
                          f"{name}: test digits over their reconstructions",
                          [f"digit {label}" for label in test_labels[:RECONSTRUCTION_EXAMPLES]]),
         "reconstructions.png")

    if model.latent_dim == 2:
        grid_x, grid_y = latent_grid(test_latents, MANIFOLD_CELLS)
        # Row-major from the top row (largest z[1]) down, as the picture is read.
        grid = np.array([[x, y] for y in grid_y[::-1] for x in grid_x], dtype="float32")
        save(plots.manifold(model.decode(grid, batch_size), grid_x, grid_y,
                            f"{name}: what the decoder draws across the latent plane"),
             "manifold.png")

    if kind == "vae":
        prior = np.random.default_rng(0).standard_normal((PRIOR_SAMPLES, model.latent_dim))
        samples = model.decode(prior.astype("float32"), batch_size)
        save(plots.image_rows(samples.reshape(4, PRIOR_SAMPLES // 4, 28, 28), [""] * 4,
                              f"VAE: {PRIOR_SAMPLES} digits decoded from z ~ N(0, I)"),
             "prior_samples.png")
    return written


def analyse(args):
    import pathlib

    import keras

    import data
    import run_folder

    run_dir = pathlib.Path(args.run_dir)
    model, config = run_folder.load_model(run_dir)
    kind = config["model"]
    dataset = data.load_dataset(args.data or config.get("data", {}).get("path"))
    print(dataset.describe())
    keras.utils.set_random_seed(config["training"].get("seed") or 0)

    metrics = test_losses(model, config, dataset.x_test, args.batch_size)
    test_latents = model.encode(dataset.x_test, args.batch_size)  # (N, latent_dim), one predict
    written = write_figures(model, kind, dataset.x_test, dataset.y_test, test_latents, run_dir,
                            args.show, args.batch_size)
    run_folder.write_json(run_dir / "metrics.json", metrics)
    written.append("metrics.json")
    print(", ".join(f"{key} {value:.4g}" for key, value in metrics.items()))
    print(f"wrote {', '.join(written)} into {run_dir}")
    return metrics


def main(argv=None):
    args = build_parser().parse_args(argv)
    import data
    import plots
    import run_folder

    plots.set_headless(not args.show)
    try:
        analyse(args)
    except (data.DataError, run_folder.RunFolderError) as error:
        print(f"analysis.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
