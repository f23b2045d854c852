"""What analysis.py does with a run folder: held-out metrics and pictures of the latent space.

    analyse(AnalysisSettings) -> metrics.json, PNG figures and explorer.html in the run folder

The model is rebuilt from the run folder alone (config.json + model.weights.h5),
and the data from the settings it stores. For a run trained with --digits, the
other classes are scored as anomalies. Unlabelled data gets no per-class
metrics or colours.
"""

import dataclasses
import pathlib

import keras
import numpy as np
from sklearn.decomposition import PCA

import data
import evaluation
import explorer
import models
import plots
import run_folder
import training

PREDICT_BATCH_SIZE = 256
RECONSTRUCTION_EXAMPLES = 8
MANIFOLD_CELLS = 15
EXPLORER_CELLS = 32
TRAVERSAL_STEPS = 10
PRIOR_SAMPLES = 32
BLOT_SAMPLES = 2000  # prior samples scored for blots (evaluation.blot_share)
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
    """Decoded images at every (x, y) of the grid, shape (len(grid_y), len(grid_x), H, W, C).

    Row 0 is the smallest y. One batched predict for the whole grid.
    """
    points = np.array([[x, y] for y in grid_y for x in grid_x], dtype="float32")
    return model.decode(points, batch_size).reshape(len(grid_y), len(grid_x), *model.image_shape)


def two_dimensional(latents):
    """The latents themselves if 2-D, else their first two principal components."""
    if latents.shape[1] == 2:
        return latents, ("z[0]", "z[1]"), ""
    projected = PCA(n_components=2, random_state=0).fit_transform(latents)
    return projected, ("principal component 1", "principal component 2"), " (PCA projection)"


def traversal_endpoints(test_labels, test_count, requested):
    """The two test indices to interpolate between, checked against the test set.

    By default the first test image of class 0 and the first of class 1 (for
    MNIST a 0 and a 1), or the first two test images.
    """
    if requested is None:
        if test_labels is not None and {0, 1} <= set(test_labels.tolist()):
            return int(np.argmax(test_labels == 0)), int(np.argmax(test_labels == 1))
        return 0, min(1, test_count - 1)
    for index in requested:
        if not 0 <= index < test_count:
            raise data.DataError(f"--traverse index {index} is outside the test set "
                                 f"(0..{test_count - 1}): pick two test-image indices")
    return tuple(requested)


class DataNames:
    """How the figures name the data's images and classes (from `data.Dataset`)."""

    def __init__(self, dataset):
        self.class_names = dataset.class_names
        self.labelled = dataset.labelled
        self.class_title = dataset.class_title
        self.colormap = dataset.image_colormap
        self.items = "digits" if self.class_title == "digit" else "images"

    def of(self, labels, index):
        """How the image at `index` is named in a title: "digit 7", "Sneaker", or "test 12"."""
        if not self.labelled:
            return f"test {index}"
        name = self.class_names[labels[index]]
        return f"digit {name}" if self.class_title == "digit" else name

    def classes(self, indices):
        """The names of the classes `indices`: "0 1 2" for digits, "cat, dog" otherwise."""
        separator = " " if self.class_title == "digit" else ", "
        return separator.join(self.class_names[index] for index in indices)


class FigureWriter:
    """Saves figures into the run folder and remembers their names."""

    def __init__(self, run_dir, show):
        self.run_dir = run_dir
        self.show = show
        self.written = []

    def __call__(self, figure, file_name):
        plots.save(figure, self.run_dir / file_name, self.show)
        self.written.append(file_name)


def write_latent_figures(save, model, kind, names, test_images, test_labels, test_latents,
                         traverse_endpoints, batch_size, trained_classes=None):
    """Latent scatter, reconstructions, traversal; manifold (2-D) and prior samples (VAE)."""
    name = kind.upper()
    if trained_classes:  # say so, or a scatter of mixed-up unseen classes looks like a bug
        name += f" (trained on {names.class_title}s {names.classes(trained_classes)} only)"
    title = (f"{name}: latent {'means' if kind == 'vae' else 'codes'} of "
             f"{len(test_latents):,} test {names.items}")
    if test_latents.shape[1] == 1:  # nothing to project: one strip of codes per class
        save(plots.latent_strip(test_latents[:, 0], test_labels, title, names.class_names,
                                names.class_title), "latent_scatter.png")
    else:
        points, axis_names, projection = two_dimensional(test_latents)
        save(plots.latent_scatter(points, test_labels, title + projection, axis_names,
                                  names.class_names, names.class_title), "latent_scatter.png")

    examples = np.arange(min(RECONSTRUCTION_EXAMPLES, len(test_images)))
    save(plots.image_rows([test_images[examples], model.decode(test_latents[examples], batch_size)],
                          ["original", "reconstruction"],
                          f"{name}: test {names.items} over their reconstructions",
                          [names.of(test_labels, index) for index in examples],
                          colormap=names.colormap),
         "reconstructions.png")

    start, end = traverse_endpoints
    fractions = np.linspace(0.0, 1.0, TRAVERSAL_STEPS, dtype="float32")[:, None]
    path = (1.0 - fractions) * test_latents[start] + fractions * test_latents[end]
    # One row: the start image, the decoded points along the line, the end image.
    row = np.concatenate([test_images[[start]], model.decode(path, batch_size),
                          test_images[[end]]])
    def endpoint_title(index):
        return f"test {index}" + (f"\n({names.of(test_labels, index)})" if names.labelled else "")

    save(plots.image_rows([row], [""],
                          f"{name}: a straight line in latent space between two test {names.items}",
                          [endpoint_title(start)]
                          + [f"t = {fraction:.2f}" for fraction in fractions[:, 0]]
                          + [endpoint_title(end)], colormap=names.colormap),
         "latent_traversal.png")

    if model.latent_dim == 2:
        grid_x, grid_y = latent_grid(test_latents, MANIFOLD_CELLS)
        # Flip the rows so that the top row of the picture is the largest z[1].
        save(plots.manifold(decode_grid(model, grid_x, grid_y, batch_size)[::-1], grid_x, grid_y,
                            f"{name}: what the decoder draws across the latent plane",
                            names.colormap),
             "manifold.png")

    if kind == "vae":
        samples = model.sample(PRIOR_SAMPLES, seed=0, batch_size=batch_size)
        save(plots.image_rows(samples.reshape(4, PRIOR_SAMPLES // 4, *model.image_shape),
                              [""] * 4, f"VAE: {PRIOR_SAMPLES} {names.items} decoded from "
                                        f"z ~ N(0, I)", colormap=names.colormap),
             "prior_samples.png")


def anomaly_section(save, model, kind, names, train_images, normal_classes, test_images,
                    test_labels, batch_size):
    """Scores the test set by the model's anomaly score; unseen classes are the anomalies.

    The threshold is the one stored with the run (for detect.py) where there is one.
    """
    train_errors = model.anomaly_scores(train_images, batch_size)
    test_errors = model.anomaly_scores(test_images, batch_size)
    report = evaluation.anomaly_report(train_errors, test_errors, test_labels, normal_classes,
                                       threshold=model.anomaly_threshold,
                                       percentile=model.threshold_percentile
                                       or evaluation.ANOMALY_PERCENTILE)
    report["auroc_per_class"] = {names.class_names[int(label)]: value
                                 for label, value in report.pop("auroc_per_digit").items()}
    is_anomaly = ~np.isin(test_labels, normal_classes)
    trained = f"{names.class_title}s {names.classes(normal_classes)}"
    classes = f"{names.class_title}s" if names.class_title == "digit" else "classes"
    save(plots.anomaly_histogram(test_errors[~is_anomaly], test_errors[is_anomaly],
                                 report["threshold"],
                                 f"{kind.upper()} trained on {trained}: test errors", classes,
                                 models.ANOMALY_SCORE_NAMES[model.anomaly_score]),
         "anomaly_hist.png")
    save(plots.roc_curve(is_anomaly, test_errors, report["auroc"],
                         f"{kind.upper()} trained on {trained}: unseen {classes} as anomalies",
                         classes, models.ANOMALY_SCORE_NAMES[model.anomaly_score]),
         "anomaly_roc.png")
    order = np.argsort(test_errors)
    most, least = order[::-1][:MONTAGE_IMAGES], order[:MONTAGE_IMAGES]
    save(plots.image_rows([test_images[most], test_images[least]],
                          ["most\nanomalous", "least\nanomalous"],
                          f"{kind.upper()} trained on {trained}: test images by reconstruction "
                          f"error (title: {names.class_title}, error)",
                          cell_titles=[[f"{names.class_names[test_labels[i]]}, "
                                        f"{test_errors[i]:.3f}" for i in indices]
                                       for indices in (most, least)],
                          colormap=names.colormap),
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
    # The run's data, as training loaded it, unless --data names other images.
    dataset = training.load_data(dataclasses.replace(
        settings, data=args.data or config.get("data", {}).get("path")))
    print(dataset.describe())
    if dataset.image_shape != model.image_shape:
        raise data.DataError(f"the images are {format_shape(dataset.image_shape)}, but the run "
                             f"was trained on {format_shape(model.image_shape)}: give --data "
                             f"with images like the run's")
    names = DataNames(dataset)
    endpoints = traversal_endpoints(dataset.y_test, len(dataset.x_test), args.traverse)
    keras.utils.set_random_seed(settings.seed)
    save = FigureWriter(run_dir, args.show)

    metrics = test_losses(model, dataset.x_test, args.batch_size)
    test_latents = model.encode(dataset.x_test, args.batch_size)   # (N_test, latent_dim)
    left_out = {}  # {metric: why it has no value on these data}
    if dataset.labelled:
        # The training images of the run, before any --digits filter: k-NN is fitted on all.
        train_images, train_labels = data.select_training_images(
            dataset.x_train, dataset.y_train, min(settings.train_limit, len(dataset.x_train)))
        train_latents = model.encode(train_images, args.batch_size)    # (N_train, latent_dim)
        for name, score in (
                ("knn5_accuracy", lambda: evaluation.knn_accuracy(train_latents, train_labels,
                                                                  test_latents, dataset.y_test)),
                ("silhouette", lambda: evaluation.silhouette(test_latents, dataset.y_test))):
            try:
                metrics[name] = score()
            except evaluation.MetricUndefined as why:
                left_out[name] = str(why)
    else:
        print("the images have no labels: k-NN accuracy, silhouette and class colours are "
              "left out")

    if kind == "vae":  # isolated spots of ink in what the decoder draws from the prior
        metrics["prior_blot_share"] = evaluation.blot_share(
            model.sample(BLOT_SAMPLES, seed=0, batch_size=args.batch_size))
    write_latent_figures(save, model, kind, names, dataset.x_test, dataset.y_test, test_latents,
                         endpoints, args.batch_size, settings.digits)
    if model.latent_dim == 2:
        grid_x, grid_y = latent_grid(test_latents, EXPLORER_CELLS)
        explorer.write_explorer(run_dir / "explorer.html", test_latents, dataset.y_test,
                                decode_grid(model, grid_x, grid_y, args.batch_size),
                                grid_x, grid_y, f"{kind.upper()} latent space explorer: "
                                                f"{run_dir.name}",
                                names.class_names, names.class_title, names.colormap)
        save.written.append("explorer.html")

    normal_classes = settings.digits
    if normal_classes:
        normal_images, _ = data.select_training_images(train_images, train_labels,
                                                       classes=normal_classes,
                                                       num_classes=len(dataset.class_names))
        try:
            metrics.update(anomaly_section(save, model, kind, names, normal_images,
                                           normal_classes, dataset.x_test, dataset.y_test,
                                           args.batch_size))
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
    if "auroc_per_class" in metrics:
        print(f"AUROC per unseen {names.class_title}: " + ", ".join(
            f"{name}: {value:.3f}" for name, value in metrics["auroc_per_class"].items()))
    print(f"wrote {', '.join(save.written)} into {run_dir}")
    return metrics


def format_shape(image_shape):
    height, width, channels = image_shape
    return f"{height} x {width} {'RGB' if channels == 3 else 'grayscale'}"


def main(args):
    """Analyses as `args` (a `settings.AnalysisSettings`) say; returns the exit status."""
    plots.set_headless(not args.show)
    return training.run_reporting_user_errors("analysis.py", analyse, args)
