"""Which anomaly score separates a digit from the others best: one model per digit, many scores.

    python benchmarks/anomaly_scores.py --normal-digits 2 8 5     # the hardest digits
    python benchmarks/anomaly_scores.py --model ae --epochs 30    # another model
    python benchmarks/anomaly_scores.py --help                    # every flag and its default

It trains exactly as `benchmarks/one_class.py` does (the same flags and
`one_class.train_one_class_model`), once per normal digit, and scores the
10,000 test images with each candidate score, then prints the AUROC (%) of
each score per digit and their means, and one JSON line. The scores, all of
the deterministic reconstruction x̂ of an image x (the latent mean, for the VAE):

  mse-moving-averages  per-image MSE with the batch-norm moving averages that
                       training left (before the recomputation)
  mse                  per-image MSE (`losses.reconstruction_mse`)
  mse-2x2              MSE of x and x̂ averaged over 2 x 2 blocks
  l1                   mean absolute error
  relative-1x1         sum (x - x̂)^2 / (sum x^2 + sum x̂^2), pixel by pixel
  relative             the same over 2 x 2 block averages: the default
                       (`losses.relative_squared_error`)
  latent-mahalanobis   Mahalanobis distance of the latent code from the
                       training codes' mean (their covariance)
  latent-5nn           mean distance to the 5 nearest training codes
  mse+latent-5nn       the sum of both, each as a z-score of its log over
                       the training images
"""

import json
import os
import pathlib
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import one_class  # noqa: E402  (light until it trains: its flags are parsed before Keras loads)

PROG = "anomaly_scores.py"


def build_parser():
    parser = one_class.build_parser(with_score=False)
    parser.prog = PROG
    parser.description = ("Train one model per normal digit, as one_class.py does, and print "
                          "the AUROC of several anomaly scores (the first of --seeds).")
    parser.set_defaults(out="runs/anomaly_scores")
    return parser


def candidate_scores(model, images, train_images, moving_average_model_scores):
    """{score name: (train scores, test scores)} for one trained model."""
    import numpy as np
    from keras import ops
    from sklearn.neighbors import NearestNeighbors

    import losses

    # Each set reconstructed once, for every score.
    train_reconstructions, reconstructions = (model.reconstruct(train_images),
                                              model.reconstruct(images))

    def pooled_mse(x, reconstruction):
        return losses.reconstruction_mse(*(ops.average_pool(ops.cast(t, "float32"), 2,
                                                            strides=2, padding="valid")
                                           for t in (x, reconstruction)))

    functions = {
        "mse": losses.reconstruction_mse,
        "mse-2x2": pooled_mse,
        "l1": lambda x, r: np.abs(np.asarray(x) - np.asarray(r)).mean(axis=(1, 2, 3)),
        "relative-1x1": lambda x, r: losses.relative_squared_error(x, r, pool_size=1),
        "relative": losses.relative_squared_error,
    }
    scores = {"mse-moving-averages": moving_average_model_scores}
    for name, function in functions.items():
        scores[name] = (np.asarray(function(train_images, train_reconstructions)),
                        np.asarray(function(images, reconstructions)))
    train_codes, test_codes = model.encode(train_images), model.encode(images)
    mean = train_codes.mean(axis=0)
    precision = np.linalg.inv(np.cov(train_codes.T) + 1e-6 * np.eye(train_codes.shape[1]))

    def mahalanobis(codes):
        return np.einsum("ij,jk,ik->i", codes - mean, precision, codes - mean)

    scores["latent-mahalanobis"] = (mahalanobis(train_codes), mahalanobis(test_codes))
    neighbours = NearestNeighbors(n_neighbors=6).fit(train_codes)
    # A training code's nearest neighbour is itself: leave it out.
    knn_train = neighbours.kneighbors(train_codes, 6)[0][:, 1:].mean(axis=1)
    knn_test = neighbours.kneighbors(test_codes, 5)[0].mean(axis=1)
    scores["latent-5nn"] = (knn_train, knn_test)

    def z_score(values, reference):
        return (np.log(values) - np.log(reference).mean()) / np.log(reference).std()

    mse_train, mse_test = scores["mse"]
    scores["mse+latent-5nn"] = (z_score(mse_train, mse_train) + z_score(knn_train, knn_train),
                                z_score(mse_test, mse_train) + z_score(knn_test, knn_train))
    return scores


def run(args):
    import data
    import evaluation
    import run_folder

    dataset = data.load_dataset(args.data)
    seed = args.seeds[0]
    per_digit = {}
    for normal_digit in args.normal_digits:
        model, images = one_class.train_one_class_model(args, dataset, normal_digit, seed,
                                                        recompute_statistics=False)
        moving = (model.reconstruction_errors(images), model.reconstruction_errors(dataset.x_test))
        model.recompute_batch_norm_statistics(images)
        aurocs = {}
        for name, (train_scores, test_scores) in candidate_scores(
                model, dataset.x_test, images, moving).items():
            report = evaluation.anomaly_report(train_scores, test_scores, dataset.y_test,
                                               [normal_digit])
            aurocs[name] = 100.0 * report["auroc"]
        per_digit[normal_digit] = aurocs
        print(f"normal digit {normal_digit}: " + ", ".join(f"{name} {value:.1f}"
                                                           for name, value in aurocs.items()),
              flush=True)
    names = list(next(iter(per_digit.values())))
    means = {name: statistics.mean(aurocs[name] for aurocs in per_digit.values())
             for name in names}
    header = "| score | " + " | ".join(str(digit) for digit in per_digit) + " | mean |"
    lines = [header, "|" + " --- |" * (len(per_digit) + 2)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(f"{aurocs[name]:.1f}"
                                                 for aurocs in per_digit.values())
                     + f" | {means[name]:.1f} |")
    print(f"{args.model.upper()}, latent {args.latent_dim}, {args.epochs} epochs, seed {seed}:")
    print("\n".join(lines))
    out_dir = run_folder.prepare_output_folder(args.out)
    summary = {"settings": vars(args), "auroc_percent": {str(d): a for d, a in per_digit.items()},
               "mean_auroc_percent": means}
    run_folder.write_json(out_dir / "anomaly_scores.json", summary)
    print(json.dumps(summary))
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    import training  # Keras loads here, after the flags

    return training.run_reporting_user_errors(PROG, run, args)


if __name__ == "__main__":
    sys.exit(main())
