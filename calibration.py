"""detect.py --calibrate: the run's threshold chosen from the user's own labelled examples.

    python detect.py RUN --calibrate NORMAL... --anomalous ANOMALOUS...    # the best F1
    python detect.py RUN --calibrate NORMAL... --target-false-positive-rate 0.01

An image is flagged when its score is above the threshold (`score > threshold`,
as `detect_anomalies` does), so every threshold worth choosing is one of the
examples' own scores:

- `--target-false-positive-rate R`: the lowest threshold that flags at most a
  share R of the normal examples: the normal score with at most floor(R * n)
  normal scores above it.
- the best F1 (needs anomalous examples): the lowest threshold whose F1 on
  both sets is the highest on scikit-learn's precision-recall curve.

The threshold is stored in the run folder (model.keras, model.weights.h5 and
config.json, rewritten atomically under the run's lock) with
`threshold_percentile` moved to its place on the training images' scale, and
config.json's `threshold_calibration` says how it was chosen. detect.py then
uses it; the percentile column, read off the training scores, is unchanged.
"""

import datetime
import math
import pathlib
import sys

import numpy as np
from sklearn.metrics import precision_recall_curve

import data
import detection
import plots
import run_folder
import run_lock

PR_CURVE_FILE = "calibration_pr_curve.png"


def threshold_for_false_positive_rate(normal_scores, rate):
    """The lowest threshold flagging (score > threshold) at most `rate` of `normal_scores`."""
    ordered = np.sort(np.asarray(normal_scores))
    allowed = math.floor(rate * len(ordered) + 1e-9)  # false positives allowed; 1e-9: 0.29 * 100
    return float(ordered[len(ordered) - 1 - allowed])


def threshold_for_best_f1(normal_scores, anomalous_scores):
    """The lowest threshold (score > threshold) with the best F1, and that F1.

    scikit-learn's curve counts `score >= t` as flagged, at each distinct score
    t; the same images are flagged by `score > s`, s the next lower score. When
    flagging all examples is best, the threshold sits one float32 step below
    the lowest score.
    """
    scores, labels = _scores_and_labels(normal_scores, anomalous_scores)
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    # The curve's last point (precision 1, recall 0) has no threshold.
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.nan_to_num(2 * precision[:-1] * recall[:-1] / (precision[:-1] + recall[:-1]))
    best = int(np.argmax(f1))
    below = scores[scores < thresholds[best]]
    threshold = below.max() if len(below) else np.nextafter(np.float32(thresholds[best]),
                                                            np.float32(-np.inf))
    return float(threshold), float(f1[best])


def _scores_and_labels(normal_scores, anomalous_scores):
    scores = np.concatenate([normal_scores, anomalous_scores]).astype("float32")
    labels = np.concatenate([np.zeros(len(normal_scores), bool),
                             np.ones(len(anomalous_scores), bool)])
    return scores, labels


def rates_at(threshold, normal_scores, anomalous_scores):
    """{false_positive_rate, and with anomalies precision, recall, f1} at `threshold`."""
    normal_flagged = int(np.sum(np.asarray(normal_scores) > threshold))
    figures = {"false_positive_rate": normal_flagged / len(normal_scores)}
    if len(anomalous_scores):
        anomalous_flagged = int(np.sum(np.asarray(anomalous_scores) > threshold))
        flagged = normal_flagged + anomalous_flagged
        precision = anomalous_flagged / flagged if flagged else 1.0
        recall = anomalous_flagged / len(anomalous_scores)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        figures.update(precision=precision, recall=recall, f1=f1)
    return figures


def example_scores(model, inputs, args, flag):
    """The anomaly scores of the examples `inputs` names; a DataError if none can be scored."""
    collected = detection.collect_inputs(inputs, model.image_shape, args.resize,
                                         args.skip_unreadable)
    if not any(collected.scored):
        raise data.DataError(f"none of the {len(collected.sources):,} {flag} examples could be "
                             f"scored (the first: {collected.notes[0]}): give readable images "
                             f"in the run's size")
    return model.anomaly_scores(collected.images, args.batch_size)


def describe(method, args):
    """"the best F1" or "a false-positive rate of at most 0.01"."""
    if method == "best_f1":
        return "the best F1"
    return f"a false-positive rate of at most {args.target_false_positive_rate:g}"


def calibrate(args):
    """Chooses the threshold as `args` say, stores it in the run folder and reports it.

    Returns the `threshold_calibration` record stored in config.json.
    """
    model, config = run_folder.load_model(args.run_dir)
    detection.threshold_of(model, config)  # older runs: their training scores, for percentiles
    normal_scores = example_scores(model, args.calibrate, args, "--calibrate")
    anomalous_scores = (example_scores(model, args.anomalous, args, "--anomalous")
                        if args.anomalous else np.zeros(0, dtype="float32"))
    if args.target_false_positive_rate is not None:
        method = "target_false_positive_rate"
        threshold = threshold_for_false_positive_rate(normal_scores,
                                                      args.target_false_positive_rate)
    else:
        method = "best_f1"
        threshold, _ = threshold_for_best_f1(normal_scores, anomalous_scores)
    figures = rates_at(threshold, normal_scores, anomalous_scores)
    previous = model.anomaly_threshold
    model.anomaly_threshold = threshold
    model.threshold_percentile = float(model.score_percentiles([threshold])[0])
    record = {
        "method": method,
        "target_false_positive_rate": args.target_false_positive_rate,
        "normal_examples": len(normal_scores),
        "anomalous_examples": len(anomalous_scores),
        "threshold": threshold,
        "previous_threshold": previous,
        "training_percentile": model.threshold_percentile,
        **figures,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    curve = None
    if len(anomalous_scores):
        curve = pathlib.Path(args.pr_curve or pathlib.Path(args.run_dir) / PR_CURVE_FILE)
        scores, labels = _scores_and_labels(normal_scores, anomalous_scores)
        plots.save(plots.precision_recall_curve(
            labels, scores, figures["precision"], figures["recall"],
            f"threshold {threshold:.4g} for {describe(method, args)}: {len(normal_scores):,} "
            f"normal, {len(anomalous_scores):,} anomalous examples"), curve)
    config = dict(config, model_config=model.get_config(), threshold_calibration=record,
                  settings=config["settings"].to_dict())
    with run_lock.hold_run_folder(args.run_dir):
        run_folder.write_run(args.run_dir, model, config)
    reached = (f"precision {figures['precision']:.3f}, recall {figures['recall']:.3f}, "
               f"F1 {figures['f1']:.3f}, " if len(anomalous_scores) else "")
    print(f"detect.py: threshold {threshold:.4g} for {describe(method, args)} (the "
          f"{model.threshold_percentile:.1f}th percentile of the training scores), "
          f"stored in {args.run_dir}: {reached}false-positive rate "
          f"{figures['false_positive_rate']:.3f} on {len(normal_scores):,} normal"
          + (f" and {len(anomalous_scores):,} anomalous" if len(anomalous_scores) else "")
          + " examples" + (f"; precision-recall curve {curve}" if curve else ""),
          file=sys.stderr)
    return record
