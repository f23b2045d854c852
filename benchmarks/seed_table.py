"""The per-seed table of a training recipe: train_vae.py or train_ae.py once per seed, then analysis.py.

    python benchmarks/seed_table.py                      # the VAE default, seeds 0 to 4
    python benchmarks/seed_table.py --model ae           # the AE default
    python benchmarks/seed_table.py --model vae -- --epochs 100 --lr-schedule constant \\
        --learning-rate 5e-4 --warmup-epochs 0 --upsampling transpose   # the original recipe
    python benchmarks/seed_table.py --help               # every flag and its default

Flags after `--` go to the training script unchanged. Each seed runs in a fresh
process, one after the other, so each has the whole machine:

  whole process   seconds from starting `python train_*.py` to its exit: the
                  imports, data loading, training, per-epoch test
                  evaluations, batch-norm statistics and the saved run
  training        the run's own `training.wall_seconds` (config.json): from
                  the start of fit to the recomputed batch-norm statistics

Then `analysis.py` scores each run folder on the test set (not timed). The
table has one row per seed, then the median and the worst seed; the last line
printed is one JSON object with every figure. With `--target-loss`, the VAE
rows say whether each seed's test loss is at or below it (the original
100-epoch run's 48.24, by default).
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import settings  # noqa: E402  (light: no Keras, so --help answers at once)

PROG = "seed_table.py"
ORIGINAL_VAE_TEST_LOSS = 48.24  # the plain port of the original, 100 epochs (docs/performance.md)
RESULT_MARKER = "SEED_TABLE_RESULT "
# (metrics.json key, column title, format); the VAE also shows its loss, KL and blot share.
COLUMNS = (("test_loss", "test loss", "{:.2f}"), ("test_mse", "test MSE", "{:.4f}"),
           ("test_kl", "test KL", "{:.2f}"), ("knn5_accuracy", "5-NN", "{:.3f}"),
           ("silhouette", "silhouette", "{:.3f}"), ("prior_blot_share", "blots", "{:.2%}"))
VAE_ONLY = ("test_loss", "test_kl", "prior_blot_share")


def build_parser():
    parser = settings.OneLineParser(
        prog=PROG, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train a recipe once per seed (a fresh process each), score each run with "
                    "analysis.py, and print the per-seed table. Flags after -- go to "
                    "train_vae.py / train_ae.py.")
    parser.add_argument("--model", choices=("vae", "ae"), default="vae", help="which script")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                        help="one run per seed")
    parser.add_argument("--target-loss", type=settings.positive_float,
                        default=ORIGINAL_VAE_TEST_LOSS,
                        help="VAE: the test loss each seed should reach (the original "
                             "100-epoch run's)")
    parser.add_argument("--label", default="default", help="the recipe's name in the table")
    parser.add_argument("--out", default="runs/seed_table",
                        help="folder for the run folders (MODEL-LABEL-seedS) and the JSON")
    parser.add_argument("train_flags", nargs=argparse.REMAINDER,
                        help="after --: flags for the training script")
    return parser


def timed_training(model, seed, run_dir, train_flags):
    """Runs train_{model}.py for one seed; returns its whole-process seconds."""
    command = [sys.executable, str(REPO / f"train_{model}.py"), "--seed", str(seed),
               "--out", str(run_dir), "--verbose", "2", *train_flags]
    started = time.perf_counter()
    finished = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    (run_dir.parent / f"{run_dir.name}.log").write_text(finished.stdout + finished.stderr)
    if finished.returncode != 0:
        last = (finished.stderr.strip() or finished.stdout.strip() or "no output").splitlines()[-1]
        raise RuntimeError(f"train_{model}.py --seed {seed} failed ({finished.returncode}): {last}")
    return seconds


def analysed_metrics(run_dir):
    """analysis.py's metrics.json of one run folder."""
    finished = subprocess.run([sys.executable, str(REPO / "analysis.py"), str(run_dir)],
                              cwd=REPO, capture_output=True, text=True)
    if finished.returncode != 0:
        raise RuntimeError(f"analysis.py {run_dir} failed: {finished.stderr.strip()[-300:]}")
    return json.loads((run_dir / "metrics.json").read_text())


def markdown_table(model, rows, target_loss):
    """One row per seed, then the median and the worst of each column."""
    columns = [column for column in COLUMNS if model == "vae" or column[0] not in VAE_ONLY]
    header = (["seed"] + [title for _, title, _ in columns]
              + ["training (s)", "whole process (s)"]
              + ([f"loss <= {target_loss:g}"] if model == "vae" else []))
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]

    def cells(values):
        formatted = [form.format(values[key]) if values.get(key) is not None else "—"
                     for key, _, form in columns]
        formatted += [f"{values['training_seconds']:.0f}", f"{values['whole_process_seconds']:.0f}"]
        if model == "vae":
            formatted.append("yes" if values["test_loss"] <= target_loss else "**no**")
        return formatted

    for row in rows:
        lines.append(f"| {row['seed']} | " + " | ".join(cells(row)) + " |")
    # The worst seed: highest loss, MSE, KL, blots and times; lowest 5-NN and silhouette.
    higher_is_better = {"knn5_accuracy", "silhouette"}
    keys = [key for key, _, _ in columns] + ["training_seconds", "whole_process_seconds"]
    summary = {}
    for name, pick in (("median", statistics.median), ("worst", None)):
        values = {}
        for key in keys:
            present = [row[key] for row in rows if row.get(key) is not None]
            if not present:
                continue
            if pick:
                values[key] = pick(present)
            else:
                values[key] = min(present) if key in higher_is_better else max(present)
        summary[name] = values
        lines.append(f"| {name} | " + " | ".join(cells(values)) + " |")
    return "\n".join(lines), summary


def run(args):
    import run_folder

    train_flags = args.train_flags[1:] if args.train_flags[:1] == ["--"] else args.train_flags
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        run_dir = out_dir / f"{args.model}-{args.label}-seed{seed}"
        whole = timed_training(args.model, seed, run_dir, train_flags)
        config = json.loads((run_dir / run_folder.CONFIG_FILE).read_text())
        row = {"seed": seed, "whole_process_seconds": round(whole, 1),
               "training_seconds": config["training"]["wall_seconds"], **analysed_metrics(run_dir)}
        rows.append(row)
        print(f"seed {seed}: " + ", ".join(f"{key} {value:.4g}" for key, value in row.items()
                                          if isinstance(value, (int, float))), flush=True)
    table, summary = markdown_table(args.model, rows, args.target_loss)
    result = {"model": args.model, "label": args.label, "train_flags": train_flags,
              "rows": rows, **summary}
    if args.model == "vae":
        result["seeds_at_or_below_target"] = sum(row["test_loss"] <= args.target_loss
                                                 for row in rows)
    run_folder.write_json(out_dir / f"{args.model}-{args.label}.json", result)
    print(table)
    print(RESULT_MARKER + json.dumps(result))
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    import training  # Keras loads here, after the flags

    try:
        return training.run_reporting_user_errors(PROG, run, args)
    except RuntimeError as error:  # a training or analysis process failed: one line
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
