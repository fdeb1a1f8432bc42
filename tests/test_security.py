"""What is trusted: a checkpoint never turns on remote code by itself; nothing written or pushed holds a token or a
local path."""

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from tiny_backbones import bert_config
from transformers import AutoConfig, AutoModelForSequenceClassification, BertModel, TrainingArguments

from hf_mmbalance import MMBalanceConfig, MMBalanceConfigError, MMBalanceForClassification, MultimodalTrainer
from hf_mmbalance.data import make_synthetic_classification

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hub_server import LocalHubServer  # noqa: E402

EVIL_CONFIG = '''
import os
from transformers import PreTrainedConfig
open(os.environ["MMB_MARKER"], "w").write("code from the checkpoint ran")

class EvilConfig(PreTrainedConfig):
    model_type = "evil_backbone"
'''


def evil_backbone(folder: Path) -> Path:
    """A backbone folder whose config needs its own code: importing that code writes the marker file."""
    folder.mkdir()
    (folder / "configuration_evil.py").write_text(EVIL_CONFIG)
    (folder / "config.json").write_text(json.dumps(
        {"model_type": "evil_backbone", "auto_map": {"AutoConfig": "configuration_evil.EvilConfig"}}))
    return folder


def malicious_checkpoint(tmp_path: Path) -> Path:
    """An hf_mmbalance checkpoint whose config.json asks, by itself, for the evil backbone's code to run."""
    torch.manual_seed(0)
    MMBalanceForClassification(MMBalanceConfig(modalities={"a": 4}, num_labels=2)).save_pretrained(tmp_path / "ckpt")
    path = tmp_path / "ckpt" / "config.json"
    config = json.loads(path.read_text())
    config["trust_remote_code"] = True
    config["modalities"]["x"] = {"encoder": "auto", "backbone": str(evil_backbone(tmp_path / "evil")),
                                 "backbone_config": None, "trust_remote_code": True}
    config["modality_order"] = ["a", "x"]
    path.write_text(json.dumps(config))
    return tmp_path / "ckpt"


@pytest.fixture
def marker(tmp_path, monkeypatch):
    path = tmp_path / "marker.txt"
    monkeypatch.setenv("MMB_MARKER", str(path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return path


@pytest.mark.parametrize(
    "load",
    [
        lambda path: MMBalanceConfig.from_pretrained(path),
        lambda path: MMBalanceForClassification.from_pretrained(path),
        lambda path: AutoConfig.from_pretrained(path),
        lambda path: AutoModelForSequenceClassification.from_pretrained(path),
    ],
    ids=["MMBalanceConfig", "MMBalanceForClassification", "AutoConfig", "AutoModelForSequenceClassification"],
)
def test_a_checkpoint_cannot_turn_on_remote_code_by_itself(tmp_path, marker, load):
    checkpoint = malicious_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="modalities\\['x'\\].backbone"):
        load(checkpoint)
    assert not marker.exists(), "the backbone's code ran although the caller never passed trust_remote_code"


def test_the_callers_trust_remote_code_is_what_runs_it(tmp_path, marker):
    """The positive control: the same checkpoint with the caller's trust_remote_code=True does import the code, so
    the test above would see it run."""
    checkpoint = malicious_checkpoint(tmp_path)
    config = MMBalanceConfig.from_pretrained(checkpoint, trust_remote_code=True)
    assert marker.exists()
    assert config.modalities["x"]["backbone_config"]["model_type"] == "evil_backbone"


def test_a_backbone_config_with_an_auto_map_builds_the_library_model_without_trust(tmp_path, marker):
    backbone = bert_config().to_dict()
    backbone["auto_map"] = {"AutoModel": "someone/evil--modeling_evil.EvilModel"}
    model = MMBalanceForClassification(MMBalanceConfig(modalities={"x": {"encoder": "auto", "backbone_config": backbone}}, num_labels=2))
    assert type(model.encoders["x"].backbone) is BertModel
    assert not marker.exists()


def test_modality_settings_cannot_allow_remote_code_and_the_switch_is_never_saved(tmp_path):
    with pytest.raises(MMBalanceConfigError, match="trust_remote_code=True to MMBalanceConfig"):
        MMBalanceConfig(modalities={"x": {"encoder": "auto", "backbone_config": bert_config(), "trust_remote_code": True}}, num_labels=2)
    config = MMBalanceConfig(modalities={"x": {"encoder": "auto", "backbone_config": bert_config()}}, num_labels=2,
                             trust_remote_code=True)
    assert config.trust_remote_code
    config.save_pretrained(tmp_path)
    assert "trust_remote_code" not in (tmp_path / "config.json").read_text()
    assert not MMBalanceConfig.from_pretrained(tmp_path).trust_remote_code


def test_a_local_backbone_path_is_saved_by_its_folder_name(tmp_path):
    BertModel(bert_config()).save_pretrained(tmp_path / "models" / "tiny-bert")
    config = MMBalanceConfig(modalities={"x": {"encoder": "auto", "backbone": str(tmp_path / "models" / "tiny-bert")}}, num_labels=2)
    model = MMBalanceForClassification(config)
    model.save_pretrained(tmp_path / "ckpt")
    saved = (tmp_path / "ckpt" / "config.json").read_text()
    assert str(tmp_path) not in saved and json.loads(saved)["modalities"]["x"]["backbone"] == "tiny-bert"
    assert config.modalities["x"]["backbone"] == str(tmp_path / "models" / "tiny-bert")  # in memory: still loadable
    model.load_backbone_weights()


DATA = make_synthetic_classification(num_samples=40, num_classes=2, modalities={"a": 4}, seed=0)


def test_training_args_bin_holds_no_token_and_no_local_path(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path / "run"), hub_token="hf_SECRETTOKEN123", max_steps=2,
                             save_strategy="steps", save_steps=2, report_to="none", use_cpu=True, disable_tqdm=True)
    model = MMBalanceForClassification(MMBalanceConfig(modalities={"a": 4}, num_labels=2))
    trainer = MultimodalTrainer(model=model, args=args, train_dataset=DATA["train"])
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    assert trainer.args.hub_token == "hf_SECRETTOKEN123"  # the run itself still has it, for pushing
    for path in [tmp_path / "run" / "checkpoint-2" / "training_args.bin", tmp_path / "final" / "training_args.bin"]:
        raw = path.read_bytes()
        assert b"SECRETTOKEN" not in raw and str(tmp_path).encode() not in raw
        loaded = torch.load(io.BytesIO(raw), weights_only=False)
        assert type(loaded) is TrainingArguments and loaded.hub_token is None and loaded.output_dir == "run"


PUSH = """
import sys
from transformers import TrainingArguments
from hf_mmbalance import MMBalanceConfig, MMBalanceForClassification, MultimodalTrainer
from hf_mmbalance.data import make_synthetic_classification
data = make_synthetic_classification(num_samples=40, num_classes=2, modalities={"a": 4}, seed=0)
args = TrainingArguments(output_dir=sys.argv[1], push_to_hub=True, hub_model_id="user/secret-check",
                         hub_strategy="checkpoint", hub_token=sys.argv[2], max_steps=4, save_strategy="steps",
                         save_steps=2, report_to="none", use_cpu=True, disable_tqdm=True)
trainer = MultimodalTrainer(model=MMBalanceForClassification(MMBalanceConfig(modalities={"a": 4}, num_labels=2)),
                            args=args, train_dataset=data["train"])
trainer.train()
trainer.push_to_hub()
"""


def test_nothing_pushed_with_hub_strategy_checkpoint_holds_the_token_or_a_local_path(tmp_path):
    token = "hf_PUSHSECRET987"
    with LocalHubServer(tmp_path / "store") as hub:
        env = hub.client_env(tmp_path / "hf_home")
        result = subprocess.run([sys.executable, "-c", textwrap.dedent(PUSH), str(tmp_path / "run"), token],
                                env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        stored = hub.files("user/secret-check")
        assert any(name.endswith("training_args.bin") for name in stored), stored
        for name in stored:
            content = hub.read("user/secret-check", name)
            assert token.encode() not in content, name
            assert str(tmp_path).encode() not in content, name
