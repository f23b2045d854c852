"""Figures, drawn headless with matplotlib's Agg backend and saved atomically as PNG.

Class colours follow the original scripts: the "rainbow" colormap over the
classes, so for the digits 0 = purple, 1 = indigo, 2 = blue, 3 = cyan,
4 = sea green, 5 = green, 6 = lime, 7 = yellow-orange, 8 = orange, 9 = red.

Images may be any size, grayscale (N, H, W, 1) or RGB (N, H, W, 3). RGB is
shown in colour; grayscale with a colormap: "gray_r" (ink dark on white, as
the original showed MNIST) or "gray" (as the image is).
"""

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import precision_recall_curve as sklearn_precision_recall_curve
from sklearn.metrics import roc_curve as sklearn_roc_curve

import atomic_files

DIGIT_COLORMAP = "rainbow"
IMAGE_COLORMAP = "gray_r"
HEAT_COLORMAP = "inferno"


def set_headless(headless=True):
    """Draws off-screen (Agg) unless windows are wanted (`--show`); call before any figure."""
    if headless:
        plt.switch_backend("Agg")


def class_colors(count=10):
    """The colour of each class in the scatter plots, as RGBA rows: "rainbow" over the classes.

    For ten classes these are the original scripts' digit colours.
    """
    return plt.get_cmap(DIGIT_COLORMAP)(np.linspace(0.0, 1.0, max(count, 2)))[:count]


def show_image(axis, image, colormap=IMAGE_COLORMAP):
    """Draws one (H, W, 1) or (H, W, 3) image in [0, 1] without ticks."""
    image = np.clip(np.asarray(image, dtype="float32"), 0.0, 1.0)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        axis.imshow(image, cmap=colormap, vmin=0.0, vmax=1.0)
    else:
        axis.imshow(image)
    axis.set_xticks([])
    axis.set_yticks([])


def save(figure, path, show=False):
    """Saves `figure` to `path` atomically, shows it if asked, then closes it."""
    with atomic_files.atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110, bbox_inches="tight")
    if show:
        plt.show()
    plt.close(figure)


def loss_curve(history, title):
    """Training and validation curves of each logged quantity, one panel each."""
    names = [name for name in ("loss", "mse", "kl") if name in history]
    figure, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
    for axis, name in zip(axes[0], names):
        epochs = np.arange(1, len(history[name]) + 1)
        axis.plot(epochs, history[name], marker="o", markersize=3, label="training")
        if "val_" + name in history:
            test_values = np.asarray(history["val_" + name], dtype=float)
            tested = np.isfinite(test_values)  # --test-every leaves the other epochs NaN
            axis.plot(epochs[tested], test_values[tested], marker="o", markersize=3, label="test")
        axis.set_xlabel("epoch")
        axis.set_ylabel(name)
        axis.set_title({"loss": "total loss", "mse": "reconstruction MSE",
                        "kl": "KL divergence"}[name])
        axis.legend()
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def latent_scatter(latents, labels, title, axis_names=("z[0]", "z[1]"), class_names=None,
                   class_title="digit"):
    """Test images' 2-D latent codes, coloured by class, with a legend naming each class.

    Args:
        labels: int array (N,) of class indices, or None (unlabelled: one colour).
        class_names: the name of each class (default: the digits 0..9).
        class_title: the legend's title, "digit" or "class".
    """
    figure, axis = plt.subplots(figsize=(7.5, 6.5))
    # Shuffled drawing order, so no class is painted over all the others.
    order = np.random.default_rng(0).permutation(len(latents))
    if labels is None:
        axis.scatter(latents[order, 0], latents[order, 1], color="tab:blue", s=3, alpha=0.6,
                     linewidths=0)
    else:
        class_names = class_names or [str(digit) for digit in range(10)]
        colors = class_colors(len(class_names))
        axis.scatter(latents[order, 0], latents[order, 1], c=colors[labels[order]], s=3,
                     alpha=0.7, linewidths=0)
        handles = [plt.Line2D([], [], linestyle="", marker="o", markersize=7, color=color,
                              label=name) for color, name in zip(colors, class_names)]
        axis.legend(handles=handles, title=class_title, loc="center left",
                    bbox_to_anchor=(1.01, 0.5))
    axis.set_xlabel(axis_names[0])
    axis.set_ylabel(axis_names[1])
    axis.set_title(title)
    axis.grid(alpha=0.3)
    return figure


def latent_strip(values, labels, title, class_names=None, class_title="digit",
                 axis_name="z[0]"):
    """Test images' 1-D latent codes as one strip of dots per class, coloured as in the scatter.

    Each dot sits at its code on the x axis and in its class's row, spread a
    little up and down at random so that dots on top of each other show.

    Args:
        labels: int array (N,) of class indices, or None (unlabelled: one strip).
        class_names: the name of each class (default: the digits 0..9).
        class_title: the y axis's name, "digit" or "class".
    """
    figure, axis = plt.subplots(figsize=(7.5, 5.5))
    jitter = np.random.default_rng(0).uniform(-0.3, 0.3, len(values))
    if labels is None:
        axis.scatter(values, jitter, color="tab:blue", s=3, alpha=0.6, linewidths=0)
        axis.set_yticks([])
    else:
        class_names = class_names or [str(digit) for digit in range(10)]
        colors = class_colors(len(class_names))
        axis.scatter(values, labels + jitter, c=colors[labels], s=3, alpha=0.6, linewidths=0)
        axis.set_yticks(range(len(class_names)), class_names)
        axis.set_ylim(-0.6, len(class_names) - 0.4)
        axis.set_ylabel(class_title)
    axis.set_xlabel(axis_name)
    axis.set_title(title)
    axis.grid(alpha=0.3, axis="x")
    return figure


def image_rows(rows, row_titles, title, column_titles=None, cell_titles=None,
               colormap=IMAGE_COLORMAP):
    """A grid of images: one row per entry of `rows`, each of shape (columns, H, W, C).

    `column_titles` label the top row's images; `cell_titles` (one list per row)
    label every image instead. `colormap` draws grayscale images.
    """
    columns = len(rows[0])
    figure, axes = plt.subplots(len(rows), columns, figsize=(1.3 * columns, 1.45 * len(rows)),
                                squeeze=False)
    for row_index, (row, row_title) in enumerate(zip(rows, row_titles)):
        for column_index in range(columns):
            axis = axes[row_index, column_index]
            show_image(axis, row[column_index], colormap)
            if column_index == 0:
                axis.set_ylabel(row_title)
            if cell_titles is not None:
                axis.set_title(cell_titles[row_index][column_index], fontsize=9)
            elif row_index == 0 and column_titles is not None:
                axis.set_title(column_titles[column_index], fontsize=9)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def show_heat_map(axis, image, anomaly_map, vmax):
    """An (H, W) anomaly map as a heat map over its (H, W, C) image, shown in gray."""
    image = np.clip(np.asarray(image, dtype="float32"), 0.0, 1.0)
    gray = image.mean(axis=-1) if image.ndim == 3 else image
    axis.imshow(gray, cmap="gray", vmin=0.0, vmax=1.0)
    heat = axis.imshow(anomaly_map, cmap=HEAT_COLORMAP, vmin=0.0, vmax=vmax, alpha=0.65)
    axis.set_xticks([])
    axis.set_yticks([])
    return heat


def anomaly_maps(images, reconstructions, maps, title, cell_titles=None,
                 colormap=IMAGE_COLORMAP):
    """One column per image: the image, its reconstruction, and its anomaly map over it.

    `maps` (N, H, W) share one colour scale, from 0 to their largest value, so
    that columns compare; the colour bar gives it.
    """
    columns = len(images)
    figure, axes = plt.subplots(3, columns, figsize=(1.5 * columns + 0.9, 4.6), squeeze=False)
    vmax = max(float(np.max(maps)), 1e-12)
    for column in range(columns):
        show_image(axes[0, column], images[column], colormap)
        show_image(axes[1, column], reconstructions[column], colormap)
        heat = show_heat_map(axes[2, column], images[column], maps[column], vmax)
        if cell_titles is not None:
            axes[0, column].set_title(cell_titles[column], fontsize=8)
    for row, label in enumerate(("input", "reconstruction", "where")):
        axes[row, 0].set_ylabel(label)
    figure.colorbar(heat, ax=axes[2, :].tolist(), fraction=0.05, pad=0.02,
                    label="part of the score")
    figure.suptitle(title, fontsize=10)
    return figure


def tile(images):
    """(rows, columns, H, W, C) images as one (rows * H, columns * W, C) picture."""
    rows, columns, height, width, channels = images.shape
    return images.transpose(0, 2, 1, 3, 4).reshape(rows * height, columns * width, channels)


def manifold(decoded, grid_x, grid_y, title, colormap=IMAGE_COLORMAP):
    """The decoder's images over a grid of the 2-D latent plane.

    Args:
        decoded: shape (len(grid_y), len(grid_x), H, W, C), the first row at the
            largest z[1], so the picture reads like a plot.
        grid_x, grid_y: the latent coordinates of the columns and rows.
    """
    canvas = np.clip(tile(np.asarray(decoded, dtype="float32")), 0.0, 1.0)
    figure, axis = plt.subplots(figsize=(8, 8))
    extent = (grid_x[0] - 0.5 * (grid_x[1] - grid_x[0]), grid_x[-1] + 0.5 * (grid_x[1] - grid_x[0]),
              grid_y[0] - 0.5 * (grid_y[1] - grid_y[0]), grid_y[-1] + 0.5 * (grid_y[1] - grid_y[0]))
    if canvas.shape[-1] == 1:
        axis.imshow(canvas[..., 0], cmap=colormap, vmin=0.0, vmax=1.0, extent=extent,
                    aspect="auto")
    else:
        axis.imshow(canvas, extent=extent, aspect="auto")
    axis.set_xlabel("z[0]")
    axis.set_ylabel("z[1]")
    axis.set_title(title)
    return figure


def anomaly_histogram(normal_errors, anomalous_errors, threshold, title, classes="digits",
                      score_name="per-image MSE"):
    """Anomaly-score histograms of normal and anomalous test images, threshold marked."""
    figure, axis = plt.subplots(figsize=(7.5, 4.5))
    upper = np.percentile(np.concatenate([normal_errors, anomalous_errors]), 99.5)
    bins = np.linspace(0.0, upper, 60)
    axis.hist(normal_errors, bins=bins, alpha=0.6, density=True, color="tab:blue",
              label=f"normal (trained {classes}), {len(normal_errors):,}")
    axis.hist(anomalous_errors, bins=bins, alpha=0.6, density=True, color="tab:red",
              label=f"anomalous (unseen {classes}), {len(anomalous_errors):,}")
    axis.axvline(threshold, color="black", linestyle="--",
                 label=f"threshold {threshold:.4f} (from training images)")
    axis.set_xlabel(f"reconstruction error ({score_name})")
    axis.set_ylabel("density")
    axis.set_title(title)
    axis.legend()
    return figure


def roc_curve(is_anomaly, scores, auroc, title, classes="digits", score_name="per-image MSE"):
    """The ROC curve of scoring anomalies by reconstruction error."""
    false_positive_rate, true_positive_rate, _ = sklearn_roc_curve(is_anomaly, scores)
    figure, axis = plt.subplots(figsize=(5.5, 5.2))
    axis.plot(false_positive_rate, true_positive_rate, label=f"{score_name} (AUROC {auroc:.3f})")
    axis.plot([0, 1], [0, 1], color="gray", linestyle=":", label="chance (AUROC 0.5)")
    axis.set_xlabel(f"false positive rate (normal {classes} flagged)")
    axis.set_ylabel(f"true positive rate (unseen {classes} flagged)")
    axis.set_title(title)
    axis.legend(loc="lower right")
    axis.grid(alpha=0.3)
    return figure


def precision_recall_curve(is_anomaly, scores, precision, recall, title):
    """The precision-recall curve of flagging by score, with the chosen threshold's point."""
    curve_precision, curve_recall, _ = sklearn_precision_recall_curve(is_anomaly, scores)
    figure, axis = plt.subplots(figsize=(5.5, 5.2))
    axis.plot(curve_recall, curve_precision, label="every threshold")
    axis.plot([recall], [precision], "o", color="tab:red",
              label=f"chosen: precision {precision:.3f}, recall {recall:.3f}")
    axis.axhline(np.mean(is_anomaly), color="gray", linestyle=":",
                 label=f"flag everything (precision {np.mean(is_anomaly):.3f})")
    axis.set_xlabel("recall (anomalous examples flagged)")
    axis.set_ylabel("precision (flagged examples that are anomalous)")
    axis.set_xlim(0, 1.02)
    axis.set_ylim(0, 1.02)
    axis.set_title(title, fontsize=9)
    axis.legend(loc="lower left")
    axis.grid(alpha=0.3)
    return figure
