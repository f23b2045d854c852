"""What analysis.py does with a run folder: held-out metrics and pictures of the latent space.

    analyse(AnalysisSettings) -> metrics.json, PNG figures and explorer.html in the run folder

The model is rebuilt from the run folder alone (config.json + model.weights.h5).
For a run trained with --digits, the other digits are scored as anomalies.
"""

import pathlib

import keras
import numpy as np
from sklearn.decomposition import PCA

import data
import evaluation
import explorer
import plots
import run_folder
import training

PREDICT_BATCH_SIZE = 256
RECONSTRUCTION_EXAMPLES = 8
MANIFOLD_CELLS = 15
EXPLORER_CELLS = 32
TRAVERSAL_STEPS = 10
PRIOR_SAMPLES = 32
MONTAGE_IMAGES = 10


def test_losses(model, images, batch_size):
    """Test-set MSE, KL and total loss, as in training (the VAE samples z)."""
    # The optimizer is never stepped here: evaluate needs a compiled model, and the
    # model computes its own loss.
    model.compile(optimizer="adam")
    results = model.evaluate(images, images, batch_size=batch_size, return_dict=True, verbose=0)
    return {"test_mse": float(results["mse"]), "test_kl": float(results.get("kl", 0.0)),
            "test_loss": float(results["loss"])}


def latent_grid(latents, cells):
    """Evenly spaced coordinates covering the 1st to 99th percentile of each latent axis."""
    low, high = np.percentile(latents, [1, 99], axis=0)
    return np.linspace(low[0], high[0], cells), np.linspace(low[1], high[1], cells)


def decode_grid(model, grid_x, grid_y, batch_size):
    """Decoded images at every (x, y) of the grid, shape (len(grid_y), len(grid_x), 28, 28).

    Row 0 is the smallest y. One batched predict for the whole grid.
    """
    points = np.array([[x, y] for y in grid_y for x in grid_x], dtype="float32")
    return model.decode(points, batch_size).reshape(len(grid_y), len(grid_x), 28, 28)


def two_dimensional(latents):
    """The latents themselves if 2-D, else their first two principal components."""
    if latents.shape[1] == 2:
        return latents, ("z[0]", "z[1]"), ""
    projected = PCA(n_components=2, random_state=0).fit_transform(latents)
    return projected, ("principal component 1", "principal component 2"), " (PCA projection)"


def traversal_endpoints(test_labels, requested):
    """The two test indices to interpolate between, checked against the test set."""
    if requested is None:
        return int(np.argmax(test_labels == 0)), int(np.argmax(test_labels == 1))
    for index in requested:
        if not 0 <= index < len(test_labels):
            raise data.DataError(f"--traverse index {index} is outside the test set "
                                 f"(0..{len(test_labels) - 1}): pick two test-image indices")
    return tuple(requested)


class FigureWriter:
    """Saves figures into the run folder and remembers their names."""

    def __init__(self, run_dir, show):
        self.run_dir = run_dir
        self.show = show
        self.written = []

    def __call__(self, figure, file_name):
        plots.save(figure, self.run_dir / file_name, self.show)
        self.written.append(file_name)


def write_latent_figures(save, model, kind, test_images, test_labels, test_latents,
                         traverse_endpoints, batch_size, trained_digits=None):
    """Latent scatter, reconstructions, traversal; manifold (2-D) and prior samples (VAE)."""
    name = kind.upper()
    if trained_digits:  # say so, or a scatter of mixed-up unseen digits looks like a bug
        name += f" (trained on digits {' '.join(str(digit) for digit in trained_digits)} only)"
    title = (f"{name}: latent {'means' if kind == 'vae' else 'codes'} of "
             f"{len(test_labels):,} test digits")
    if test_latents.shape[1] == 1:  # nothing to project: one strip of codes per digit
        save(plots.latent_strip(test_latents[:, 0], test_labels, title), "latent_scatter.png")
    else:
        points, axis_names, projection = two_dimensional(test_latents)
        save(plots.latent_scatter(points, test_labels, title + projection, axis_names),
             "latent_scatter.png")

    examples = slice(0, RECONSTRUCTION_EXAMPLES)
    save(plots.image_rows([test_images[examples], model.decode(test_latents[examples], batch_size)],
                          ["original", "reconstruction"],
                          f"{name}: test digits over their reconstructions",
                          [f"digit {label}" for label in test_labels[examples]]),
         "reconstructions.png")

    start, end = traverse_endpoints
    fractions = np.linspace(0.0, 1.0, TRAVERSAL_STEPS, dtype="float32")[:, None]
    path = (1.0 - fractions) * test_latents[start] + fractions * test_latents[end]
    # One row: the start image, the decoded points along the line, the end image.
    row = np.concatenate([test_images[[start]], model.decode(path, batch_size),
                          test_images[[end]]])
    save(plots.image_rows([row], [""],
                          f"{name}: a straight line in latent space between two test digits",
                          [f"test {start}\n(a {test_labels[start]})"]
                          + [f"t = {fraction:.2f}" for fraction in fractions[:, 0]]
                          + [f"test {end}\n(a {test_labels[end]})"]),
         "latent_traversal.png")

    if model.latent_dim == 2:
        grid_x, grid_y = latent_grid(test_latents, MANIFOLD_CELLS)
        # Flip the rows so that the top row of the picture is the largest z[1].
        save(plots.manifold(decode_grid(model, grid_x, grid_y, batch_size)[::-1], grid_x, grid_y,
                            f"{name}: what the decoder draws across the latent plane"),
             "manifold.png")

    if kind == "vae":
        samples = model.sample(PRIOR_SAMPLES, seed=0, batch_size=batch_size)
        save(plots.image_rows(samples.reshape(4, PRIOR_SAMPLES // 4, 28, 28), [""] * 4,
                              f"VAE: {PRIOR_SAMPLES} digits decoded from z ~ N(0, I)"),
             "prior_samples.png")


def anomaly_section(save, model, kind, train_images, normal_digits, test_images, test_labels,
                    batch_size):
    """Scores the test set by reconstruction error; unseen digits are the anomalies."""
    train_errors = evaluation.reconstruction_errors(train_images,
                                                    model.reconstruct(train_images, batch_size))
    test_errors = evaluation.reconstruction_errors(test_images,
                                                   model.reconstruct(test_images, batch_size))
    report = evaluation.anomaly_report(train_errors, test_errors, test_labels, normal_digits)
    is_anomaly = ~np.isin(test_labels, normal_digits)
    trained = " ".join(str(digit) for digit in normal_digits)
    save(plots.anomaly_histogram(test_errors[~is_anomaly], test_errors[is_anomaly],
                                 report["threshold"],
                                 f"{kind.upper()} trained on digits {trained}: test errors"),
         "anomaly_hist.png")
    save(plots.roc_curve(is_anomaly, test_errors, report["auroc"],
                         f"{kind.upper()} trained on {trained}: unseen digits as anomalies"),
         "anomaly_roc.png")
    order = np.argsort(test_errors)
    most, least = order[::-1][:MONTAGE_IMAGES], order[:MONTAGE_IMAGES]
    save(plots.image_rows([test_images[most], test_images[least]],
                          ["most\nanomalous", "least\nanomalous"],
                          f"{kind.upper()} trained on {trained}: test images by reconstruction "
                          f"error (title: digit, error)",
                          cell_titles=[[f"{test_labels[i]}, {test_errors[i]:.3f}" for i in indices]
                                       for indices in (most, least)]),
         "anomaly_extremes.png")
    return report


def analyse(args):
    """Evaluates the run folder `args.run_dir` and writes metrics and figures into it.

    Args:
        args: a `settings.AnalysisSettings`.
    Returns:
        The metrics dict that metrics.json holds.
    """
    run_dir = pathlib.Path(args.run_dir)
    model, config = run_folder.load_model(run_dir)
    kind = config["model"]
    settings = config["settings"]
    dataset = data.load_dataset(args.data or config.get("data", {}).get("path"))
    print(dataset.describe())
    endpoints = traversal_endpoints(dataset.y_test, args.traverse)  # checked before any work
    keras.utils.set_random_seed(settings.seed)
    save = FigureWriter(run_dir, args.show)

    metrics = test_losses(model, dataset.x_test, args.batch_size)
    # The training images of the run, before any --digits filter: k-NN is fitted on all digits.
    train_images, train_labels = data.select_training_images(
        dataset.x_train, dataset.y_train, min(settings.train_limit or len(dataset.x_train),
                                              len(dataset.x_train)))
    train_latents = model.encode(train_images, args.batch_size)    # (N_train, latent_dim)
    test_latents = model.encode(dataset.x_test, args.batch_size)   # (N_test, latent_dim)
    left_out = {}  # {metric: why it has no value on these data}
    for name, score in (
            ("knn5_accuracy", lambda: evaluation.knn_accuracy(train_latents, train_labels,
                                                              test_latents, dataset.y_test)),
            ("silhouette", lambda: evaluation.silhouette(test_latents, dataset.y_test))):
        try:
            metrics[name] = score()
        except evaluation.MetricUndefined as why:
            left_out[name] = str(why)

    write_latent_figures(save, model, kind, dataset.x_test, dataset.y_test, test_latents,
                         endpoints, args.batch_size, settings.digits)
    if model.latent_dim == 2:
        grid_x, grid_y = latent_grid(test_latents, EXPLORER_CELLS)
        explorer.write_explorer(run_dir / "explorer.html", test_latents, dataset.y_test,
                                decode_grid(model, grid_x, grid_y, args.batch_size),
                                grid_x, grid_y, f"{kind.upper()} latent space explorer: "
                                                f"{run_dir.name}")
        save.written.append("explorer.html")

    normal_digits = settings.digits
    if normal_digits:
        normal_images, _ = data.select_training_images(train_images, train_labels,
                                                       digits=normal_digits)
        try:
            metrics.update(anomaly_section(save, model, kind, normal_images, normal_digits,
                                           dataset.x_test, dataset.y_test, args.batch_size))
        except evaluation.MetricUndefined as why:
            left_out["anomaly scores (auroc, precision, recall and their figures)"] = str(why)
    if left_out:
        metrics["left_out"] = left_out

    run_folder.write_json(run_dir / "metrics.json", metrics)
    save.written.append("metrics.json")
    print(", ".join(f"{key} {value:.4g}" for key, value in metrics.items()
                    if isinstance(value, float)))
    if left_out:
        print("left out: " + "; ".join(f"{name} ({why})" for name, why in left_out.items()))
    if "auroc_per_digit" in metrics:
        print("AUROC per unseen digit: " + ", ".join(
            f"{digit}: {value:.3f}" for digit, value in metrics["auroc_per_digit"].items()))
    print(f"wrote {', '.join(save.written)} into {run_dir}")
    return metrics


def main(args):
    """Analyses as `args` (a `settings.AnalysisSettings`) say; returns the exit status."""
    plots.set_headless(not args.show)
    return training.run_reporting_user_errors("analysis.py", analyse, args)
