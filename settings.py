"""The settings of a run: one dataclass, filled from the command line, stored with the run.

    TrainingSettings   what train_vae.py and train_ae.py do; config.json and the
                       checkpoint store it, and --resume reads it back
    AnalysisSettings   what analysis.py does
    DetectSettings     what detect.py does

This module imports no Keras, so that the scripts answer `--help` and flag
errors at once: they parse their flags first and import Keras afterwards.
"""

import argparse
import dataclasses
import math
import pathlib

MODEL_NAMES = {"vae": "variational autoencoder (VAE)", "ae": "vanilla autoencoder (AE)"}
ORIGINAL_EPOCHS = {"vae": 100, "ae": 40}
# --recipe: the settings, per model, that differ between the tuned default and the original
# scripts. docs/performance.md measures both, seed by seed. The VAE's 2x2 transposed
# convolutions, whose kernel the stride divides, keep its prior samples free of the original's
# blots at 4/9 of the original's multiply-adds.
# The AE draws no samples, so it keeps the original's cheaper 3x3 transposed convolutions and
# gets its speed from the schedule: 16 epochs instead of 40 (with 15, seed 4 missed the
# original's MSE on an AVX2 CPU in float32).
_ORIGINAL = {"batch_size": 32, "learning_rate": 5e-4, "lr_schedule": "constant",
             "warmup_epochs": 0, "upsampling": "transpose", "test_every": 1}
RECIPES = {
    "tuned": {
        "vae": {"epochs": 30, "batch_size": 32, "learning_rate": 2e-3, "lr_schedule": "cosine",
                "warmup_epochs": 2, "upsampling": "transpose2x2", "test_every": 5},
        "ae": {"epochs": 16, "batch_size": 32, "learning_rate": 2e-3, "lr_schedule": "cosine",
               "warmup_epochs": 1, "upsampling": "transpose", "test_every": 5},
    },
    "original": {model: {"epochs": epochs, **_ORIGINAL} for model, epochs in ORIGINAL_EPOCHS.items()},
}
DEFAULT_EPOCHS = {model: recipe["epochs"] for model, recipe in RECIPES["tuned"].items()}
# What the tuned recipe changes where the dtype policy is mixed_bfloat16 (on a CPU with
# bfloat16 instructions, or a GPU of compute capability 8 or more): the AE's noisier arithmetic
# there needs more epochs (on an Intel Xeon with AMX, 2 of seeds 0 to 4 missed the original's
# MSE in 15 epochs, none in 20). The VAE's 2x2 decoder reaches the original's loss in its 30
# epochs in bfloat16 too (seeds 0 to 4 on a Zen 4, docs/performance.md).
BFLOAT16_POLICY = "mixed_bfloat16"
BFLOAT16_RECIPE = {"ae": {"epochs": 20}}
BFLOAT16_EPOCHS = {model: recipe["epochs"] for model, recipe in BFLOAT16_RECIPE.items()}
# Stored settings from versions that predate a field take the value those versions used.
LEGACY_VALUES = {"warmup_epochs": 0, "upsampling": "transpose", "test_every": 1,
                 "anomaly_score": "mse"}
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
BATCH_NORMS = ("auto", "keras", "fused")
UPSAMPLINGS = ("transpose", "resize", "transpose4x4", "transpose2x2")
ANOMALY_SCORES = ("relative", "mse")
LR_SCHEDULES = ("constant", "cosine")
DATASETS = ("mnist", "fashion_mnist")
COLOR_MODES = ("auto", "grayscale", "rgb")

# What a resumed run takes from its command line; everything else comes from the run.
RESUME_OVERRIDES = ("epochs", "learning_rate", "test_every", "out", "verbose", "data_parallel",
                    "resume", "tensorboard", "job_addresses", "num_processes", "process_id")


class SettingsError(ValueError):
    """Settings that cannot be used: the message names the problem and the fix."""


@dataclasses.dataclass
class TrainingSettings:
    """Everything that decides a training run. The defaults are the default run's."""

    model: str = "vae"                   # "vae" or "ae"
    data: str | None = None              # an image folder or .npz; None: --dataset
    dataset: str = "mnist"               # a Keras dataset by name, when data is None
    image_size: list[int] | None = None  # [height, width] to resize to; None: the images' own
    color_mode: str = "auto"             # "auto" (from the data), "grayscale" or "rgb"
    validation_split: float = 0.1        # test share held out of a folder without train/ test/
    train_limit: int = 10000             # train on the first N training images
    digits: list[int] | None = None      # train only on these classes; None: all of them
    epochs: int = DEFAULT_EPOCHS["vae"]
    batch_size: int = 32
    learning_rate: float = 2e-3          # the peak, after the warm-up
    lr_schedule: str = "cosine"          # "cosine" (decay to 0 over the epochs) or "constant"
    warmup_epochs: int = 2               # linear learning-rate warm-up from 0, before the schedule
    latent_dim: int = 2
    reconstruction_weight: float = 1000.0  # VAE loss = weight * MSE + KL; unused by the AE
    seed: int = 0
    precision: str = "auto"
    batch_norm: str = "auto"
    upsampling: str = "transpose2x2"     # the decoder's stride-2 blocks (UPSAMPLINGS)
    data_parallel: bool = False
    test_every: int = 5                  # evaluate the test set every N epochs, and after the last
    anomaly_score: str = "relative"      # "relative" or "mse" (models.ANOMALY_SCORES)
    threshold_percentile: float = 99.0   # anomaly threshold: this percentile of training scores
    tensorboard: bool = False
    job_addresses: str | None = None     # multi-process --data-parallel (see scale_out.py)
    num_processes: int | None = None
    process_id: int | None = None
    out: str = "runs/vae"
    resume: bool = False
    verbose: int = 1

    def __post_init__(self):
        if self.digits is not None:  # "--digits 1 0 1" trains on digits [0, 1]
            self.digits = sorted(set(self.digits))

    @classmethod
    def defaults_for(cls, model, recipe="tuned"):
        """The default settings of train_{model}.py, or of `--recipe original`."""
        return cls(model=model, out=f"runs/{model}", **RECIPES[recipe][model])

    @classmethod
    def from_dict(cls, values, model, source):
        """Settings stored by a run (`dataclasses.asdict`), over the defaults of `model`.

        Stored dicts may lack fields added later; they take their defaults.

        Raises:
            SettingsError: if `values` holds a name this version does not know.
        """
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SettingsError(f"{source} stores settings this version does not know "
                                f"({', '.join(unknown)}): train again without --resume")
        missing = {name: value for name, value in LEGACY_VALUES.items() if name not in values}
        return dataclasses.replace(cls.defaults_for(model), **missing, **values)

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass
class DetectSettings:
    """What detect.py does: score images against a run's anomaly threshold."""

    run_dir: str
    inputs: list[str]
    out: str | None = None
    montage: str | None = None
    resize: bool = False
    skip_unreadable: bool = False
    maps: str | None = None
    batch_size: int = 256
    export: str | None = None            # write the run's detector here as ONNX
    calibrate: list[str] | None = None
    anomalous: list[str] | None = None
    target_false_positive_rate: float | None = None
    pr_curve: str | None = None


@dataclasses.dataclass
class AnalysisSettings:
    """What analysis.py does with a run folder."""

    run_dir: str
    data: str | None = None
    batch_size: int = 256
    traverse: list[int] | None = None
    show: bool = False


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line ("prog: error: ...") and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def refuse(self, message):
        """A bad input that the flags name (a missing file, say): the same line as later checks."""
        self.exit(2, f"{self.prog}: error: {message}\n")


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: ...)" to a flag's help unless the help already says its default."""

    def _get_help_string(self, action):
        if "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


# Checked when the flags are parsed, before Keras loads, so a mistyped path answers at once;
# data.py and run_folder.py say the same when they meet the path later.
def missing_data_file(path):
    return f"data file {path} does not exist: check the path given to --data"


def missing_run_folder(run_dir):
    return (f"run folder {run_dir} does not exist: train first, "
            f"e.g. python train_vae.py --out {run_dir}")


def refuse_missing_paths(parser, run_dir=None, data_path=None):
    if run_dir is not None and not pathlib.Path(run_dir).is_dir():
        parser.refuse(missing_run_folder(run_dir))
    if data_path is not None and not pathlib.Path(data_path).exists():
        parser.refuse(missing_data_file(data_path))


def _integer(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def positive_int(text):
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text):
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _finite_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def positive_float(text):
    value = _finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def non_negative_float(text):
    value = _finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def fraction(text):
    value = _finite_float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie between 0 and 1, got {text}")
    return value


def rate(text):
    value = _finite_float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1), got {text}")
    return value


def percentile(text):
    value = _finite_float(text)
    if not 0.0 <= value <= 100.0:
        raise argparse.ArgumentTypeError(f"must lie between 0 and 100, got {text}")
    return value


def build_training_parser(model):
    """The flags of train_{model}.py. Each help text shows its default once.

    Flags that are not given stay out of the parsed namespace
    (`argument_default=SUPPRESS`), so the defaults live only in
    `TrainingSettings` and `--resume` can tell what the command line changed.
    """
    defaults = TrainingSettings.defaults_for(model)
    original = TrainingSettings.defaults_for(model, "original")
    parser = OneLineParser(
        prog=f"train_{model}.py", argument_default=argparse.SUPPRESS,
        description=f"Train the convolutional {MODEL_NAMES[model]} on MNIST or your own images "
                    f"and save the run (model.keras, weights, config.json, history.csv, "
                    f"loss_curve.png) into --out.")
    parser.add_argument("--data",
                        help="an image folder (DIR/train/<class>/*, DIR/test/<class>/*, or one "
                             "DIR/<class>/* tree; no class folders: unlabelled) or an .npz in "
                             "Keras' layout (x_train, y_train, x_test, y_test) "
                             "(default: --dataset)")
    parser.add_argument("--dataset", choices=DATASETS,
                        help="a Keras dataset by name, when --data is not given; MNIST falls back "
                             f"to the bundled 20k subset offline (default: {defaults.dataset})")
    parser.add_argument("--image-size", type=positive_int, nargs=2, metavar=("HEIGHT", "WIDTH"),
                        help="resize every image to this size; needed when the images' sizes "
                             "differ; height and width must be divisible by 4 "
                             "(default: the images' own size)")
    parser.add_argument("--color-mode", choices=COLOR_MODES,
                        help="auto: RGB if any image has colour, else grayscale; or force one "
                             f"(default: {defaults.color_mode})")
    parser.add_argument("--validation-split", type=fraction, metavar="F",
                        help="for a folder without train/ and test/: the seeded share of its "
                             f"images held out as the test set (default: {defaults.validation_split:g})")
    parser.add_argument("--train-limit", type=positive_int, metavar="N",
                        help=f"train on the first N training images (default: {defaults.train_limit:,}, "
                             f"as the original)")
    parser.add_argument("--digits", type=int, nargs="+", metavar="CLASS",
                        help="train only on these classes, by index (the digits, for MNIST), "
                             "e.g. --digits 0 1; analysis then scores the others as anomalies "
                             "(default: all classes)")
    parser.add_argument("--recipe", choices=tuple(RECIPES),
                        help="tuned: settings measured to beat the original's final loss in a "
                             "quarter of its time (docs/performance.md); original: the original "
                             f"scripts' training ({original.epochs} epochs, batch "
                             f"{original.batch_size}, constant learning rate "
                             f"{original.learning_rate:g}, no warm-up, 3x3 transposed "
                             f"convolutions, the test set after every epoch). Flags given "
                             f"beside it win (default: tuned)")
    parser.add_argument("--epochs", type=positive_int,
                        help=f"training epochs (default: {defaults.epochs}"
                             + (f", or {BFLOAT16_EPOCHS[model]} where --precision is or picks "
                                f"{BFLOAT16_POLICY}" if model in BFLOAT16_EPOCHS else "")
                             + f"; --recipe original: {original.epochs})")
    parser.add_argument("--batch-size", type=positive_int,
                        help=f"images per step (default: {defaults.batch_size}; --recipe "
                             f"original: {original.batch_size})")
    parser.add_argument("--learning-rate", type=positive_float,
                        help="Adam's learning rate, the peak of the schedule "
                             f"(default: {defaults.learning_rate:g})")
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES,
                        help="constant: the learning rate throughout, as the original; cosine: "
                             "decay it from --learning-rate to 0 over --epochs "
                             f"(default: {defaults.lr_schedule})")
    parser.add_argument("--warmup-epochs", type=non_negative_int,
                        help="raise the learning rate linearly from 0 to --learning-rate over "
                             "this many epochs, before --lr-schedule takes over "
                             f"(default: {defaults.warmup_epochs})")
    parser.add_argument("--latent-dim", type=positive_int,
                        help=f"size of the latent code (default: {defaults.latent_dim})")
    if model == "vae":
        parser.add_argument("--reconstruction-weight", type=non_negative_float,
                            help="loss = weight * MSE + KL "
                                 f"(default: {defaults.reconstruction_weight:g})")
    parser.add_argument("--seed", type=int,
                        help="seed of weights, shuffling and sampling "
                             f"(default: {defaults.seed})")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="Keras dtype policy; auto picks mixed_bfloat16 on CPUs with bfloat16 "
                             "instructions (AVX512-BF16 or AMX), else float32. The loss is "
                             f"always computed in float32 (default: {defaults.precision})")
    parser.add_argument("--batch-norm", choices=BATCH_NORMS,
                        help="auto: TensorFlow's fused kernel under the TensorFlow backend, "
                             "Keras' layer elsewhere; keras: always Keras' layer; fused: the fused "
                             f"kernel, TensorFlow only. Same maths (default: {defaults.batch_norm})")
    parser.add_argument("--upsampling", choices=UPSAMPLINGS,
                        help="how the decoder's stride-2 blocks upsample: transpose "
                             "(Conv2DTranspose 3x3, the original), resize (UpSampling2D, then "
                             "Conv2D 3x3), transpose4x4 or transpose2x2 (Conv2DTranspose 4x4 or "
                             f"2x2, which the stride divides) (default: {defaults.upsampling}; "
                             f"--recipe original: {original.upsampling})")
    parser.add_argument("--data-parallel", action="store_true",
                        help="split each batch over all of the backend's devices with "
                             "keras.distribution.DataParallel, in this process or, with "
                             "--num-processes, in several (JAX backend only)")
    parser.add_argument("--job-addresses", metavar="HOST:PORT",
                        help="with --data-parallel over several processes: the coordinator's "
                             "address, the same in every process (default: "
                             "$KERAS_DISTRIBUTION_JOB_ADDRESSES)")
    parser.add_argument("--num-processes", type=positive_int, metavar="P",
                        help="with --data-parallel: how many processes train together "
                             "(default: $KERAS_DISTRIBUTION_NUM_PROCESSES, else 1)")
    parser.add_argument("--process-id", type=non_negative_int, metavar="I",
                        help="with --data-parallel: this process's number, 0 to P - 1; process 0 "
                             "writes the run folder (default: $KERAS_DISTRIBUTION_PROCESS_ID, "
                             "else 0)")
    parser.add_argument("--test-every", type=positive_int, metavar="N",
                        help="evaluate the test set after every N-th epoch and after the last; "
                             "history.csv leaves the other epochs' test columns empty "
                             f"(default: {defaults.test_every})")
    parser.add_argument("--anomaly-score", choices=ANOMALY_SCORES,
                        help="how analysis.py and detect.py score an image against its "
                             "reconstruction: relative (squared error over the ink of both "
                             "images) or mse (mean squared error) "
                             f"(default: {defaults.anomaly_score})")
    parser.add_argument("--threshold-percentile", type=percentile, metavar="P",
                        help="where the anomaly threshold stored with the run (for detect.py) "
                             "sits on the percentile scale of detect.py's CSV: P means that P "
                             "%% of the training images score lower, so about 100 - P %% of "
                             "images like them are flagged; detect.py --calibrate can choose "
                             "it from examples later "
                             f"(default: {defaults.threshold_percentile:g})")
    parser.add_argument("--tensorboard", action="store_true",
                        help="write TensorBoard logs into --out/tensorboard "
                             "(view with: tensorboard --logdir OUT/tensorboard)")
    parser.add_argument("--out", help=f"the run folder to write (default: {defaults.out})")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last checkpoint, with its saved "
                             "settings, up to --epochs (a new --learning-rate or --test-every "
                             "is allowed)")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2),
                        help="Keras' fit verbosity: 0 silent, 1 progress bar and the encoder's and "
                             f"decoder's summaries, 2 one line per epoch (default: {defaults.verbose})")
    return parser


def parse_training_flags(model, argv=None):
    """`(settings, given)`: the settings the flags ask for, and the names of the flags given.

    A `--recipe` given counts as giving each setting that it sets.
    """
    parser = build_training_parser(model)
    given = vars(parser.parse_args(argv))
    if "data" in given and "dataset" in given:
        parser.error("--data and --dataset both name the images: give one of them")
    refuse_missing_paths(parser, data_path=given.get("data"))
    recipe = given.pop("recipe", None)
    base = TrainingSettings.defaults_for(model, recipe or "tuned")
    names = set(given) | (set(RECIPES[recipe][model]) if recipe else set())
    if recipe == "tuned":  # the settings of the default's that follow the policy
        names -= set(BFLOAT16_RECIPE.get(model, {})) - set(given)
    return dataclasses.replace(base, **given), names


def recipe_for_policy(settings, policy, given):
    """`settings` with the default run's recipe for the dtype `policy` that trains it.

    Where the policy is mixed_bfloat16, each setting of `BFLOAT16_RECIPE` that
    neither its flag nor --recipe original chose takes that recipe's value. A
    resumed run keeps the settings it stored.
    """
    if settings.resume or policy != BFLOAT16_POLICY:
        return settings
    return dataclasses.replace(settings, **{
        name: value for name, value in BFLOAT16_RECIPE.get(settings.model, {}).items()
        if name not in given})


def resumed_settings(saved, command_line, given):
    """The settings of a resumed run: the saved ones, with what a resume may change.

    Args:
        saved: the `TrainingSettings` stored in the checkpoint.
        command_line: the `TrainingSettings` that this command's flags ask for.
        given: names of the flags given on this command line.

    Raises:
        SettingsError: if a flag given on the command line would change a
            setting that the run fixed (its data, model or seed, say).
    """
    conflicts = [name for name in sorted(given - set(RESUME_OVERRIDES))
                 if getattr(command_line, name) != getattr(saved, name)]
    if conflicts:
        flags = ", ".join(f"--{name.replace('_', '-')} (run: {getattr(saved, name)!r})"
                          for name in conflicts)
        raise SettingsError(f"--resume continues a run with its own settings, but this command "
                            f"changes {flags}: drop those flags, or train a new run into "
                            f"another --out")
    overrides = {name: getattr(command_line, name) for name in RESUME_OVERRIDES
                 if name in given or name in ("out", "resume")}
    return dataclasses.replace(saved, **overrides)


def build_detect_parser():
    defaults = DetectSettings(run_dir="", inputs=[])
    parser = OneLineParser(
        prog="detect.py", argument_default=argparse.SUPPRESS,
        description="Score images as anomalies by a run's reconstruction error: an image whose "
                    "error is above the run's stored threshold (a percentile of its training "
                    "images' errors) is an anomaly. Writes CSV: source,error,threshold,anomaly,"
                    "percentile,note; the percentile is the share of the run's training images "
                    "that score lower.")
    parser.add_argument("run_dir", help="a run folder written by train_vae.py or train_ae.py")
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="an image file, a folder of images (searched recursively) or an "
                             ".npz of image arrays (optional after --calibrate or with --export)")
    parser.add_argument("--out", metavar="FILE.csv",
                        help="write the CSV here (default: standard output)")
    parser.add_argument("--montage", metavar="FILE.png",
                        help="also draw the most anomalous inputs over their reconstructions "
                             "(default: no picture)")
    parser.add_argument("--resize", action="store_true",
                        help="resize images of another size to the run's (default: refuse them)")
    parser.add_argument("--skip-unreadable", action="store_true",
                        help="give a file that cannot be scored (corrupt, too large, of another "
                             "size without --resize, in colour for a grayscale run) a row with "
                             "an empty error and the reason in the note column, and go on "
                             "(default: stop at the first, with one line)")
    parser.add_argument("--maps", metavar="DIR",
                        help="also write one PNG per image into DIR: the image, its "
                             "reconstruction and where its error lies, as a heat map over the "
                             "image (default: none)")
    parser.add_argument("--batch-size", type=positive_int,
                        help=f"images per predict batch (default: {defaults.batch_size})")
    parser.add_argument("--export", metavar="FILE.onnx",
                        help="write the run's detector as ONNX: images (N, H, W, C) in [0, 1] "
                             "to scores (N,) and maps (N, H, W), the threshold and training "
                             "scores in its metadata; runs without this repository "
                             "(examples/onnx_detect.py) (default: no export)")
    calibration = parser.add_argument_group(
        "thresholds from your own examples",
        "Choose the run's threshold from labelled examples and store it in the run folder "
        "(config.json and model.keras), with how it was chosen; INPUTs, if given, are then "
        "scored against it.")
    calibration.add_argument("--calibrate", nargs="+", metavar="NORMAL",
                             help="images, folders or .npz files of normal examples "
                                  "(default: keep the stored threshold)")
    calibration.add_argument("--anomalous", nargs="+", metavar="ANOMALOUS",
                             help="with --calibrate: examples of anomalies; without "
                                  "--target-false-positive-rate the threshold with the best F1 "
                                  "on both sets is chosen (default: none)")
    calibration.add_argument("--target-false-positive-rate", type=rate, metavar="R",
                             help="with --calibrate: the lowest threshold that flags at most "
                                  "this share of the normal examples, e.g. 0.01 (default: the "
                                  "best F1, which needs --anomalous)")
    calibration.add_argument("--pr-curve", metavar="FILE.png",
                             help="with --calibrate and --anomalous: where to draw the "
                                  "precision-recall curve (default: "
                                  "RUN/calibration_pr_curve.png)")
    return parser


def parse_detect_flags(argv=None):
    parser = build_detect_parser()
    # Intermixed: INPUTs may follow the flags (INPUT is optional, and plain parsing would
    # give it an empty list at the run folder and refuse the INPUTs after a flag).
    given = vars(parser.parse_intermixed_args(argv))
    detect_settings = DetectSettings(**{"inputs": [], **given})
    if detect_settings.calibrate is None:
        for flag, value in (("--anomalous", detect_settings.anomalous),
                            ("--target-false-positive-rate",
                             detect_settings.target_false_positive_rate),
                            ("--pr-curve", detect_settings.pr_curve)):
            if value is not None:
                parser.error(f"{flag} belongs to --calibrate: give --calibrate NORMAL... too")
        if not detect_settings.inputs and detect_settings.export is None:
            parser.error("give the INPUT images to score, or --calibrate NORMAL... to choose "
                         "the threshold, or --export FILE.onnx")
    elif detect_settings.anomalous is None and detect_settings.target_false_positive_rate is None:
        parser.error("the best F1 needs anomalous examples: give --anomalous ANOMALOUS..., or "
                     "choose by the normal examples alone with --target-false-positive-rate R")
    refuse_missing_paths(parser, run_dir=detect_settings.run_dir)  # after the flags' own errors
    return detect_settings


def build_analysis_parser():
    defaults = AnalysisSettings(run_dir="")
    parser = OneLineParser(
        prog="analysis.py", argument_default=argparse.SUPPRESS,
        description="Evaluate a run folder on its test set and write metrics.json, PNG "
                    "figures and an interactive explorer.html into it.")
    parser.add_argument("run_dir", help="a run folder written by train_vae.py or train_ae.py")
    parser.add_argument("--data",
                        help="an image folder or .npz, in the run's image size and channels "
                             "(default: the data the run used)")
    parser.add_argument("--batch-size", type=positive_int,
                        help=f"images per predict/evaluate batch (default: {defaults.batch_size})")
    parser.add_argument("--traverse", type=int, nargs=2, metavar=("FROM", "TO"),
                        help="test-image indices to interpolate between in latent space "
                             "(default: the first test 0 and the first test 1)")
    parser.add_argument("--show", action="store_true", help="also open each figure in a window")
    return parser


def parse_analysis_flags(argv=None):
    parser = build_analysis_parser()
    given = vars(parser.parse_args(argv))
    refuse_missing_paths(parser, run_dir=given["run_dir"], data_path=given.get("data"))
    return AnalysisSettings(**given)
