"""How well the anomaly maps find synthetic defects: image AUROC, pixel AUROC and PRO.

    python benchmarks/localisation.py runs/ae                          # 1,000 + 1,000 images
    python benchmarks/localisation.py runs/ae --images 300 --seed 1 --out loc.json
    python benchmarks/localisation.py runs/ae --pictures docs/localisation_examples.png
    python benchmarks/localisation.py --help                           # every flag and its default

It trains nothing. From the run's own data it takes 2 x `--images` held-out
test images of the classes the run trained on (a seeded draw): the first half
stays clean, the second half gets one defect each (`defects.py`: CutPaste,
strokes and Perlin blobs, in turn), with the mask of the pixels the defect
changed. Each candidate map is computed from the images and the model's
deterministic reconstructions, and scored:

  image AUROC   defective against clean images, by the map's sum over the image
                (for `squared-error` and `relative` that sum is the run's
                anomaly score of that name) and, in the JSON, by its maximum;
  pixel AUROC   the map's values over all pixels of the defective images, the
                defect pixels against the rest (`evaluation.pixel_auroc`);
  PRO           the per-region overlap up to a 30 % false-positive rate over
                the same pixels, divided by 0.3 (`evaluation.per_region_overlap`,
                Bergmann et al. 2019),

per defect kind and over all kinds. The maps (each also smoothed with a
Gaussian of sigma 1 and 2 pixels, `+gauss1`, `+gauss2`; the smoothing reflects
at the borders, so it keeps each map's sum and hence its image score):

  squared-error  (x - x̂)^2 per pixel (`losses.squared_error_map`)
  relative       the relative squared error's per-pixel terms: 2 x 2 blocks over
                 the ink of both images (`losses.relative_squared_error_map`)
  ssim           1 - SSIM(x, x̂) in a 7 x 7 Gaussian window, sigma 1.5
                 (Bergmann et al. 2019, "Improving unsupervised defect
                 segmentation by applying structural similarity to autoencoders")
  intensity      baseline without a model: the image itself (ink is suspect)
  mean-distance  baseline without a model: (x - mean training image)^2

The best map is the model's map with the highest pixel AUROC over all kinds
(ties to 3 decimals broken by PRO); the best baseline likewise. It prints a
table per map and one JSON line; `--out` writes the JSON and `--pictures` a PNG
of defective images, their masks, reconstructions, and the best baseline's,
the run's own and the best map.
"""

import json
import os
import pathlib
import sys

import numpy as np
from scipy import ndimage

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import defects  # noqa: E402  (NumPy only)
import settings  # noqa: E402  (light: no Keras, so the flags are parsed before Keras loads)

PROG = "localisation.py"
BASE_MAPS = ("squared-error", "relative", "ssim", "intensity", "mean-distance")
BASELINES = ("intensity", "mean-distance")
SMOOTHING_SIGMAS = (1.0, 2.0)
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 2.0                 # radius int(2.0 * 1.5 + 0.5) = 3: a 7 x 7 window
SSIM_CONSTANTS = (0.01 ** 2, 0.03 ** 2)   # (K1 L)^2, (K2 L)^2 for L = 1 (Wang et al. 2004)
MAX_FALSE_POSITIVE_RATE = 0.3
PICTURES_PER_KIND = 3


def build_parser():
    parser = settings.OneLineParser(
        prog=PROG, formatter_class=settings.DefaultsHelpFormatter,
        description="Paste synthetic defects into held-out images of a run's classes and "
                    "measure how well each anomaly map finds them (image AUROC, pixel AUROC, "
                    "PRO), against baselines that need no model.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a trained run folder")
    parser.add_argument("--images", type=settings.positive_int, default=1000,
                        help="clean images, and as many defective ones")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the images drawn and of their defects")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    parser.add_argument("--pictures", default=None,
                        help="write a PNG of defective images, masks and maps here")
    return parser


def smooth(maps, sigma):
    """(N, H, W) maps blurred over H and W by a Gaussian; reflecting at the borders keeps
    each map's sum."""
    return ndimage.gaussian_filter(maps, sigma=(0, sigma, sigma), mode="reflect")


def ssim_map(images, reconstructions, sigma=SSIM_SIGMA, truncate=SSIM_TRUNCATE):
    """1 - SSIM of each pixel's Gaussian window, averaged over channels: (N, H, W), in [0, 2]."""
    def local_mean(values):
        return ndimage.gaussian_filter(values, sigma=(0, sigma, sigma, 0), truncate=truncate,
                                       mode="reflect")

    x = np.asarray(images, "float64")
    y = np.asarray(reconstructions, "float64")
    mean_x, mean_y = local_mean(x), local_mean(y)
    variance_x = local_mean(x * x) - mean_x ** 2
    variance_y = local_mean(y * y) - mean_y ** 2
    covariance = local_mean(x * y) - mean_x * mean_y
    c1, c2 = SSIM_CONSTANTS
    similarity = ((2 * mean_x * mean_y + c1) * (2 * covariance + c2)
                  / ((mean_x ** 2 + mean_y ** 2 + c1) * (variance_x + variance_y + c2)))
    return (1.0 - similarity).mean(axis=-1)


def candidate_maps(images, reconstructions, mean_training_image):
    """{map name: (N, H, W) float64} for images (N, H, W, C) and their reconstructions."""
    from keras import ops

    import losses

    base = {
        "squared-error": ops.convert_to_numpy(losses.squared_error_map(images, reconstructions)),
        "relative": ops.convert_to_numpy(
            losses.relative_squared_error_map(images, reconstructions)),
        "ssim": ssim_map(images, reconstructions),
        "intensity": np.asarray(images).mean(axis=-1),
        "mean-distance": np.square(np.asarray(images) - mean_training_image).mean(axis=-1),
    }
    maps = {}
    for name, values in base.items():
        maps[name] = np.asarray(values, "float64")
        for sigma in SMOOTHING_SIGMAS:
            maps[f"{name}+gauss{sigma:g}"] = smooth(maps[name], sigma)
    return maps


def score_map(maps, masks, kinds, clean_count):
    """The figures of one map: {kind or "all": {image_auroc, image_auroc_max, pixel_auroc, pro}}.

    `maps` (2N, H, W) are the clean images' maps, then the defective ones';
    `masks` and `kinds` (N, ...) belong to the defective images.
    """
    import evaluation
    from sklearn.metrics import roc_auc_score

    sums, peaks = maps.sum(axis=(1, 2)), maps.max(axis=(1, 2))
    clean, defective = slice(0, clean_count), slice(clean_count, None)
    figures = {}
    for kind in [*defects.KINDS, "all"]:
        chosen = np.ones(len(kinds), bool) if kind == "all" else kinds == kind
        if not chosen.any():
            continue
        is_defective = np.r_[np.zeros(clean_count, bool), np.ones(chosen.sum(), bool)]
        figures[kind] = {
            "image_auroc": float(roc_auc_score(is_defective,
                                               np.r_[sums[clean], sums[defective][chosen]])),
            "image_auroc_max": float(roc_auc_score(is_defective,
                                                   np.r_[peaks[clean], peaks[defective][chosen]])),
            "pixel_auroc": evaluation.pixel_auroc(masks[chosen], maps[defective][chosen]),
            "pro": evaluation.per_region_overlap(masks[chosen], maps[defective][chosen],
                                                 MAX_FALSE_POSITIVE_RATE),
        }
    return figures


def held_out_images(config, count, seed):
    """2 x `count` held-out test images of the run's classes (a seeded draw), and the
    run's training images' mean, (H, W, C)."""
    import data
    import training

    run_settings = config["settings"]
    dataset = training.load_data(run_settings)
    images = dataset.x_test
    if dataset.labelled and run_settings.digits is not None:
        images = images[np.isin(dataset.y_test, run_settings.digits)]
    if len(images) < 2 * count:
        raise data.DataError(f"--images {count} needs {2 * count:,} held-out test images of the "
                             f"run's classes, and its data has {len(images):,}: lower --images")
    chosen = np.random.default_rng(seed).permutation(len(images))[:2 * count]
    train_images, _ = training.training_images(run_settings, dataset, limit_given=False)
    return images[np.sort(chosen)], train_images.mean(axis=0)


def table(results, run_map):
    """A Markdown table: one row per map, pixel AUROC and PRO per kind, image AUROC overall."""
    kinds = [kind for kind in [*defects.KINDS, "all"] if kind in next(iter(results.values()))]
    header = ("| map | " + " | ".join(f"pixel AUROC {kind}" for kind in kinds) + " | "
              + " | ".join(f"PRO {kind}" for kind in kinds) + " | image AUROC (sum) | "
              "image AUROC (max) |")
    lines = [header, "| --- |" + " ---: |" * (2 * len(kinds) + 2)]
    for name, figures in results.items():
        label = f"{name} (the run's map)" if name == run_map else name
        if is_baseline(name):
            label += " (baseline)"
        cells = ([f"{figures[kind]['pixel_auroc']:.3f}" for kind in kinds]
                 + [f"{figures[kind]['pro']:.3f}" for kind in kinds]
                 + [f"{figures['all']['image_auroc']:.3f}",
                    f"{figures['all']['image_auroc_max']:.3f}"])
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def is_baseline(name):
    return name.split("+")[0] in BASELINES


def best_map(results, baselines=False):
    """The model's map (or with `baselines`, the baseline) with the highest pixel AUROC over
    all kinds, ties (to 3 decimals) broken by PRO."""
    names = [name for name in results if is_baseline(name) == baselines]
    return max(names, key=lambda name: (round(results[name]["all"]["pixel_auroc"], 3),
                                        results[name]["all"]["pro"]))


def examples_figure(defective, masks, reconstructions, kinds, maps, shown, title):
    """Columns of defective images (PICTURES_PER_KIND per kind): the image, its defect mask in
    red over it, the reconstruction, then each map in `shown` as a heat map over the image.
    Each map's row has one colour scale, from 0 to its largest value in the row."""
    import matplotlib.pyplot as plt

    import plots

    columns = [index for kind in defects.KINDS
               for index in np.flatnonzero(kinds == kind)[:PICTURES_PER_KIND]]
    rows = 3 + len(shown)
    figure, axes = plt.subplots(rows, len(columns), figsize=(1.25 * len(columns) + 1.2,
                                                             1.3 * rows), squeeze=False)
    for column, index in enumerate(columns):
        plots.show_image(axes[0, column], defective[index])
        axes[0, column].set_title(kinds[index], fontsize=8)
        plots.show_image(axes[1, column], defective[index])
        overlay = np.zeros((*masks[index].shape, 4))
        overlay[masks[index]] = (1.0, 0.0, 0.0, 0.7)
        axes[1, column].imshow(overlay)
        plots.show_image(axes[2, column], reconstructions[index])
        for row, name in enumerate(shown, start=3):
            vmax = max(float(maps[name][columns].max()), 1e-12)
            plots.show_heat_map(axes[row, column], defective[index], maps[name][index], vmax)
    for row, label in enumerate(["defective", "defect", "reconstruction", *shown]):
        axes[row, 0].set_ylabel(label, fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def run(args):
    import atomic_files
    import plots
    import run_folder

    model, config = run_folder.load_model(args.run_dir)
    images, mean_training_image = held_out_images(config, args.images, args.seed)
    clean, originals = images[:args.images], images[args.images:]
    defective, masks, kinds = defects.defect_set(originals, seed=args.seed)
    inputs = np.concatenate([clean, defective])
    reconstructions = model.reconstruct(inputs)
    maps = candidate_maps(inputs, reconstructions, mean_training_image)
    results = {name: score_map(values, masks, kinds, args.images)
               for name, values in maps.items()}
    run_map = {"mse": "squared-error", "relative": "relative"}[model.anomaly_score]
    best, best_baseline = best_map(results), best_map(results, baselines=True)
    print(f"{args.run_dir}: {args.images:,} clean and {args.images:,} defective held-out images "
          f"(seed {args.seed}), defect pixels {masks.mean():.1%}; best map by pixel AUROC: "
          f"{best}, best baseline: {best_baseline}")
    print(table(results, run_map))
    summary = {"run": str(args.run_dir), "images": args.images, "seed": args.seed,
               "run_map": run_map, "best_map": best, "best_baseline": best_baseline,
               "defect_pixel_share": float(masks.mean()),
               "defect_counts": {kind: int((kinds == kind).sum()) for kind in defects.KINDS},
               "maps": results}
    if args.out is not None:
        atomic_files.write_json(args.out, summary)
    if args.pictures is not None:
        plots.set_headless()
        shown = list(dict.fromkeys([best_baseline, run_map, best]))
        aurocs = ", ".join(f"{name} {results[name]['all']['pixel_auroc']:.3f}"
                           for name in shown)
        title = (f"{pathlib.Path(args.run_dir).name}: synthetic defects and anomaly maps "
                 f"(pixel AUROC over all {args.images:,}: {aurocs})")
        plots.save(examples_figure(defective, masks, reconstructions[args.images:], kinds,
                                   {name: maps[name][args.images:] for name in shown}, shown,
                                   title), args.pictures)
    print(json.dumps(summary))
    return summary


def main(argv=None):
    args = build_parser().parse_args(argv)
    import training  # Keras loads here, after the flags

    return training.run_reporting_user_errors(PROG, run, args)


if __name__ == "__main__":
    sys.exit(main())
