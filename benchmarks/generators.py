"""The VAE against the AE as a generator: samples of each, scored by a digit classifier.

The original README says that "the primary difference between a VAE and
Vanilla Autoencoder is the VAE operates better for generative applications".
This measures it, fairly to both models:

  VAE   decodes latent points drawn from its prior N(0, I) (`VAE.sample`);
  AE    decodes latent points drawn from a Gaussian fitted (mean and full
        covariance) to its codes of the training images, since nothing pulls
        its codes towards N(0, I).

For a check on where the difference comes from, the VAE is also sampled the
AE's way (a Gaussian fitted to its latent means of the training images).

A small convolutional digit classifier, trained here on the same training
images, scores the samples, and the same number of real test digits for
comparison:

  confident_share   share of images it recognizes with a probability above 0.9
  class_entropy     entropy (bits) of its predicted-digit histogram: log2(10) =
                    3.32 when all ten digits appear equally often, 0 for one digit
  frechet_distance  Fréchet distance between its penultimate-layer features of
                    the images and those of the reference test images (the
                    idea of FID, with this MNIST classifier in place of
                    Inception); lower is closer to real digits

    python benchmarks/latent_sweep.py         # first: it trains the latent-2 runs read here
    python benchmarks/generators.py           # the two latent-2 runs of the sweep
    python benchmarks/generators.py --vae-run runs/vae --ae-run runs/ae
    python benchmarks/generators.py --help    # every flag and its default

Into --out it writes `generators.json` and `generator_samples.png` (a grid of
each model's samples, side by side), and it prints the table.
"""

import os
import pathlib
import sys
import time

import matplotlib.pyplot as plt
import numpy as np
import scipy.linalg
import scipy.stats

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import settings  # noqa: E402  (light: no Keras, so the flags are parsed before Keras loads)

PROG = "generators.py"
RESULTS_FILE = "generators.json"
FIGURE_FILE = "generator_samples.png"
CONFIDENCE = 0.9
FRECHET_RIDGE = 1e-6  # added to the covariances' diagonals (see frechet_distance)
FEATURES_LAYER = "features"
GRID_SIDE = 10  # the figure shows GRID_SIDE x GRID_SIDE samples of each model
SOURCES = ("vae", "ae", "vae_fitted", "real")
SOURCE_LABELS = {"vae": "VAE, z ~ N(0, I)", "ae": "AE, z ~ Gaussian fitted to its training codes",
                 "vae_fitted": "VAE, z ~ Gaussian fitted to its training means (a check)",
                 "real": "real test digits (not in the reference set)"}


def build_parser():
    parser = settings.OneLineParser(
        prog=PROG,
        description="Compare the VAE and the AE as generators: decode latent samples of each, "
                    "score them with a digit classifier trained here, and write "
                    f"{RESULTS_FILE}, a figure {FIGURE_FILE} and a printed table.",
        formatter_class=settings.DefaultsHelpFormatter)
    parser.add_argument("--vae-run", default="runs/latent_sweep/vae-latent-2",
                        help="a VAE run folder (train_vae.py or latent_sweep.py wrote it)")
    parser.add_argument("--ae-run", default="runs/latent_sweep/ae-latent-2",
                        help="an AE run folder (train_ae.py or latent_sweep.py wrote it)")
    parser.add_argument("--samples", type=settings.positive_int, default=1000,
                        help="latent points drawn for each model (and real test digits scored "
                             "beside them)")
    parser.add_argument("--classifier-epochs", type=settings.positive_int, default=10,
                        help="epochs of the digit classifier")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the latent samples and of the classifier")
    parser.add_argument("--data", default=None,
                        help="an .npz in Keras' MNIST layout (default: the VAE run's data)")
    parser.add_argument("--out", default="runs/generators",
                        help="folder for the JSON and the figure")
    return parser


# --- Sampling ----------------------------------------------------------------------------------

def fitted_gaussian_codes(codes, count, seed):
    """`count` points drawn from the Gaussian (mean, full covariance) fitted to `codes`."""
    codes = np.asarray(codes, dtype="float64")
    covariance = np.atleast_2d(np.cov(codes, rowvar=False))
    return np.random.default_rng(seed).multivariate_normal(codes.mean(axis=0), covariance, count)


# --- Scores ------------------------------------------------------------------------------------

def confident_share(probabilities, threshold=CONFIDENCE):
    """Share of images whose most likely digit has a probability above `threshold`."""
    return float(np.mean(np.max(probabilities, axis=1) > threshold))


def digit_counts(probabilities, classes=10):
    """How many images the classifier assigns to each digit (its most likely one)."""
    return np.bincount(np.argmax(probabilities, axis=1), minlength=classes)


def class_entropy(probabilities):
    """Entropy in bits of the predicted-digit histogram: log2(10) for all ten equally, 0 for one."""
    return float(scipy.stats.entropy(digit_counts(probabilities), base=2))


def frechet_distance(features, reference_features):
    """Fréchet distance between Gaussians fitted to two feature sets (rows are images).

    `|mu_1 - mu_2|^2 + Tr(C_1 + C_2 - 2 (C_1 C_2)^(1/2))`, as in FID (Heusel et
    al. 2017). ReLU features that never fire make a covariance singular, and
    so its square root ill-defined: both covariances get `ridge` added to their
    diagonal, as in pytorch-fid's fallback (it leaves the distance of two equal
    covariances at exactly 0). The square root's imaginary part is rounding
    noise and is dropped.
    """
    features = np.asarray(features, dtype="float64")
    reference_features = np.asarray(reference_features, dtype="float64")
    mean_gap = features.mean(axis=0) - reference_features.mean(axis=0)
    ridge = FRECHET_RIDGE * np.eye(features.shape[1])
    covariance = np.cov(features, rowvar=False) + ridge
    reference_covariance = np.cov(reference_features, rowvar=False) + ridge
    root = scipy.linalg.sqrtm(covariance @ reference_covariance).real
    return float(mean_gap @ mean_gap + np.trace(covariance + reference_covariance - 2.0 * root))


# --- The digit classifier ---------------------------------------------------------------------

def build_classifier(seed):
    """A small CNN: two conv blocks, a 128-unit layer (the Fréchet features), a softmax."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        layers.Conv2D(32, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(64, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(128, activation="relu", name=FEATURES_LAYER),
        layers.Dense(10, activation="softmax", name="digit"),
    ], name="digit_classifier")


def train_classifier(train_images, train_labels, test_images, test_labels, epochs, seed):
    """Trains the classifier; returns `(classifier, test accuracy)`."""
    import keras

    classifier = build_classifier(seed)
    classifier.compile(optimizer=keras.optimizers.Adam(1e-3),
                       loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    classifier.fit(train_images, train_labels, batch_size=64, epochs=epochs, verbose=0)
    results = classifier.evaluate(test_images, test_labels, batch_size=256, return_dict=True,
                                  verbose=0)
    return classifier, float(results["accuracy"])


def classify(classifier, images):
    """`(probabilities, features)`: the softmax output and the feature layer of each image."""
    import keras

    probe = keras.Model(classifier.inputs, [classifier.outputs[0],
                                            classifier.get_layer(FEATURES_LAYER).output])
    probabilities, features = probe.predict(images, batch_size=256, verbose=0)
    return probabilities, features


def scores(probabilities, features, reference_features):
    return {"confident_share": confident_share(probabilities),
            "class_entropy_bits": class_entropy(probabilities),
            "frechet_distance": frechet_distance(features, reference_features),
            "digit_counts": digit_counts(probabilities).tolist()}


# --- Report ------------------------------------------------------------------------------------

def montage(images, side=GRID_SIDE):
    """The first `side * side` images (fewer if fewer are given) tiled into one square picture."""
    side = min(side, int(np.sqrt(len(images))))
    tiles = np.asarray(images[:side * side]).reshape(side, side, 28, 28)
    return tiles.transpose(0, 2, 1, 3).reshape(side * 28, side * 28)


def samples_figure(samples, results):
    """Each model's first 100 samples side by side, with its confident share in the title."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 6.2), layout="constrained")
    for axis, source in zip(axes, ("vae", "ae")):
        axis.imshow(montage(samples[source]), cmap="gray_r", vmin=0.0, vmax=1.0)
        axis.set_xticks([])
        axis.set_yticks([])
        result = results[source]
        sampling = "z ~ N(0, I)" if source == "vae" else "z ~ Gaussian fit to training codes"
        axis.set_title(f"{source.upper()}, latent {result['latent_dim']}: {sampling}"
                       f"\n{100 * result['confident_share']:.0f} % confident, Fréchet distance "
                       f"{result['frechet_distance']:.1f}", fontsize=11)
    shown = min(GRID_SIDE, int(np.sqrt(len(samples["vae"])))) ** 2
    figure.suptitle(f"The first {shown} of {len(samples['vae']):,} samples of each model",
                    fontsize=12)
    return figure


def markdown_table(results, classifier_accuracy):
    lines = [f"Classifier test accuracy: {100 * classifier_accuracy:.2f} %", "",
             "| images | latent size | confident (> 0.9) | entropy of predicted digits (bits, "
             "max 3.32) | Fréchet distance to test features | predicted digits 0..9 |",
             "| --- | --- | --- | --- | --- | --- |"]
    for source in SOURCES:
        result = results[source]
        lines.append(f"| {SOURCE_LABELS[source]} | {result.get('latent_dim', '—')} | "
                     f"{100 * result['confident_share']:.1f} % | "
                     f"{result['class_entropy_bits']:.2f} | {result['frechet_distance']:.2f} | "
                     f"{' '.join(map(str, result['digit_counts']))} |")
    return "\n".join(lines)


def load_run(run_dir, kind):
    """The model of a run folder, which must hold a `kind` model."""
    import run_folder

    model, config = run_folder.load_model(run_dir)
    if config["model"] != kind:
        raise run_folder.RunFolderError(f"{run_dir} holds a {config['model'].upper()}, not a "
                                        f"{kind.upper()}: give --{kind}-run a {kind.upper()} run")
    return model, config


def run(args):
    import keras

    import data
    import plots
    import run_folder

    plots.set_headless()
    # Samples and features in float32: scoring needs no speed, and it should not round.
    keras.mixed_precision.set_global_policy("float32")
    vae, vae_config = load_run(args.vae_run, "vae")
    ae, ae_config = load_run(args.ae_run, "ae")
    out_dir = run_folder.prepare_output_folder(args.out)
    dataset = data.load_dataset(args.data or vae_config.get("data", {}).get("path"))
    if args.samples > len(dataset.x_test) // 2:
        raise data.DataError(f"--samples {args.samples} needs at least {2 * args.samples} test "
                             f"images (real digits scored beside the samples, the rest as the "
                             f"reference); the data has {len(dataset.x_test)}: lower --samples")
    # Each model's codes are those of the images it was trained on (its first --train-limit
    # images, of its --digits); the classifier learns all ten digits from those first images.
    def run_training_images(run_settings, digits):
        limit = min(run_settings.train_limit, len(dataset.x_train))
        return data.select_training_images(dataset.x_train, dataset.y_train, limit, digits)[0]

    vae_train_images = run_training_images(vae_config["settings"], vae_config["settings"].digits)
    ae_train_images = run_training_images(ae_config["settings"], ae_config["settings"].digits)
    train_limit = max(vae_config["settings"].train_limit, ae_config["settings"].train_limit)
    train_images, train_labels = data.select_training_images(
        dataset.x_train, dataset.y_train, min(train_limit, len(dataset.x_train)))
    print(f"{PROG}: {dataset.describe()}; {args.samples:,} samples of each model", flush=True)
    started = time.perf_counter()

    samples = {"vae": vae.sample(args.samples, seed=args.seed),
               "ae": ae.decode(fitted_gaussian_codes(ae.encode(ae_train_images), args.samples,
                                                     args.seed)),
               "vae_fitted": vae.decode(fitted_gaussian_codes(
                   vae.encode(vae_train_images), args.samples, args.seed))}
    # Test images split in two: real digits scored like the samples, and the reference set
    # that every Fréchet distance is measured against (disjoint, so the real row is fair).
    order = np.random.default_rng(args.seed).permutation(len(dataset.x_test))
    samples["real"] = dataset.x_test[order[:args.samples]]
    reference_images = dataset.x_test[order[args.samples:]]

    classifier, accuracy = train_classifier(train_images, train_labels, dataset.x_test,
                                            dataset.y_test, args.classifier_epochs, args.seed)
    _, reference_features = classify(classifier, reference_images)
    results = {}
    for source in SOURCES:
        results[source] = scores(*classify(classifier, samples[source]), reference_features)
    for source, model in (("vae", vae), ("ae", ae), ("vae_fitted", vae)):
        results[source]["latent_dim"] = model.latent_dim
    wall_seconds = round(time.perf_counter() - started, 1)

    summary = {
        "benchmark": "generators",
        "settings": {"vae_run": str(args.vae_run), "ae_run": str(args.ae_run),
                     "samples": args.samples, "seed": args.seed,
                     "classifier_epochs": args.classifier_epochs,
                     "classifier_train_images": len(train_images),
                     "vae_code_images": len(vae_train_images),
                     "ae_code_images": len(ae_train_images),
                     "reference_test_images": len(reference_images), "data": dataset.source,
                     "confidence_threshold": CONFIDENCE},
        "classifier_test_accuracy": accuracy,
        "scores": results,
        "wall_seconds": wall_seconds,
    }
    run_folder.write_json(out_dir / RESULTS_FILE, summary)
    plots.save(samples_figure(samples, results), out_dir / FIGURE_FILE)
    print(markdown_table(results, accuracy))
    print(f"in {wall_seconds:.0f} s; wrote {out_dir / RESULTS_FILE} and {out_dir / FIGURE_FILE}")
    return summary


def main(argv=None):
    args = build_parser().parse_args(argv)
    import training  # Keras loads here, after the flags: --help answers at once

    return training.run_reporting_user_errors(PROG, run, args)


if __name__ == "__main__":
    sys.exit(main())
