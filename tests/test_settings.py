"""The settings dataclass: flags in, config.json and checkpoint out, --resume back in."""

import dataclasses
import re
import subprocess
import sys

import pytest

import settings
from conftest import REPO, needs_bfloat16_kernels


def test_no_flags_give_the_dataclass_defaults():
    for model in ("vae", "ae"):
        parsed, given = settings.parse_training_flags(model, [])
        assert parsed == settings.TrainingSettings.defaults_for(model) and given == set()
    assert settings.TrainingSettings.defaults_for("ae").epochs == settings.DEFAULT_EPOCHS["ae"]


def test_flags_fill_the_dataclass_and_say_which_were_given():
    parsed, given = settings.parse_training_flags(
        "vae", ["--epochs", "3", "--learning-rate", "1e-3", "--digits", "7", "1", "7",
                "--batch-norm", "keras", "--out", "somewhere"])
    assert (parsed.epochs, parsed.learning_rate, parsed.digits) == (3, 1e-3, [1, 7])
    assert parsed.batch_norm == "keras" and parsed.out == "somewhere"
    assert given == {"epochs", "learning_rate", "digits", "batch_norm", "out"}


@pytest.mark.parametrize("parser", [settings.build_training_parser("vae"),
                                    settings.build_training_parser("ae"),
                                    settings.build_analysis_parser()])
def test_help_shows_each_default_once(parser, capsys):
    for action in parser._actions:
        if action.option_strings and action.nargs != 0:  # flags that take a value
            assert action.help.count("default") == 1, action.option_strings
    parser.print_help()
    text = capsys.readouterr().out
    assert text.count("(default:") == sum(
        1 for action in parser._actions if action.option_strings and action.nargs != 0)


def test_the_ae_has_no_reconstruction_weight_flag():
    with pytest.raises(SystemExit):
        settings.parse_training_flags("ae", ["--reconstruction-weight", "10"])


def test_settings_round_trip_through_a_dict():
    original = settings.TrainingSettings.defaults_for("ae")
    original = dataclasses.replace(original, digits=[3], seed=4)
    assert settings.TrainingSettings.from_dict(original.to_dict(), "ae", "x") == original


def test_a_stored_dict_with_an_unknown_setting_is_refused_in_one_line():
    with pytest.raises(settings.SettingsError, match="warp_factor.*without --resume"):
        settings.TrainingSettings.from_dict({"warp_factor": 9}, "vae", "checkpoint.npz")


def test_a_dict_from_before_the_dataclass_fills_in_the_defaults():
    # The checkpoints of earlier versions stored these names only.
    old = {"data": None, "train_limit": 256, "digits": None, "batch_size": 32,
           "learning_rate": 5e-4, "lr_schedule": "constant", "latent_dim": 2,
           "reconstruction_weight": 1000.0, "seed": 0, "precision": "float32"}
    restored = settings.TrainingSettings.from_dict(old, "vae", "checkpoint.npz")
    assert restored.train_limit == 256 and restored.epochs == settings.DEFAULT_EPOCHS["vae"]


@pytest.mark.parametrize("model", ["vae", "ae"])
def test_recipe_original_gives_the_original_scripts_settings_and_given_flags_win(model):
    parsed, given = settings.parse_training_flags(model, ["--recipe", "original"])
    assert (parsed.epochs, parsed.learning_rate, parsed.lr_schedule, parsed.warmup_epochs,
            parsed.upsampling, parsed.test_every, parsed.batch_size) == \
        (settings.ORIGINAL_EPOCHS[model], 5e-4, "constant", 0, "transpose", 1, 32)
    assert {"epochs", "learning_rate", "upsampling"} <= given  # so --resume can refuse a change
    parsed, _ = settings.parse_training_flags(model, ["--recipe", "original", "--epochs", "7"])
    assert parsed.epochs == 7 and parsed.upsampling == "transpose"
    tuned, given = settings.parse_training_flags(model, [])
    # The VAE leaves the original's 3x3 transposed convolutions, which blot its prior samples;
    # the AE, which draws none, keeps them and trains fewer epochs.
    expected_upsampling = {"vae": "transpose2x2", "ae": "transpose"}[model]
    assert tuned.upsampling == expected_upsampling and tuned.lr_schedule == "cosine"
    assert tuned.epochs < settings.ORIGINAL_EPOCHS[model]
    assert given == set()


@pytest.mark.parametrize("argv, model, policy, epochs", [
    ([], "ae", "mixed_bfloat16", settings.BFLOAT16_EPOCHS["ae"]),
    (["--recipe", "tuned"], "ae", "mixed_bfloat16", settings.BFLOAT16_EPOCHS["ae"]),
    ([], "ae", "float32", settings.DEFAULT_EPOCHS["ae"]),
    ([], "ae", "mixed_float16", settings.DEFAULT_EPOCHS["ae"]),
    ([], "vae", "mixed_bfloat16", settings.DEFAULT_EPOCHS["vae"]),
    ([], "vae", "float32", settings.DEFAULT_EPOCHS["vae"]),
    (["--epochs", "7"], "ae", "mixed_bfloat16", 7),
    (["--epochs", "16"], "ae", "mixed_bfloat16", 16),
    (["--recipe", "tuned", "--epochs", "7"], "ae", "mixed_bfloat16", 7),
    (["--recipe", "original"], "ae", "mixed_bfloat16", settings.ORIGINAL_EPOCHS["ae"]),
    (["--resume"], "ae", "mixed_bfloat16", settings.DEFAULT_EPOCHS["ae"]),
])
def test_the_default_ae_trains_longer_in_bfloat16_unless_the_epochs_were_chosen(
        argv, model, policy, epochs):
    parsed, given = settings.parse_training_flags(model, argv)
    assert settings.recipe_for_policy(parsed, policy, given).epochs == epochs


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "float32", "mixed_float16"])
def test_the_default_vae_trains_its_2x2_decoder_in_every_precision(policy):
    parsed, given = settings.parse_training_flags("vae", [])
    chosen = settings.recipe_for_policy(parsed, policy, given)
    assert (chosen.upsampling, chosen.epochs) == ("transpose2x2", settings.DEFAULT_EPOCHS["vae"])


@needs_bfloat16_kernels
def test_a_default_run_in_bfloat16_trains_the_bfloat16_recipe(tiny_npz, tmp_path):
    import keras

    import training

    class StopAtOnce(keras.callbacks.Callback):
        """Records the epochs that fit was asked for, and stops after one step."""

        def on_train_begin(self, logs=None):
            self.epochs = self.params["epochs"]

        def on_train_batch_end(self, batch, logs=None):
            self.model.stop_training = True

    stop = StopAtOnce()
    run_settings, given = settings.parse_training_flags("ae", [
        "--data", str(tiny_npz), "--train-limit", "64", "--precision", "mixed_bfloat16",
        "--verbose", "0", "--out", str(tmp_path / "run")])
    with pytest.raises(training.TrainingStopped):  # stopped before its last epoch
        training.train(run_settings, given, callbacks=[stop])
    assert stop.epochs == settings.BFLOAT16_EPOCHS["ae"] != settings.DEFAULT_EPOCHS["ae"]


def test_stored_settings_without_the_later_fields_take_the_values_of_their_time():
    # A run from before --upsampling, --warmup-epochs and --test-every trained the original way.
    stored = settings.TrainingSettings.defaults_for("vae", "original").to_dict()
    for name in ("upsampling", "warmup_epochs", "test_every"):
        del stored[name]
    restored = settings.TrainingSettings.from_dict(stored, "vae", "checkpoint.npz")
    assert (restored.upsampling, restored.warmup_epochs, restored.test_every) == \
        ("transpose", 0, 1)


def test_resume_keeps_the_run_settings_and_takes_epochs_and_learning_rate():
    saved = dataclasses.replace(settings.TrainingSettings.defaults_for("vae"), epochs=4, seed=3,
                                latent_dim=5)
    command_line, given = settings.parse_training_flags(
        "vae", ["--resume", "--epochs", "9", "--learning-rate", "1e-4"])
    resumed = settings.resumed_settings(saved, command_line, given)
    assert (resumed.epochs, resumed.learning_rate, resumed.seed, resumed.latent_dim) == \
        (9, 1e-4, 3, 5)
    assert resumed.resume


def test_resume_without_epochs_trains_to_the_run_own_target():
    saved = dataclasses.replace(settings.TrainingSettings.defaults_for("vae"), epochs=40)
    command_line, given = settings.parse_training_flags("vae", ["--resume"])
    assert settings.resumed_settings(saved, command_line, given).epochs == 40


def test_resume_refuses_a_flag_that_would_change_the_run():
    saved = settings.TrainingSettings.defaults_for("vae")
    command_line, given = settings.parse_training_flags("vae", ["--resume", "--latent-dim", "8"])
    with pytest.raises(settings.SettingsError, match="--latent-dim"):
        settings.resumed_settings(saved, command_line, given)
    # The same value as the run's is no change.
    command_line, given = settings.parse_training_flags("vae", ["--resume", "--latent-dim", "2"])
    assert settings.resumed_settings(saved, command_line, given).latent_dim == 2


def run_script_probe(command):
    """Runs a script's main as `python SCRIPT FLAGS...` would; its stdout ends with its exit
    code ("EXIT N") and whether Keras was imported ("KERAS LOADED" or "NO KERAS")."""
    script = command[0]
    probe = (f"import runpy, sys; sys.argv = {command!r}\n"
             f"try:\n    runpy.run_path({script!r}, run_name='__main__')\n"
             f"except SystemExit as exit_info:\n    print('EXIT', exit_info.code)\n"
             f"print('KERAS LOADED' if 'keras' in sys.modules else 'NO KERAS')")
    return subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=False)


def help_entries_of_flags_with_values(help_text):
    """Each option's entry in `--help` (its lines joined), for the options that take a value."""
    options = help_text.split("options:", 1)[1]
    entries = [" ".join(entry.split()) for entry in re.split(r"\n  (?=-)", options)[1:]]
    return [entry for entry in entries if re.match(r"-[^ ,]*(, --?[^ ,]*)*,? [A-Z{]", entry)]


@pytest.mark.parametrize("script", ["train_vae.py", "train_ae.py", "analysis.py", "detect.py",
                                    "benchmarks/train_speed.py", "benchmarks/levers.py",
                                    "benchmarks/one_class.py", "benchmarks/latent_sweep.py",
                                    "benchmarks/generators.py", "benchmarks/seed_table.py",
                                    "benchmarks/blots.py", "benchmarks/short_run.py",
                                    "benchmarks/anomaly_scores.py", "benchmarks/localisation.py",
                                    "benchmarks/detect_example.py",
                                    "benchmarks/input_pipeline.py"])
def test_help_is_answered_before_keras_loads_and_gives_each_default_once(script):
    finished = run_script_probe([script, "--help"])
    assert "usage:" in finished.stdout
    assert finished.stdout.strip().endswith("NO KERAS"), finished.stdout[-300:]
    entries = help_entries_of_flags_with_values(finished.stdout)
    assert entries
    for entry in entries:
        # Once: not the help's own words on the default and argparse's "(default: None)" too.
        assert entry.count("(default") <= 1, entry
        assert "(default: None)" not in entry or entry.count("default") == 1, entry


@pytest.mark.parametrize("command, message", [
    (["train_vae.py", "--data", "no/such/file.npz"],
     "train_vae.py: error: data file no/such/file.npz does not exist: check the path given to --data"),
    (["train_ae.py", "--data", "no/such/folder"], "data file no/such/folder does not exist"),
    (["analysis.py", "no/such/run"],
     "analysis.py: error: run folder no/such/run does not exist: train first"),
    (["analysis.py", ".", "--data", "no/such/file.npz"], "data file no/such/file.npz"),
    (["detect.py", "no/such/run", "image.png"], "detect.py: error: run folder no/such/run"),
])
def test_a_missing_path_is_refused_before_keras_loads(command, message):
    # The same one line as data.py's and run_folder.py's later checks, without Keras' start-up.
    finished = run_script_probe(command)
    assert finished.stdout.splitlines() == ["EXIT 2", "NO KERAS"], finished.stdout[-300:]
    (line,) = finished.stderr.strip().splitlines()
    assert message in line


def test_detect_inputs_may_follow_flags_and_calibration_flags_parse(tmp_path):
    run = str(tmp_path)  # the run folder must exist; its contents are read later
    parsed = settings.parse_detect_flags([run, "--out", "x.csv", "a.png", "b/"])
    assert parsed.inputs == ["a.png", "b/"] and parsed.calibrate is None
    parsed = settings.parse_detect_flags([run, "--calibrate", "n/", "m.npz",
                                          "--target-false-positive-rate", "0.01"])
    assert parsed.inputs == [] and parsed.calibrate == ["n/", "m.npz"]
    assert parsed.target_false_positive_rate == 0.01
