"""`hf-mmbalance diagnose` / `diagnose_balance` (issue 17).

Synthetic data whose modality strengths are set by construction (`make_synthetic_classification`: modality `a`
with signal 1.0, `b` with 0.5): the report must name `b` as under-trained and `a` as dominant, with a positive gap of
the right size; the diagnosis' numbers are recomputed here independently from the stored weights (plain
`model.encode`, scikit-learn, Shapley by hand from Eq. 10). The CLI runs on the mfeat recipe with a 1-epoch budget,
bad input gets the train command's one-line errors, a rerun skips finished parts and a changed config is refused by
the part file's name.
"""

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from hf_mmbalance import MMBalanceForClassification, make_synthetic_classification, standardize
from hf_mmbalance.cli.diagnose import parse_diagnose_args
from hf_mmbalance.cli.main import main
from hf_mmbalance.diagnose import DiagnoseError, balance_report_section, diagnose_balance, read_diagnosis
from hf_mmbalance.hub.model_card import add_card_section

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "mfeat" / "diagnose.yaml"
VANILLA = ROOT / "recipes" / "mfeat" / "vanilla.yaml"
SIGNAL = {"a": 1.0, "b": 0.5}
COMMON = ["--num_train_epochs", "10", "--learning_rate", "0.05", "--optim", "sgd", "--unimodal_heads", "false",
          "--hidden_sizes", "32", "--feature_size", "16", "--use_cpu", "true", "--report_to", "none",
          "--disable_tqdm", "true", "--seed", "0"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("diagnose_data")
    data = make_synthetic_classification(num_samples=1000, signal_strength=SIGNAL, seed=0)
    data.save_to_disk(root / "ab")
    return str(root / "ab")


def diagnose(argv):
    data_args, model_args, training_args, config, sections = parse_diagnose_args([str(a) for a in argv])
    return diagnose_balance(data_args, model_args, training_args, config, sections, log=None)


@pytest.fixture(scope="module")
def quick(synthetic, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("quick")
    argv = ["--dataset_name", synthetic, "--output_dir", output_dir, *COMMON]
    return {"argv": argv, "output_dir": output_dir, "diagnosis": diagnose(argv)}


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ----- the verdict on data with a known weak modality -----
def test_report_names_the_weak_modality_with_the_gap_of_the_right_sign_and_size(quick):
    diagnosis = quick["diagnosis"]
    verdict = diagnosis["verdict"]
    gap_a = diagnosis["modalities"]["a"]["gap"]["test"]["mean"]
    gap_b = diagnosis["modalities"]["b"]["gap"]["test"]["mean"]
    assert verdict["under_trained"] == "b" and verdict["largest_gap_modality"] == "b"
    assert verdict["dominant"] == "a"
    # b (signal 0.5) learns less next to a (signal 1.0, separable): a clear positive gap, a's is ~0 (its probe ~1.0)
    assert 0.05 < gap_b < 0.3, gap_b
    assert abs(gap_a) < 0.03, gap_a
    assert verdict["gap"] == pytest.approx(gap_b) and gap_b > verdict["gap_noise"]
    assert diagnosis["modalities"]["a"]["shapley"]["test"]["mean"]["mean"] > 0.7
    text = " ".join(verdict["text"])
    assert f"b is under-trained in the joint model" in text and f"a gap of {gap_b:.3f}" in text
    assert "a dominates the fused prediction" in text


def _split_arrays(dataset, split, names):
    columns = dataset[split].with_format("numpy")[:]
    return {name: torch.tensor(columns[name]) for name in names}, np.asarray(columns["labels"])


def _probe(train_x, train_y, test_x, test_y):
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0, random_state=0))
    probe.fit(train_x.astype(np.float64), train_y)
    return float((probe.predict(test_x.astype(np.float64)) == test_y).mean())


def test_numbers_match_an_independent_computation_from_the_stored_weights(quick, synthetic):
    import datasets

    diagnosis, parts = quick["diagnosis"], Path(quick["output_dir"]) / "diagnose_parts"
    data = standardize(datasets.load_from_disk(synthetic), ["a", "b"])
    joint = MMBalanceForClassification.from_pretrained(parts / "joint-vanilla-seed0").eval()
    solo_b = MMBalanceForClassification.from_pretrained(parts / "solo-b-seed0").eval()
    (train, train_y), (test, test_y) = _split_arrays(data, "train", "ab"), _split_arrays(data, "test", "ab")
    with torch.no_grad():
        joint_train, joint_test = joint.encode(train), joint.encode(test)
        solo_train, solo_test = solo_b.encode({"b": train["b"]}), solo_b.encode({"b": test["b"]})
        fused_accuracy = float((joint(**test).logits.argmax(-1).numpy() == test_y).mean())
        solo_accuracy = float((solo_b(b=test["b"]).logits.argmax(-1).numpy() == test_y).mean())
    joint_probe = _probe(joint_train["b"].numpy(), train_y, joint_test["b"].numpy(), test_y)
    alone_probe = _probe(solo_train["b"].numpy(), train_y, solo_test["b"].numpy(), test_y)
    entry = diagnosis["modalities"]["b"]
    assert diagnosis["fused"]["test"]["accuracy"]["mean"] == pytest.approx(fused_accuracy, abs=1e-12)
    assert entry["alone"]["test"]["accuracy"]["mean"] == pytest.approx(solo_accuracy, abs=1e-12)
    assert entry["joint_probe"]["test"]["mean"] == pytest.approx(joint_probe, abs=1e-12)
    assert entry["alone_probe"]["test"]["mean"] == pytest.approx(alone_probe, abs=1e-12)
    assert entry["gap"]["test"]["mean"] == pytest.approx(alone_probe - joint_probe, abs=1e-12)

    # Shapley by hand, Eq. 10 (M = 2): V = fused probability of the pseudo-label, a missing modality = zero feature
    za, zb = joint_test["a"], joint_test["b"]
    with torch.no_grad():
        def value(a, b):
            return torch.softmax(joint.fusion({"a": a, "b": b}).logits, -1)

        full = value(za, zb)
        label = full.argmax(-1, keepdim=True)
        v = {key: p.gather(-1, label).squeeze(-1) for key, p in {
            "ab": full, "a": value(za, torch.zeros_like(zb)), "b": value(torch.zeros_like(za), zb),
            "": value(torch.zeros_like(za), torch.zeros_like(zb))}.items()}
    phi_a = 0.5 * ((v["ab"] - v["b"]) + (v["a"] - v[""]))
    phi_b = 0.5 * ((v["ab"] - v["a"]) + (v["b"] - v[""]))
    share_a = (phi_a.abs() / (phi_a.abs() + phi_b.abs())).double()
    assert diagnosis["modalities"]["a"]["shapley"]["test"]["mean"]["mean"] == pytest.approx(float(share_a.mean()), abs=1e-6)
    assert diagnosis["modalities"]["a"]["shapley"]["test"]["dominant_fraction"]["mean"] == pytest.approx(
        float((share_a > 0.5).double().mean()), abs=1e-9)
    assert sum(diagnosis["modalities"]["a"]["shapley"]["test"]["histogram"]["counts"]) == len(test_y)

    # rho over training: one mean per epoch of the per-step s_m / min_j s_j (Ada2I Eq. 17), so never below 1
    rho = {m: diagnosis["modalities"][m]["rho"]["curve"] for m in "ab"}
    assert [e for e, _ in rho["a"]] == [float(e) for e in range(1, 11)]
    assert all(r >= 1.0 - 1e-9 for m in "ab" for _, r in rho[m])
    assert diagnosis["modalities"]["a"]["rho"]["mean"] > diagnosis["modalities"]["b"]["rho"]["mean"]
    assert diagnosis["modalities"]["a"]["rho"]["mean"] == pytest.approx(np.mean([r for _, r in rho["a"]]))


def test_diagnosis_json_holds_every_field(quick):
    path = Path(quick["output_dir"]) / "diagnosis.json"
    stored = json.loads(path.read_text())
    assert {"task", "task_reason", "modality_names", "budget", "seeds", "epochs", "metric", "splits", "report_split",
            "split_sizes", "fused", "modalities", "bss", "best_epochs", "train_seconds", "config", "ranking", "verdict",
            "files"} <= set(stored)
    assert stored["modality_names"] == ["a", "b"] and stored["splits"] == ["validation", "test"]
    assert stored["split_sizes"] == {"train": 700, "validation": 100, "test": 200}
    for split in ("validation", "test"):
        assert set(stored["fused"][split]) == {"accuracy", "f1_macro"}
        for name in "ab":
            entry = stored["modalities"][name]
            assert set(entry) == {"alone", "alone_probe", "joint_probe", "gap", "unimodal_head", "shapley", "rho"}
            assert entry["unimodal_head"] is None  # unimodal_heads false
            assert set(entry["alone"][split]) == {"accuracy", "f1_macro"}
            assert {"mean", "dominant_fraction", "quantiles", "histogram"} <= set(entry["shapley"][split])
            for stat in (entry["alone_probe"][split], entry["joint_probe"][split], entry["gap"][split]):
                assert stat["n"] == 1 and math.isfinite(stat["mean"])
    assert set(stored["best_epochs"]) == {"solo-a-seed0", "solo-b-seed0", "joint-vanilla-seed0"}
    assert all(1 <= epoch <= 10 for epoch in stored["best_epochs"].values())
    bss = stored["bss"]
    assert bss["criterion"] == "feature_similarity-training_loss" and 0.0 <= bss["fraction_unbalanced"]["mean"] <= 1.0
    assert {"under_trained", "dominant", "gap", "gap_noise", "best_single", "fused_margin", "fused_beats_best_single",
            "text"} <= set(stored["verdict"])
    # the one-seed noise is the binomial sampling error of the two probe accuracies on the 200 test rows
    alone, joint = (stored["modalities"]["b"][k]["test"]["mean"] for k in ("alone_probe", "joint_probe"))
    assert stored["verdict"]["gap_noise"] == pytest.approx(1.96 * math.sqrt((alone * (1 - alone) + joint * (1 - joint)) / 200))
    markdown = (Path(quick["output_dir"]) / "diagnosis.md").read_text()
    assert "## Verdict" in markdown and "| b |" in markdown
    assert (Path(quick["output_dir"]) / "diagnosis.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_skips_finished_parts_and_a_changed_config_is_refused_by_name(quick, monkeypatch):
    import hf_mmbalance.diagnose.diagnosis as diagnosis_module

    def no_training(part, context):
        raise AssertionError(f"{part.name} was retrained")

    monkeypatch.setattr(diagnosis_module, "train_part", no_training)
    again = diagnose(quick["argv"])
    assert again["modalities"] == quick["diagnosis"]["modalities"] and again["fused"] == quick["diagnosis"]["fused"]
    changed = [*quick["argv"], "--learning_rate", "0.02"]
    with pytest.raises(DiagnoseError, match=r"diagnose_parts/solo-a-seed0\.json was computed with another "
                                            r"configuration \(training\.learning_rate: 0\.05 -> 0\.02\)"):
        diagnose(changed)


def test_interrupted_run_trains_only_the_missing_part(quick, tmp_path):
    import shutil

    import hf_mmbalance.diagnose.diagnosis as diagnosis_module

    output_dir = tmp_path / "partial"
    shutil.copytree(Path(quick["output_dir"]) / "diagnose_parts", output_dir / "diagnose_parts")
    (output_dir / "diagnose_parts" / "joint-vanilla-seed0.json").unlink()  # as if killed during the joint training
    trained = []
    original = diagnosis_module.train_part

    def counting(part, context):
        trained.append(part.name)
        return original(part, context)

    argv = [a if a != str(quick["output_dir"]) else str(output_dir) for a in map(str, quick["argv"])]
    diagnosis_module.train_part = counting
    try:
        result = diagnose(argv)
    finally:
        diagnosis_module.train_part = original
    assert trained == ["joint-vanilla-seed0"]
    assert result["modalities"]["b"]["joint_probe"] == quick["diagnosis"]["modalities"]["b"]["joint_probe"]


# ----- full budget: the method ranking -----
def test_full_budget_ranks_the_methods_with_paired_noise(synthetic, tmp_path):
    from scipy.stats import t

    argv = ["--dataset_name", synthetic, "--output_dir", tmp_path / "full", *COMMON, "--budget", "full",
            "--num_seeds", "2", "--diagnose_epochs", "2", "--diagnose_methods", "modulation", "bss"]
    diagnosis = diagnose(argv)
    ranking = diagnosis["ranking"]
    assert diagnosis["seeds"] == [0, 1] and ranking["weak_modality"] == diagnosis["verdict"]["largest_gap_modality"]
    rows = {row["method"]: row for row in ranking["rows"]}
    assert set(rows) == {"vanilla", "modulation", "bss"}
    means = {m: np.mean(rows[m]["validation"]["values"]) for m in rows}
    assert ranking["by_validation"] == sorted(rows, key=lambda m: -means[m])
    assert ranking["by_weak_gap"] == sorted(rows, key=lambda m: rows[m]["weak_gap"]["mean"])
    parts = Path(tmp_path / "full" / "diagnose_parts")
    for method in ("modulation", "bss"):
        stored = [json.loads((parts / f"joint-{method}-seed{s}.json").read_text())["record"] for s in (0, 1)]
        assert rows[method]["validation"]["values"] == [r["metrics"]["validation"]["accuracy"] for r in stored]
        differences = np.subtract(rows[method]["validation"]["values"], rows["vanilla"]["validation"]["values"])
        assert rows[method]["vs_vanilla_validation"] == pytest.approx(differences.mean())
        half = t.ppf(0.975, 1) * np.std(differences, ddof=1) / math.sqrt(2)
        assert rows[method]["vs_vanilla_validation_noise"] == pytest.approx(half)
        assert rows[method]["vs_vanilla_validation_is_noise"] == (abs(differences.mean()) <= half)
    assert "Methods ranked on the same budget (2 seeds)" in diagnosis["verdict"]["text"][-1]


# ----- the command line -----
def test_cli_runs_on_the_mfeat_recipe_with_a_tiny_budget(capsys, tmp_path):
    code, out, err = run(capsys, "diagnose", "--config", RECIPE, "--views", "fac", "kar", "--diagnose_epochs", "1",
                         "--output_dir", tmp_path, "--disable_tqdm", "true")
    assert code == 0, err
    assert "budget quick: 3 trainings of 1 epochs (1 seed)" in out
    assert re.search(r"\[3/3\] joint-vanilla-seed0: trained in [\d.]+s; best epoch 1, validation accuracy 0\.\d{4}", out)
    stored = read_diagnosis(str(tmp_path))
    assert stored["modality_names"] == ["fac", "kar"] and stored["epochs"] == 1.0
    assert stored["split_sizes"] == {"train": 1400, "validation": 200, "test": 400}
    assert all(f"- {sentence}" in out for sentence in stored["verdict"]["text"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["diagnose_parts", "diagnosis.json", "diagnosis.md", "diagnosis.png"]
    code, out, _ = run(capsys, "diagnose", "--config", RECIPE, "--views", "fac", "kar", "--diagnose_epochs", "1",
                       "--output_dir", tmp_path, "--disable_tqdm", "true")
    assert code == 0 and "3 already done" in out and out.count("stored, skipped") == 3


@pytest.mark.parametrize("flags", [
    ["--views", "fac", "nope"],
    ["--bogus_field", "1"],
    ["--modulation.alpah", "0.2"],
    ["--dataset_name", "no_such_dataset"],
    ["--fusion", "nope"],
])
def test_bad_input_gets_the_train_commands_errors(capsys, tmp_path, flags):
    train = run(capsys, "train", "--config", VANILLA, "--output_dir", tmp_path / "t", *flags)
    diagnose_result = run(capsys, "diagnose", "--config", VANILLA, "--output_dir", tmp_path / "d", *flags)
    assert train[0] == diagnose_result[0] == 2
    train_line, = [line for line in train[2].splitlines() if line.strip()]
    diagnose_line, = [line for line in diagnose_result[2].splitlines() if line.strip()]
    assert diagnose_line == train_line.replace("train --help", "train --help") and diagnose_line.startswith("hf-mmbalance: ")
    assert not (tmp_path / "d" / "diagnose_parts").exists()


@pytest.mark.parametrize("flags, message", [
    (["--budget", "huge"], r"budget='huge' is unknown; expected one of \['quick', 'full'\]"),
    (["--budget", "full", "--diagnose_methods", "ulgm"], r"diagnose_methods: ulgm generates unimodal labels for a "
                                                           r"regression task .* this dataset's task is classification"),
    (["--diagnose_methods", "bss"], r"diagnose_methods compares balancing methods, which only --budget full runs"),
    (["--views", "fac"], r"diagnose compares modalities and needs at least 2; the recipe has \['fac'\]"),
    (["--bss_criterion", "nope"], r"bss_criterion: criterion='nope' is unknown"),
])
def test_bad_diagnose_options_are_one_line_errors(capsys, tmp_path, flags, message):
    code, _, err = run(capsys, "diagnose", "--config", RECIPE, "--output_dir", tmp_path, *flags)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("hf-mmbalance: "), err
    assert re.search(message, lines[0]), lines[0]


def test_help_lists_the_diagnose_options(capsys):
    code, out, _ = run(capsys, "diagnose", "--help")
    assert code == 0 and "--budget str  (default: 'quick')" in out and "--diagnose_epochs" in out
    code, out, _ = run(capsys, "--help")
    assert "  diagnose " in out


# ----- the model card's Balance report -----
def test_balance_report_section_goes_into_a_model_card(quick, tmp_path):
    diagnosis = read_diagnosis(os.path.join(quick["output_dir"], "diagnosis.json"))
    section = balance_report_section(diagnosis)
    assert section.startswith("## Balance report") and diagnosis["verdict"]["text"][0] in section
    card = tmp_path / "README.md"
    card.write_text("---\nlibrary_name: transformers\n---\n# m\n\n## Evaluation\n\nx\n\n## How to load\n\ny\n")
    add_card_section(str(card), section)
    text = card.read_text()
    assert text.index("## Evaluation") < text.index("## Balance report") < text.index("## How to load")
    assert "library_name: transformers" in text  # the metadata block is kept


def test_train_with_a_balance_report_writes_it_into_its_model_card(quick, capsys, tmp_path):
    code, _, err = run(capsys, "train", "--config", VANILLA, "--output_dir", tmp_path, "--max_steps", "2",
                       "--eval_strategy", "no", "--balance_report", quick["output_dir"])
    assert code == 0, err
    card = (tmp_path / "README.md").read_text()
    verdict = quick["diagnosis"]["verdict"]["text"]
    assert "## Balance report" in card and all(sentence in card for sentence in verdict)
    assert card.index("## Evaluation") < card.index("## Balance report") < card.index("## How to load")


def test_train_refuses_a_missing_balance_report_before_training(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--config", VANILLA, "--output_dir", tmp_path, "--balance_report",
                       tmp_path / "nope.json")
    assert code == 2 and re.fullmatch(r"hf-mmbalance: balance report .*nope\.json: no such file .*\n", err), err
    assert not (tmp_path / "README.md").exists()


def test_regression_reports_mae_pearson_probes_and_efficient_shapley_values(tmp_path):
    argv = ["--dataset_name", "synthetic_regression", "--num_samples", "300", "--output_dir", tmp_path,
            "--num_train_epochs", "2", "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true", "--seed", "0"]
    diagnosis = diagnose(argv)
    names = diagnosis["modality_names"]
    assert diagnosis["task"] == "regression" and diagnosis["metric"] == {
        "name": "mae", "higher_is_better": False, "probe": "pearson", "keys": ["mae", "pearson"]}
    assert all(diagnosis["modalities"][m]["rho"] is None for m in names)  # modulation scores are class probabilities
    assert "lower mae is better" in diagnosis["verdict"]["text"][2]
    # Shapley efficiency (Eq. 9): sum_m phi_m = V(all) - V(none), V = the fused prediction, from the stored weights
    from hf_mmbalance import MMBalanceForRegression

    model = MMBalanceForRegression.from_pretrained(tmp_path / "diagnose_parts" / "joint-vanilla-seed0").eval()
    test = standardize(_regression_data(), names)["test"].with_format("numpy")[:]
    with torch.no_grad():
        features = model.encode({m: torch.tensor(test[m]) for m in names})
        full = model.fusion(features).logits.squeeze(-1)
        empty = model.fusion({m: torch.zeros_like(z) for m, z in features.items()}).logits.squeeze(-1)
    total = sum(diagnosis["modalities"][m]["shapley"]["test"]["mean_phi"]["mean"] for m in names)
    assert total == pytest.approx(float((full - empty).double().mean()), abs=1e-5)
    assert diagnosis["fused"]["test"]["mae"]["mean"] == pytest.approx(
        float(np.abs(model(**{m: torch.tensor(test[m]) for m in names}).logits.squeeze(-1).detach().numpy()
                     - test["labels"]).mean()), abs=1e-5)


def _regression_data():
    from hf_mmbalance import make_synthetic_regression
    from hf_mmbalance.cli.train import with_sample_ids

    return with_sample_ids(make_synthetic_regression(num_samples=300, seed=0, disagreement=0.5))

