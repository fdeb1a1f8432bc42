"""The `hf-mmbalance train` CLI (recipe + flag overrides, outputs) and an offline `push_to_hub` round trip."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hub_server import LocalHubServer  # noqa: E402

from hf_mmbalance.cli.main import main  # noqa: E402
from hf_mmbalance.cli.parser import RecipeError, parse_recipe_and_flags  # noqa: E402
from hf_mmbalance.cli.train import DataArguments, ModelArguments  # noqa: E402
from transformers import TrainingArguments  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "mfeat" / "vanilla.yaml"
QUICK_FLAGS = ["--num_train_epochs", "2", "--views", "fou", "zer", "mor", "--logging_steps", "5"]


def test_flags_override_the_recipe(tmp_path):
    data, model, training = parse_recipe_and_flags(
        (DataArguments, ModelArguments, TrainingArguments),
        ["--config", str(RECIPE), "--fusion", "gated", "--learning_rate", "0.01", "--output_dir", str(tmp_path)],
    )
    assert model.fusion == "gated" and training.learning_rate == 0.01  # overridden
    assert data.views == ["fou", "fac", "kar", "pix", "zer", "mor"] and training.optim == "sgd"  # from the recipe
    assert training.output_dir == str(tmp_path)


def test_unknown_recipe_field_and_flag_are_named(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("fusion: concat\nlearning_rat: 0.1\n")
    with pytest.raises(RecipeError, match="learning_rat"):
        parse_recipe_and_flags((DataArguments, ModelArguments, TrainingArguments), ["--config", str(recipe)])
    with pytest.raises(RecipeError, match="--no_such_flag"):
        parse_recipe_and_flags((DataArguments, ModelArguments, TrainingArguments), ["--no_such_flag", "1"])


def test_train_command_writes_metrics_plots_and_model_card(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", str(RECIPE), "--output_dir", str(out), *QUICK_FLAGS]) == 0
    printed = capsys.readouterr().out
    assert "Per-modality report" in printed and "mor" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test_accuracy", "test_unimodal_fou_accuracy", "test_unimodal_zer_accuracy", "test_unimodal_mor_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["test_accuracy"] > 0.5  # 10 classes: far above chance after 2 epochs
    for plot in ("loss_curves.png", "eval_curves.png"):
        with Image.open(out / plot) as image:
            assert image.format == "PNG" and image.size[0] > 100
    card = (out / "README.md").read_text()
    assert "| fou head |" in card and "fusion: `concat`" in card and f"{metrics['test_accuracy']:.4f}" in card


def test_unknown_dataset_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--config", str(RECIPE), "--dataset_name", "nope", "--output_dir", str(tmp_path)]) == 2
    assert "dataset_name='nope'" in capsys.readouterr().err


def test_synthetic_regression_size_and_disagreement_come_from_the_recipe():
    from hf_mmbalance.cli.train import load_data

    data = load_data(DataArguments(dataset_name="synthetic_regression", num_samples=200, disagreement=3.0))
    assert sum(len(split) for split in data.values()) == 200 and len(data["train"]) == 140
    far = load_data(DataArguments(dataset_name="synthetic_regression", num_samples=200, disagreement=0.0))["train"]
    assert far["true_text"] == far["true_audio"]  # no disagreement: every modality sees the shared sentiment
    with pytest.raises(ValueError, match="disagreement"):
        load_data(DataArguments(dataset_name="synthetic_regression", disagreement=-1.0))


LOAD_BACK = """
import json, sys, torch
from transformers import AutoModelForSequenceClassification
model = AutoModelForSequenceClassification.from_pretrained("user/mfeat-demo", trust_remote_code=True).eval()
inputs = {name: torch.ones(2, size) for name, size in (("fou", 76), ("zer", 47), ("mor", 6))}
print(json.dumps({"logits": model(**inputs).logits.tolist(),
                  "imported": [m for m in sys.modules if m.startswith("hf_mmbalance")]}))
"""


def test_push_to_hub_end_to_end_offline(tmp_path):
    with LocalHubServer(tmp_path / "store") as hub:
        env = hub.client_env(tmp_path / "hf_home_push")
        out = tmp_path / "run"
        command = [
            sys.executable, "-m", "hf_mmbalance.cli.main", "train", "--config", str(RECIPE), "--output_dir", str(out),
            *QUICK_FLAGS, "--push_to_hub", "true", "--hub_model_id", "user/mfeat-demo",
        ]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-4000:]
        stored = hub.files("user/mfeat-demo")
        for name in ("config.json", "model.safetensors", "README.md", "modeling_mmbalance.py", "metrics.json"):
            assert name in stored, stored
        assert hub.read("user/mfeat-demo", "model.safetensors") == (out / "model.safetensors").read_bytes()
        assert "| zer head |" in hub.read("user/mfeat-demo", "README.md").decode()
        # load back from what the server stored, in a process with a fresh cache and without hf_mmbalance
        env = hub.client_env(tmp_path / "hf_home_load")
        env.pop("PYTHONPATH", None)
        result = subprocess.run([sys.executable, "-c", textwrap.dedent(LOAD_BACK)], env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-4000:]
        loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["imported"] == []
    import torch
    from hf_mmbalance import MMBalanceForClassification

    local = MMBalanceForClassification.from_pretrained(out).eval()
    inputs = {name: torch.ones(2, size) for name, size in (("fou", 76), ("zer", 47), ("mor", 6))}
    torch.testing.assert_close(torch.tensor(loaded["logits"]), local(**inputs).logits)
