"""The per-seed table of a training recipe: train_vae.py or train_ae.py once per seed, then analysis.py.

    python benchmarks/seed_table.py                      # the VAE default, seeds 0 to 4
    python benchmarks/seed_table.py --model ae           # the AE default
    python benchmarks/seed_table.py --model vae -- --epochs 100 --lr-schedule constant \\
        --learning-rate 5e-4 --warmup-epochs 0 --upsampling transpose   # the original recipe
    python benchmarks/seed_table.py --port-rounds 1      # and the plain port's 100 epochs, estimated
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

With `--port-rounds N`, the same run also times the plain Keras port of the
original script (`benchmarks/train_speed.py --variants reference`, whole
process) for each of `--port-epochs` (2 and 5): one round before each seed
while rounds are left, and any more after the last seed. Each round's two runs give a straight line in
the epochs, start-up included, and so the port's time for the original's
epochs (VAE 100, AE 40); the table gives each seed's whole process as a share
of the median estimate. Beside it, the JSON gives a second estimate that
rests on one run rather than on the difference of two: the longer run's whole
process plus its median warm epoch (training and test evaluation) for each
epoch still to go.
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
from benchmarks import train_speed  # noqa: E402  (light too: Keras loads in its workers)

PROG = "seed_table.py"
ORIGINAL_VAE_TEST_LOSS = 48.24  # the plain port of the original, 100 epochs (docs/performance.md)
RESULT_MARKER = "SEED_TABLE_RESULT "
# The seeds' data flags, which the plain-port runs take over.
PORT_DATA_FLAGS = argparse.ArgumentParser(add_help=False)
PORT_DATA_FLAGS.add_argument("--data")
PORT_DATA_FLAGS.add_argument("--train-limit")
# (metrics.json key, column title, format); the VAE also shows its loss, KL and blot share.
COLUMNS = (("test_loss", "test loss", "{:.2f}"), ("test_mse", "test MSE", "{:.4f}"),
           ("test_kl", "test KL", "{:.2f}"), ("knn5_accuracy", "5-NN", "{:.3f}"),
           ("silhouette", "silhouette", "{:.3f}"), ("prior_blot_share", "blots", "{:.2%}"))
VAE_ONLY = ("test_loss", "test_kl", "prior_blot_share")


def build_parser():
    parser = settings.OneLineParser(
        prog=PROG, formatter_class=settings.DefaultsHelpFormatter,
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
    parser.add_argument("--port-rounds", type=settings.non_negative_int, default=0,
                        help="rounds of plain-port runs, one per --port-epochs each (0: none)")
    parser.add_argument("--port-epochs", type=settings.positive_int, nargs=2, default=[2, 5],
                        metavar=("SHORT", "LONG"),
                        help="the two epoch counts of the plain-port runs that the estimate of "
                             "its original-length run is drawn through")
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


def timed_port(model, epochs, train_flags, out_dir):
    """The plain port of the original script for `epochs` epochs, in its own process.

    The port trains on the same data as the seeds (their `--data` and
    `--train-limit`, when given), in `train_speed.py`'s reference worker,
    started directly: the benchmark's own parent would load Keras once more
    only to check the flags. Its measurements go to a JSON file in `out_dir`.
    Returns `(whole-process seconds, the median seconds of its warm epochs)`:
    an epoch after the first, training and its test evaluation.
    """
    import run_folder  # Keras is loaded by now (main imports training after the flags)

    given, _ = PORT_DATA_FLAGS.parse_known_args(train_flags)
    port_flags = ["--variants", "reference", "--model", model, "--epochs", str(epochs),
                  "--repeats", "1"]
    if given.data is not None:
        port_flags += ["--data", given.data]
    if given.train_limit is not None:
        port_flags += ["--train-limit", given.train_limit]
    port_args = train_speed.build_parser(settings).parse_args(port_flags)
    # Relative to the repository, where the seeds' training processes also start.
    port_args.data = str((REPO / port_args.data).resolve())
    port_args.target_loss = train_speed.DEFAULT_TARGET_LOSS[model]
    try:
        port_run = train_speed.run_subprocess("reference", port_args)
    except train_speed.RunFailed as error:
        raise RuntimeError(f"the plain port ({epochs} epochs) failed: {error}") from None
    run_folder.write_json(out_dir / f"port-{model}-{epochs}epochs-{time.time_ns()}.json",
                          port_run)
    warm = port_run["history"][1:] or port_run["history"]
    epoch_seconds = statistics.median(epoch["train_seconds"] + epoch["eval_seconds"]
                                      for epoch in warm)
    return port_run["process_seconds"], epoch_seconds


def port_estimate(short_epochs, short_seconds, long_epochs, long_seconds, epochs):
    """The whole-process seconds at `epochs`, on the line through the two timed runs."""
    per_epoch = (long_seconds - short_seconds) / (long_epochs - short_epochs)
    return short_seconds + per_epoch * (epochs - short_epochs)


def port_rounds(args, train_flags, out_dir, rounds):
    """Times `rounds` rounds of the plain port; returns one dict per round, with its estimates.

    `estimate_seconds` is the line through the two runs' whole processes; the
    line's slope rests on the difference of two noisy runs, so
    `estimate_from_epochs_seconds` is given beside it: the longer run's whole
    process plus its median warm epoch for each epoch still to go.
    """
    short, long = args.port_epochs
    original_epochs = settings.ORIGINAL_EPOCHS[args.model]
    results = []
    for _ in range(rounds):
        (short_seconds, _), (long_seconds, long_epoch) = (
            timed_port(args.model, epochs, train_flags, out_dir) for epochs in (short, long))
        estimate = port_estimate(short, short_seconds, long, long_seconds, original_epochs)
        from_epochs = long_seconds + long_epoch * (original_epochs - long)
        results.append({"seconds": {str(short): round(short_seconds, 3),
                                    str(long): round(long_seconds, 3)},
                        "warm_epoch_seconds": round(long_epoch, 3),
                        "estimate_seconds": round(estimate, 1),
                        "estimate_from_epochs_seconds": round(from_epochs, 1)})
        print(f"plain port: {short} epochs {short_seconds:.1f} s, {long} epochs "
              f"{long_seconds:.1f} s (warm epochs {long_epoch:.1f} s): {original_epochs} epochs "
              f"about {estimate:.0f} s on the line, {from_epochs:.0f} s from the epochs",
              flush=True)
    return results


def analysed_metrics(run_dir):
    """analysis.py's metrics.json of one run folder."""
    finished = subprocess.run([sys.executable, str(REPO / "analysis.py"), str(run_dir)],
                              cwd=REPO, capture_output=True, text=True)
    if finished.returncode != 0:
        raise RuntimeError(f"analysis.py {run_dir} failed: {finished.stderr.strip()[-300:]}")
    return json.loads((run_dir / "metrics.json").read_text())


def markdown_table(model, rows, target_loss, port_seconds=None):
    """One row per seed, then the median and the worst of each column.

    With `port_seconds` (the plain port's estimated original-length run), a
    column gives each whole process as a share of it.
    """
    columns = [column for column in COLUMNS if model == "vae" or column[0] not in VAE_ONLY]
    header = (["seed"] + [title for _, title, _ in columns]
              + ["training (s)", "whole process (s)"]
              + (["share of the port's run"] if port_seconds else [])
              + ([f"loss <= {target_loss:g}"] if model == "vae" else []))
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]

    def cells(values):
        formatted = [form.format(values[key]) if values.get(key) is not None else "—"
                     for key, _, form in columns]
        formatted += [f"{values['training_seconds']:.0f}", f"{values['whole_process_seconds']:.0f}"]
        if port_seconds:
            formatted.append(f"{values['whole_process_seconds'] / port_seconds:.1%}")
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
    # The port's rounds alternate with the seeds (one before each, while rounds are left; any
    # more after the last), so that both see the machine's slow and fast spells alike.
    ports = []
    rows = []
    for index, seed in enumerate(args.seeds):
        if index < args.port_rounds:
            ports += port_rounds(args, train_flags, out_dir, 1)
        run_dir = out_dir / f"{args.model}-{args.label}-seed{seed}"
        whole = timed_training(args.model, seed, run_dir, train_flags)
        config = json.loads((run_dir / run_folder.CONFIG_FILE).read_text())
        row = {"seed": seed, "whole_process_seconds": round(whole, 1),
               "training_seconds": config["training"]["wall_seconds"], **analysed_metrics(run_dir)}
        rows.append(row)
        print(f"seed {seed}: " + ", ".join(f"{key} {value:.4g}" for key, value in row.items()
                                          if isinstance(value, (int, float))), flush=True)
    ports += port_rounds(args, train_flags, out_dir, args.port_rounds - len(ports))
    port_seconds = (statistics.median(port["estimate_seconds"] for port in ports)
                    if ports else None)
    table, summary = markdown_table(args.model, rows, args.target_loss, port_seconds)
    result = {"model": args.model, "label": args.label, "train_flags": train_flags,
              "rows": rows, **summary}
    if args.model == "vae":
        result["seeds_at_or_below_target"] = sum(row["test_loss"] <= args.target_loss
                                                 for row in rows)
    if ports:
        from_epochs = statistics.median(port["estimate_from_epochs_seconds"] for port in ports)
        result["port"] = {
            "epochs": settings.ORIGINAL_EPOCHS[args.model], "rounds": ports,
            "estimate_seconds": port_seconds, "estimate_from_epochs_seconds": from_epochs,
            "shares": {str(row["seed"]): round(row["whole_process_seconds"] / port_seconds, 4)
                       for row in rows},
            "shares_from_epochs": {str(row["seed"]): round(row["whole_process_seconds"]
                                                           / from_epochs, 4) for row in rows}}
    run_folder.write_json(out_dir / f"{args.model}-{args.label}.json", result)
    print(table)
    if ports:
        print(f"the plain port's {settings.ORIGINAL_EPOCHS[args.model]} epochs, estimated from "
              f"{len(ports)} round(s) of {args.port_epochs[0]} and {args.port_epochs[1]} epochs: "
              f"{port_seconds:.0f} s (median; from the longer runs' epochs: "
              f"{result['port']['estimate_from_epochs_seconds']:.0f} s)")
    print(RESULT_MARKER + json.dumps(result))
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.port_epochs[1] <= args.port_epochs[0]:
        parser.error(f"--port-epochs {args.port_epochs[0]} {args.port_epochs[1]}: the second "
                     "must be larger than the first, to draw a line through them")
    import training  # Keras loads here, after the flags

    try:
        return training.run_reporting_user_errors(PROG, run, args)
    except RuntimeError as error:  # a training or analysis process failed: one line
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
