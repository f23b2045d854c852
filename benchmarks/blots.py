"""Blots in what a VAE draws from its prior: their share, and a picture of the flagged samples.

    python benchmarks/blots.py runs/vae                         # one run
    python benchmarks/blots.py runs/seed_table/vae-*-seed2 --out runs/blots
    python benchmarks/blots.py --help                           # every flag and its default

For each VAE run folder: decode `--samples` latents drawn from N(0, I) (seed 0,
as `analysis.py` does for `prior_blot_share`), count the samples with a blot
(`evaluation.blot_mask`: a pixel of at least 0.9 that is at least 0.3 above the
mean of its 8 neighbours and at least 0.15 above the second-largest of them),
and save `--out/RUN-blots.png`: up to 16 flagged
samples with the flagged pixels circled. The circles show whether a flag is a
spot of ink (a blot) or the end of a thin stroke, which the measure still
counts (the third condition leaves out the stroke's sides). For labelled data it also prints the class of the test image whose
latent mean lies nearest to each flagged sample's latent, and the flagged
latents' mean distance from the origin. The last line printed is one JSON
object {run: blot share}.
"""

import collections
import json
import os
import pathlib
import sys

import matplotlib.pyplot as plt
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import settings  # noqa: E402  (light: no Keras, so the flags are parsed before Keras loads)

PROG = "blots.py"
SHOWN = 16


def build_parser():
    parser = settings.OneLineParser(
        prog=PROG, formatter_class=settings.DefaultsHelpFormatter,
        description="Share of prior samples with a blot, and a picture of the flagged ones, "
                    "for each VAE run folder.")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="VAE run folders")
    parser.add_argument("--samples", type=settings.positive_int, default=2000,
                        help="latents drawn from N(0, I) per run")
    parser.add_argument("--out", default="runs/blots", help="folder for the pictures")
    return parser


def flagged_figure(samples, masks, title, colormap):
    """Up to SHOWN flagged samples, their flagged pixels circled in red."""
    figure, axes = plt.subplots(2, SHOWN // 2, figsize=(SHOWN / 2 * 1.3, 3.2))
    for index, axis in enumerate(axes.flat):
        axis.set_axis_off()
        if index >= len(samples):
            continue
        image = samples[index]
        axis.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap=colormap,
                    vmin=0, vmax=1)
        rows, columns = masks[index].nonzero()
        axis.scatter(columns, rows, s=40, facecolors="none", edgecolors="red", linewidths=1)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def nearest_test_classes(model, config, latents):
    """How many of `latents` lie nearest (1-NN) to a test image's latent mean of each class.

    Returns a `collections.Counter` {class name: count}, empty for unlabelled data.
    """
    import training
    from sklearn.neighbors import KNeighborsClassifier

    dataset = training.load_data(config["settings"])
    if not dataset.labelled or not len(latents):
        return collections.Counter()
    classifier = KNeighborsClassifier(n_neighbors=1).fit(model.encode(dataset.x_test),
                                                         dataset.y_test)
    return collections.Counter(dataset.class_names[label] for label in classifier.predict(latents))


def run(args):
    import evaluation
    import plots
    import run_folder

    out_dir = pathlib.Path(args.out)
    shares = {}
    for run_dir in map(pathlib.Path, args.run_dirs):
        model, config = run_folder.load_model(run_dir)
        if not model.variational:
            raise run_folder.RunFolderError(f"{run_dir} holds an AE, which has no prior to "
                                            f"sample: give VAE run folders")
        # The latents that model.sample(count, seed=0) decodes, kept to say where flags lie.
        prior = np.random.default_rng(0).standard_normal((args.samples, model.latent_dim))
        samples = model.decode(prior)
        masks = evaluation.blot_mask(samples)
        flagged = masks.any(axis=(1, 2)).nonzero()[0]
        shares[str(run_dir)] = len(flagged) / args.samples
        nearest = nearest_test_classes(model, config, prior[flagged])
        if nearest:
            print(f"{run_dir}: the flagged samples lie nearest to test images of class "
                  + ", ".join(f"{name} ({count})" for name, count in nearest.most_common())
                  + f"; mean |z| {np.linalg.norm(prior[flagged], axis=1).mean():.2f} flagged, "
                    f"{np.linalg.norm(prior, axis=1).mean():.2f} all")
        out_dir.mkdir(parents=True, exist_ok=True)
        picture = out_dir / f"{run_dir.name}-blots.png"
        title = (f"{run_dir.name}: {len(flagged)} of {args.samples:,} prior samples flagged "
                 f"({len(flagged) / args.samples:.2%})"
                 + ("" if len(flagged) <= SHOWN else f", the first {SHOWN} shown"))
        plots.save(flagged_figure(samples[flagged[:SHOWN]], masks[flagged[:SHOWN]], title,
                                  "gray_r"), picture)
        print(f"{run_dir}: {len(flagged)} of {args.samples:,} samples flagged "
              f"({len(flagged) / args.samples:.2%}); wrote {picture}", flush=True)
    print(json.dumps(shares))
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    import training  # Keras loads here, after the flags

    return training.run_reporting_user_errors(PROG, run, args)


if __name__ == "__main__":
    sys.exit(main())
