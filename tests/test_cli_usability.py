"""`hf-mmbalance` usability: one-line errors (exit 2) for bad input, tracebacks for bugs; user datasets (sample ids,
views, splits, inferred task); `--resume_from_checkpoint true | last | <output_dir>`; `python -m hf_mmbalance` under
`accelerate launch` with 2 processes; fast top-level help, `train --help [METHOD]`; method sections in `active`.

Runs the CLI in-process through `main([...])` with tiny runs (`--max_steps 2`) on small synthetic datasets saved
with `save_to_disk`; subprocesses only for the import check of the top-level help and the 2-process launch.
"""

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest

from hf_mmbalance import make_synthetic_classification
from hf_mmbalance.cli.main import main
from hf_mmbalance.methods import METHOD_REGISTRY, GradientModulationCallback

ROOT = Path(__file__).resolve().parents[1]
VANILLA = ROOT / "recipes" / "mfeat" / "vanilla.yaml"
BMMAL = ROOT / "recipes" / "mfeat" / "bmmal.yaml"
TINY = ["--max_steps", "2", "--eval_strategy", "no", "--logging_steps", "1", "--per_device_train_batch_size", "8"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """save_to_disk folders: without sample_idx, train/test only, float labels (modalities a, b; 4 classes)."""
    root = tmp_path_factory.mktemp("datasets")
    data = make_synthetic_classification(num_samples=80, seed=0)
    data.remove_columns("sample_idx").save_to_disk(root / "no_ids")
    datasets.DatasetDict(train=data["train"], test=data["test"]).save_to_disk(root / "train_test")
    floats = datasets.DatasetDict({
        split: part.cast_column("labels", datasets.Value("int64")).cast_column("labels", datasets.Value("float32"))
        for split, part in data.items()
    })
    floats.save_to_disk(root / "float_labels")
    return {name: str(root / name) for name in ("no_ids", "train_test", "float_labels")}


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(result, pattern):
    code, _, err = result
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("hf-mmbalance: "), err
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


# ----------------------------------------------------------------------------------------------------- help


def test_top_level_help_lists_the_commands_without_importing_the_stack():
    # The real package: its lazy `__init__` and the CLI load nothing heavy before they know the command (see
    # benchmarks/cli_help_time.py for the wall time).
    probe = (
        "import sys\n"
        "from hf_mmbalance.cli.main import main\n"
        "assert main(['--help']) == 0\n"
        "print('HEAVY', sorted({'torch', 'transformers', 'datasets', 'numpy'} & set(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout
    for word in ("train", "active", *METHOD_REGISTRY, "--help-training", "accelerate launch", "-m hf_mmbalance"):
        assert word in result.stdout, word


def test_train_help_starts_with_its_own_options_and_documents_every_method_option(capsys):
    code, out, _ = run(capsys, "train", "--help")
    assert code == 0
    assert out.startswith("usage: hf-mmbalance train --config")
    assert len(out.splitlines()) < 400  # not the 677 lines of every TrainingArguments field
    head = out[: out.index("training (TrainingArguments")]
    for flag in ("--config", "--dataset_name", "--views", "--fusion", "--hidden_sizes"):
        assert flag in head, flag
    assert "--help-training" in out and "--resume_from_checkpoint" in out and "--adam_beta1" not in out
    for name, entry in METHOD_REGISTRY.items():
        for field in dataclasses.fields(entry.config_class):
            assert f"--{name}.{field.name} " in out, (name, field.name)
            words = " ".join(field.metadata.get("help", "").split()[:3])
            assert words in " ".join(out.split()), (name, field.name, words)
    code, full, _ = run(capsys, "train", "--help-training")
    assert code == 0 and "--adam_beta1" in full and "--per_device_train_batch_size" in full


def test_help_of_one_method_and_of_the_active_section(capsys):
    code, out, _ = run(capsys, "train", "--help", "modulation")
    assert code == 0 and out.startswith("modulation:")
    assert "--modulation.alpha" in out and "--modulation.noise_std_from" in out and "--bss." not in out
    code, out, _ = run(capsys, "active", "--help", "active")
    assert code == 0 and "--active.budget_per_round" in out and "--active.allow_config_change" in out
    code, out, _ = run(capsys, "active", "--help")
    assert code == 0 and "--active.strategy" in out and "--modulation.mode" in out
    assert_one_line_error(run(capsys, "train", "--help", "modulaton"), r"no such section .*modulation, bss, ulgm")


def test_unknown_command_and_bad_flag_values_are_one_line(capsys, tmp_path):
    assert_one_line_error(run(capsys, "trian"), r"unknown command 'trian'; commands: train, active")
    assert_one_line_error(run(capsys, "train", "--config", VANILLA, "--num_train_epochs", "abc"),
                          r"--num_train_epochs.*invalid float value: 'abc'")
    assert_one_line_error(run(capsys, "train", "--config", VANILLA, "--modulation.alpha", "[0.1"),
                          r"--modulation.alpha '\[0.1': not a valid YAML value")


# ----------------------------------------------------------------------------------------------------- errors


def test_a_misspelled_method_option_lists_the_valid_ones(capsys, tmp_path):
    valid = r"unknown option 'alpah' for modulation; valid: mode, alpha, score, noise, .*did you mean 'alpha'"
    line = assert_one_line_error(run(capsys, "train", "--config", VANILLA, "--modulation.alpah", "0.2"), valid)
    assert "flag --modulation.alpah" in line
    recipe = tmp_path / "typo.yaml"
    recipe.write_text(VANILLA.read_text() + "\nmodulation:\n  mode: ada2i\n  alpah: 0.2\n")
    line = assert_one_line_error(run(capsys, "train", "--config", recipe), valid)
    assert "recipe section `modulation:`" in line
    assert_one_line_error(run(capsys, "active", "--config", BMMAL, "--active.budget", "5"),
                          r"unknown option 'budget' for active; valid: strategy, budget_per_round")
    assert_one_line_error(run(capsys, "train", "--config", VANILLA, "--modulaton.mode", "ada2i"),
                          r"unknown method in flag --modulaton.mode.*did you mean --modulation.mode")


def test_yaml_syntax_errors_config_errors_and_start_up_value_errors_are_one_line(capsys, tmp_path, saved):
    broken = tmp_path / "broken.yaml"
    broken.write_text("fusion: [concat\nlearning_rate: 0.1\n")
    assert_one_line_error(run(capsys, "train", "--config", broken), r"broken.yaml: not valid YAML: .*line")
    data = ["--config", VANILLA, "--dataset_name", saved["no_ids"], "--views", "a", "b", "--output_dir", tmp_path / "o"]
    assert_one_line_error(run(capsys, "train", *data, *TINY, "--fusion", "nope"), r"fusion='nope' is unknown")
    assert_one_line_error(run(capsys, "train", *data, *TINY, "--modulation.mode", "nope"),
                          r"ModulationConfig.mode='nope' is unknown")
    # raised by BSSCallback inside Trainer.train, before the first step: still a bad input
    assert_one_line_error(run(capsys, "train", *data, *TINY, "--bss.pacing", "linear"),
                          r"BSSCallback plans the curriculum by epochs")


def test_library_error_classes_are_user_errors_and_a_bug_keeps_its_traceback(capsys, monkeypatch, tmp_path, saved):
    import yaml

    from hf_mmbalance.cli import errors
    from hf_mmbalance.data import DatasetFilesError, DatasetValidationError
    from hf_mmbalance.modeling import MMBalanceConfigError
    from hf_mmbalance.processing import ProcessingError
    from hf_mmbalance.trainer.checkpoint_state import CheckpointStateError

    errors.RunPhase.training_started = True  # even during training, these classes mean a bad input
    try:
        for cls in (MMBalanceConfigError, DatasetValidationError, DatasetFilesError, CheckpointStateError,
                    ProcessingError, yaml.YAMLError):
            assert errors.is_user_error(cls("bad\n  input")), cls
        assert not errors.is_user_error(ValueError("inside the training loop: a bug"))
    finally:
        errors.RunPhase.reset()
    assert errors.is_user_error(ValueError("before training"))
    assert not errors.is_user_error(RuntimeError("never"))
    assert errors.error_line(DatasetValidationError("line one\n   line two")) == "hf-mmbalance: line one line two"

    import hf_mmbalance.cli.train as train_module

    data = ["--config", VANILLA, "--dataset_name", saved["no_ids"], "--views", "a", "b", "--output_dir", tmp_path / "o"]

    def bug(*args, **kwargs):
        raise KeyError("an internal bug")

    monkeypatch.setattr(train_module, "prepare_dataset", bug)
    with pytest.raises(KeyError, match="an internal bug"):
        main(["train", *map(str, data), *TINY])
    monkeypatch.undo()

    def late(*args, **kwargs):  # a ValueError once training ran is a bug, not a bad input
        raise ValueError("after training")

    monkeypatch.setattr(train_module, "write_run_outputs", late)
    with pytest.raises(ValueError, match="after training"):
        main(["train", *map(str, data), *TINY])


# ----------------------------------------------------------------------------------------------------- data


def test_a_saved_dataset_without_sample_idx_gets_ids_and_trains_with_views(capsys, tmp_path, saved):
    from hf_mmbalance.cli.train import DataArguments, load_data

    data = load_data(DataArguments(dataset_name=saved["no_ids"], views=["a", "b"]))
    ids = [list(data[split]["sample_idx"]) for split in ("train", "validation", "test")]
    assert ids[0] == list(range(len(ids[0])))  # 0..N-1 per split, continuing across splits
    assert ids[1][0] == len(ids[0]) and ids[2][-1] == sum(map(len, ids)) - 1
    code, out, err = run(capsys, "train", "--config", VANILLA, "--dataset_name", saved["no_ids"], "--views", "a", "b",
                         "--output_dir", tmp_path / "o", *TINY)
    assert code == 0, err
    assert "labels are a ClassLabel with 4 classes: classification" in out


def test_recipe_views_carried_into_another_dataset_are_refused_naming_the_columns(capsys, tmp_path, saved):
    line = assert_one_line_error(
        run(capsys, "train", "--config", VANILLA, "--dataset_name", saved["no_ids"], "--output_dir", tmp_path, *TINY),
        r"the recipe .*vanilla.yaml sets views \['fou', .*none of them is a column of dataset 'no_ids'")
    assert "(given with --dataset_name)" in line and "pass --views a b" in line
    assert_one_line_error(
        run(capsys, "train", "--config", VANILLA, "--dataset_name", saved["no_ids"], "--views", "a", "c",
            "--output_dir", tmp_path, *TINY),
        r"--views \['a', 'c'\], but \['c'\] are not columns .*\['a', 'b'\]")
    assert_one_line_error(run(capsys, "train", "--config", VANILLA, "--views", "fou", "nope", "--output_dir", tmp_path),
                          r"\['nope'\] are not columns of dataset 'mfeat'")


def test_a_missing_validation_split_says_which_and_how_to_fix(capsys, tmp_path, saved):
    assert_one_line_error(
        run(capsys, "train", "--config", VANILLA, "--dataset_name", saved["train_test"], "--views", "a", "b",
            "--output_dir", tmp_path, *TINY, "--eval_strategy", "epoch"),
        r"eval_strategy='epoch' evaluates on the 'validation' split, and dataset 'train_test' has only the splits "
        r"\['train', 'test'\]: add a 'validation' split .* or pass --eval_strategy no")


def test_the_inferred_task_is_printed_and_methods_that_do_not_apply_are_refused(capsys, tmp_path, saved):
    floats = ["--config", VANILLA, "--dataset_name", saved["float_labels"], "--views", "a", "b",
              "--output_dir", tmp_path / "o", *TINY]
    code, out, err = run(capsys, "train", *floats)
    assert code == 0, err
    assert "labels are float32: regression" in out
    assert_one_line_error(run(capsys, "train", *floats, "--modulation.mode", "ada2i"),
                          r"modulation is classification-only.*task is regression \(labels are float32: regression\)"
                          r".*integers or a ClassLabel")
    assert_one_line_error(run(capsys, "train", *floats, "--bss.criterion", "prediction_similarity"),
                          r"bss criterion='prediction_similarity' .* classification-only")
    assert_one_line_error(run(capsys, "train", *floats, "--bss.scheduler", "learned",
                              "--bss.similarity", "prediction_similarity"), r"bss similarity=.* classification-only")
    assert_one_line_error(
        run(capsys, "train", "--config", VANILLA, "--dataset_name", saved["no_ids"], "--views", "a", "b",
            "--output_dir", tmp_path / "o", *TINY, "--ulgm.variant", "sugrm"),
        r"ulgm generates unimodal labels for a regression task.*task is classification \(labels are a ClassLabel")


# ----------------------------------------------------------------------------------------------------- resume


def test_resume_from_the_latest_complete_checkpoint(capsys, tmp_path, saved):
    out = tmp_path / "run"
    flags = ["--config", VANILLA, "--dataset_name", saved["no_ids"], "--views", "a", "b", "--output_dir", out,
             *TINY, "--save_strategy", "steps", "--save_steps", "1", "--modulation.mode", "ada2i"]
    code, _, err = run(capsys, "train", *flags)
    assert code == 0, err
    state_path = out / "checkpoint-2" / "trainer_state.json"
    state = json.loads(state_path.read_text())
    state["log_history"].append({"marker": "from checkpoint-2", "step": 2})  # visible only if it resumes from there
    state_path.write_text(json.dumps(state))
    (out / "checkpoint-9").mkdir()  # an interrupted save: no trainer_state.json, skipped
    for value in ("true", "last", str(out)):
        code, printed, err = run(capsys, "train", *flags, "--max_steps", "3", "--resume_from_checkpoint", value)
        assert code == 0, err
        assert "resuming from the latest checkpoint" in printed
        history = json.loads((out / "log_history.json").read_text())
        assert {"marker": "from checkpoint-2", "step": 2} in history and history[-1]["step"] == 3
        shutil.rmtree(out / "checkpoint-3")  # the next value resumes from checkpoint-2 again
    assert_one_line_error(run(capsys, "train", *flags, "--resume_from_checkpoint", tmp_path / "nope"),
                          r"--resume_from_checkpoint .*nope: no such folder")
    assert_one_line_error(run(capsys, "train", *flags, "--output_dir", tmp_path / "empty", "--resume_from_checkpoint",
                              "true"), r"no complete checkpoint-<step> folder in output_dir .*empty")
    (out / "checkpoint-2" / "gradient_modulation.json").unlink()  # the method's state is gone: CheckpointStateError
    assert_one_line_error(run(capsys, "train", *flags, "--max_steps", "3", "--resume_from_checkpoint", "last"),
                          r"GradientModulationCallback: the checkpoint has no gradient_modulation.json")


def test_resume_values_resolve_to_what_trainer_train_takes(tmp_path):
    from hf_mmbalance.cli.train import resolve_resume

    other = tmp_path / "other"
    for step in (1, 4):
        (other / f"checkpoint-{step}").mkdir(parents=True)
        (other / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (other / "checkpoint-7").mkdir()  # incomplete
    assert resolve_resume(None, str(tmp_path)) is None and resolve_resume("false", str(tmp_path)) is None
    assert resolve_resume(str(other), str(other)) is True  # the output directory itself
    assert resolve_resume(str(other), str(tmp_path / "out")) == str(other / "checkpoint-4")  # another run's folder
    assert resolve_resume(str(other / "checkpoint-1"), None) == str(other / "checkpoint-1")
    assert resolve_resume("LAST", str(other)) is True


# ----------------------------------------------------------------------------------------------------- active


def test_active_takes_balancing_method_sections_with_fresh_callbacks_per_round(capsys, monkeypatch, tmp_path):
    import hf_mmbalance.cli.active as active_module

    real = active_module.run_active_learning
    rounds = []

    def recording(*args, make_callbacks=None, **kwargs):
        def make():
            callbacks = make_callbacks()
            rounds.append(callbacks)
            return callbacks

        return real(*args, make_callbacks=make, **kwargs)

    monkeypatch.setattr(active_module, "run_active_learning", recording)
    code, out, err = run(capsys, "active", "--config", BMMAL, "--dataset_name", "synthetic", "--num_samples", "120",
                         "--views", "a", "b", "--output_dir", tmp_path / "al", "--active.budget_per_round", "16",
                         "--active.total_budget", "32", "--num_train_epochs", "1", "--per_device_train_batch_size", "8",
                         "--modulation.mode", "ada2i", "--modulation.alpha", "0.3")
    assert code == 0, err
    assert "methods modulation in every round" in out
    modulation = [[c for c in callbacks if isinstance(c, GradientModulationCallback)] for callbacks in rounds]
    assert [len(m) for m in modulation] == [1, 1] and modulation[0][0] is not modulation[1][0]
    for (callback,) in modulation:
        assert callback.config.alpha == 0.3 and callback.last_coefficients  # it ran in that round's training
    state = json.loads((tmp_path / "al" / "active_learning_state.json").read_text())
    assert len(state["rounds"]) >= 2


# ----------------------------------------------------------------------------------------------------- launch


def test_accelerate_launch_runs_the_module_on_two_processes(tmp_path):
    accelerate = Path(sys.executable).parent / "accelerate"
    if not accelerate.exists():
        pytest.skip("accelerate's launcher is not installed next to this Python")
    out = tmp_path / "ddp"
    command = [
        str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
        "no", "--dynamo_backend", "no", "-m", "hf_mmbalance", "train", "--config", str(VANILLA), "--views", "fou", "zer",
        "--max_steps", "2", "--use_cpu", "true", "--eval_strategy", "no", "--output_dir", str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "world size 2 (cpu)" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    # 1400 train rows, batch 32 per process: 2 steps of 2 x 32 rows are 2/22 of an epoch (one process: 2/44)
    assert metrics["train_epoch"] == pytest.approx(2 / np.ceil(1400 / 64), abs=1e-6)
