"""Held-out numbers for a trained model: latent-space quality and anomaly detection.

All metrics but PRO come from scikit-learn (PRO's regions from SciPy); this
module only decides what is compared with what.
"""

import numpy as np
from scipy import ndimage
from sklearn.metrics import precision_score, recall_score, roc_auc_score, silhouette_score
from sklearn.neighbors import KNeighborsClassifier

ANOMALY_PERCENTILE = 99.0


class MetricUndefined(ValueError):
    """A metric has no value on these data (one class, too few images); the message says why."""


def knn_accuracy(train_latents, train_labels, test_latents, test_labels, neighbours=5):
    """Test accuracy of a k-nearest-neighbour digit classifier fitted on training latents.

    A high value means that images of one digit sit together in latent space.

    Raises:
        MetricUndefined: with fewer training images than `neighbours`.
    """
    if len(train_latents) < neighbours:
        raise MetricUndefined(f"needs at least {neighbours} training images, "
                              f"got {len(train_latents)}")
    classifier = KNeighborsClassifier(n_neighbors=neighbours)
    classifier.fit(train_latents, train_labels)
    return float(classifier.score(test_latents, test_labels))


def silhouette(latents, labels):
    """Mean silhouette coefficient of the latents grouped by digit, in [-1, 1].

    Near 1: tight, well separated digit clusters; near 0: overlapping ones.

    Raises:
        MetricUndefined: unless there are 2 or more digits, and more images than digits.
    """
    classes = len(np.unique(labels))
    if not 2 <= classes < len(labels):
        raise MetricUndefined(f"needs 2 or more digits in the test set and more images than "
                              f"digits; it has {classes} digit{'s' if classes != 1 else ''} "
                              f"in {len(labels)} image{'s' if len(labels) != 1 else ''}")
    return float(silhouette_score(latents, labels, metric="euclidean"))


def blot_mask(images, level=0.9, contrast=0.3, peak_margin=0.15):
    """Where the blots are: pixels of at least `level` that are at least `contrast` above
    the mean of their 8 neighbours and at least `peak_margin` above the second-largest
    of them (an isolated spot of ink).

    The first two conditions alone also flag the sharp edge of a thin stroke,
    such as a thin 1, whose pixel has one or two bright neighbours along the
    stroke; the third asks that at most one neighbour comes near the pixel.

    Args:
        images: (N, H, W) or (N, H, W, C) in [0, 1]; channels are averaged.
        peak_margin: None to leave the third condition out.
    Returns:
        A bool array (N, H, W).
    """
    images = np.asarray(images, dtype="float64")
    if images.ndim == 4:
        images = images.mean(axis=-1)
    padding = ((0, 0), (1, 1), (1, 1))
    neighbour_mean = _neighbours(np.pad(images, padding, mode="edge")).mean(axis=0)
    mask = (images >= level) & (images - neighbour_mean >= contrast)
    if peak_margin is not None:
        # Here the neighbours outside the image are absent (-inf), not copies of the edge: a
        # corner pixel's copies of itself would otherwise be its brightest neighbours.
        absent_outside = np.pad(images, padding, constant_values=-np.inf)
        second_largest = np.sort(_neighbours(absent_outside), axis=0)[-2]
        mask &= images - second_largest >= peak_margin
    return mask


def _neighbours(padded):
    """The 8 neighbours of every pixel, (8, N, H, W), from images padded by one pixel,
    (N, H + 2, W + 2)."""
    height, width = padded.shape[1] - 2, padded.shape[2] - 2
    return np.stack([padded[:, 1 + rows:1 + rows + height, 1 + columns:1 + columns + width]
                     for rows in (-1, 0, 1) for columns in (-1, 0, 1) if (rows, columns) != (0, 0)])


def blot_share(images, level=0.9, contrast=0.3, peak_margin=0.15):
    """The share of images with at least one blot (`blot_mask`)."""
    return float(blot_mask(images, level, contrast, peak_margin).any(axis=(1, 2)).mean())


def anomaly_report(train_errors, test_errors, test_labels, normal_digits,
                   percentile=ANOMALY_PERCENTILE, threshold=None):
    """Scores test images as anomalies by their reconstruction error.

    Digits in `normal_digits` are normal (label 0), all others anomalous (1).
    The threshold, unless given, is the `percentile`-th percentile of the
    training images' errors, so it is chosen without looking at any anomaly.

    Returns:
        A dict with `auroc` (overall ROC AUC), `auroc_per_digit` ({digit: AUC
        of that unseen digit against the normal test images}), `threshold`,
        `threshold_percentile`, `precision` and `recall` of "error above the
        threshold" on the test set, and the counts of normal and anomalous
        test images.

    Raises:
        MetricUndefined: unless the test set has both normal and anomalous digits.
    """
    test_labels = np.asarray(test_labels)
    is_anomaly = ~np.isin(test_labels, list(normal_digits))
    if is_anomaly.all() or not is_anomaly.any():
        raise MetricUndefined("needs both trained and unseen digits in the test set; it has only "
                              + ("unseen" if is_anomaly.all() else "trained") + " digits")
    if threshold is None:
        threshold = float(np.percentile(train_errors, percentile))
    flagged = test_errors > threshold
    normal = ~is_anomaly
    per_digit = {}
    for digit in sorted(set(test_labels[is_anomaly].tolist())):
        chosen = normal | (test_labels == digit)
        per_digit[str(digit)] = float(roc_auc_score(test_labels[chosen] == digit,
                                                    test_errors[chosen]))
    return {
        "auroc": float(roc_auc_score(is_anomaly, test_errors)),
        "auroc_per_digit": per_digit,
        "threshold": threshold,
        "threshold_percentile": percentile,
        "precision": float(precision_score(is_anomaly, flagged, zero_division=0)),
        "recall": float(recall_score(is_anomaly, flagged)),
        "normal_test_images": int(normal.sum()),
        "anomalous_test_images": int(is_anomaly.sum()),
    }


def pixel_auroc(masks, maps):
    """ROC AUC of the map's values as a score for the defect pixels, over all pixels given.

    Args:
        masks: bool (N, H, W), True on defect pixels; needs both kinds of pixel.
        maps: (N, H, W) anomaly maps, larger where a pixel looks more anomalous.

    Raises:
        MetricUndefined: if every pixel is a defect pixel, or none is.
    """
    masks = np.asarray(masks, bool).ravel()
    if masks.all() or not masks.any():
        raise MetricUndefined("pixel AUROC needs both defect and defect-free pixels")
    return float(roc_auc_score(masks, np.asarray(maps, "float64").ravel()))


def per_region_overlap(masks, maps, max_false_positive_rate=0.3):
    """PRO (Bergmann et al. 2019, MVTec AD): the per-region overlap integrated over the
    false-positive rate from 0 to `max_false_positive_rate`, divided by it; in [0, 1].

    Each connected defect region (8-connected, `scipy.ndimage.label`, per image)
    counts equally, however large: at a threshold t, the overlap is the mean over
    regions of the share of the region's pixels whose map value exceeds t, and the
    false-positive rate is the share of defect-free pixels that exceed it. Every
    distinct map value is a threshold, so the curve is exact; it is joined by
    straight lines from (0, 0) and integrated with the trapezoid rule.

    Args:
        masks: bool (N, H, W), True on defect pixels; needs both kinds of pixel.
        maps: (N, H, W) anomaly maps, larger where a pixel looks more anomalous.

    Raises:
        MetricUndefined: if every pixel is a defect pixel, or none is.
    """
    masks = np.asarray(masks, bool)
    if masks.all() or not masks.any():
        raise MetricUndefined("PRO needs both defect and defect-free pixels")
    # Regions numbered across all images: label each image on its own, then offset.
    regions = np.zeros(masks.shape, dtype=np.int64)
    count = 0
    for index, mask in enumerate(masks):
        labels, found = ndimage.label(mask, structure=np.ones((3, 3)))
        regions[index] = np.where(labels > 0, labels + count, 0)
        count += found
    regions = regions.ravel()
    sizes = np.bincount(regions)                      # sizes[0]: the defect-free pixels
    # Lowering the threshold past a pixel adds 1 / (regions * its region's size) to the mean
    # overlap if it is a defect pixel, or 1 / (defect-free pixels) to the false-positive rate.
    overlap_step = np.where(regions > 0, 1.0 / (count * sizes[regions]), 0.0)
    false_positive_step = np.where(regions == 0, 1.0 / sizes[0], 0.0)
    order = np.argsort(-np.asarray(maps, "float64").ravel(), kind="stable")
    values = np.asarray(maps, "float64").ravel()[order]
    overlaps = np.cumsum(overlap_step[order])
    false_positive_rates = np.cumsum(false_positive_step[order])
    # Pixels of equal value pass a threshold together: keep the last of each run of ties.
    last = np.r_[values[1:] != values[:-1], True]
    overlaps = np.r_[0.0, overlaps[last]]
    false_positive_rates = np.r_[0.0, false_positive_rates[last]]
    # The curve up to the limit, ended on the straight line that crosses it.
    inside = int(np.searchsorted(false_positive_rates, max_false_positive_rate, side="right"))
    rates, overlaps_inside = false_positive_rates[:inside], overlaps[:inside]
    if inside < len(overlaps):
        share = ((max_false_positive_rate - rates[-1])
                 / (false_positive_rates[inside] - rates[-1]))
        rates = np.r_[rates, max_false_positive_rate]
        overlaps_inside = np.r_[overlaps_inside, overlaps_inside[-1]
                                + share * (overlaps[inside] - overlaps_inside[-1])]
    area = np.trapezoid(overlaps_inside, rates)
    return float(area / max_false_positive_rate)
