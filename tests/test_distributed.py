"""A real 2-process `accelerate launch` on CPU (gloo) against a 1-process run with the same global batch."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).parent / "distributed" / "trainer_script.py"


def launch_two_processes(script: Path, *script_args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`accelerate launch` that really starts 2 CPU processes (see HF_NOTES.md: `--cpu` starts only one)."""
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or shutil.which("accelerate")
    command = [
        accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
        str(script), *script_args,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    # A session of its own, so a timeout kills the ranks too and leaves no process behind.
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"2-process run timed out after {timeout}s\n{stdout[-2000:]}\n{stderr[-4000:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def run_one_process(script: Path, *script_args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, str(script), *script_args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    two = tmp_path_factory.mktemp("ddp2")
    one = tmp_path_factory.mktemp("ddp1")
    result = launch_two_processes(SCRIPT, str(two), "8")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    result = run_one_process(SCRIPT, str(one), "16")
    assert result.returncode == 0, result.stderr[-4000:]
    return two, one


def test_two_ranks_end_with_identical_parameters(runs):
    two, _ = runs
    rank0 = load_file(two / "params_rank0.safetensors")
    rank1 = load_file(two / "params_rank1.safetensors")
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name


def test_two_processes_follow_the_one_process_loss_curve_and_weights(runs):
    two, one = runs
    report2 = json.loads((two / "report_rank0.json").read_text())
    report1 = json.loads((one / "report_rank0.json").read_text())
    assert report2["world_size"] == 2 and report1["world_size"] == 1
    assert len(report2["losses"]) == len(report1["losses"]) == 14  # 112 train rows / 16 per step * 2 epochs
    torch.testing.assert_close(torch.tensor(report2["losses"]), torch.tensor(report1["losses"]), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.tensor(report2["loss_fused"]), torch.tensor(report1["loss_fused"]), atol=1e-5, rtol=1e-4)
    params2 = load_file(two / "params_rank0.safetensors")
    params1 = load_file(one / "params_rank0.safetensors")
    for name in params1:
        torch.testing.assert_close(params2[name], params1[name], atol=1e-5, rtol=1e-4)


def test_ranks_see_disjoint_halves_of_the_one_process_batches(runs):
    two, one = runs
    seen0 = json.loads((two / "report_rank0.json").read_text())["seen"]
    seen1 = json.loads((two / "report_rank1.json").read_text())["seen"]
    single = json.loads((one / "report_rank0.json").read_text())["seen"]
    assert len(seen0) == len(seen1) == len(single) // 2
    for step in range(len(single) // 16):
        global_batch = single[16 * step : 16 * (step + 1)]
        local = seen0[8 * step : 8 * (step + 1)] + seen1[8 * step : 8 * (step + 1)]
        assert sorted(local) == sorted(global_batch)
        assert not set(seen0[8 * step : 8 * (step + 1)]) & set(seen1[8 * step : 8 * (step + 1)])


def test_gradient_modulation_keeps_both_ranks_identical_and_matches_one_process(runs):
    """Scores all-reduced over ranks and summed over 2 micro-batches, GE noise identical on every rank."""
    two, one = runs
    rank0 = load_file(two / "modulation_params_rank0.safetensors")
    rank1 = load_file(two / "modulation_params_rank1.safetensors")
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    report2 = json.loads((two / "modulation_report_rank0.json").read_text())
    report1 = json.loads((one / "modulation_report_rank0.json").read_text())
    assert report2 == json.loads((two / "modulation_report_rank1.json").read_text())
    assert set(report2) >= {"modulation/rho_a", "modulation/k_b"} and len(report2["modulation/rho_a"]) == 14  # 112 rows / 16 per step * 2 epochs
    assert any(k < 1 for k in report2["modulation/k_a"] + report2["modulation/k_b"])  # modulation was active
    for key in ("losses", "modulation/rho_a", "modulation/rho_b", "modulation/k_a", "modulation/k_b"):
        torch.testing.assert_close(torch.tensor(report2[key]), torch.tensor(report1[key]), atol=1e-5, rtol=1e-4)
    params1 = load_file(one / "modulation_params_rank0.safetensors")
    for name in params1:
        torch.testing.assert_close(rank0[name], params1[name], atol=1e-4, rtol=1e-3)


def test_bss_orders_are_identical_on_both_ranks_and_sharded_disjointly(runs):
    two, one = runs
    reports = [json.loads((two / f"bss_report_rank{rank}.json").read_text()) for rank in (0, 1)]
    assert reports[0]["orders"] == reports[1]["orders"] and sorted(reports[0]["orders"]) == ["1", "2", "3"]
    order = [i for epoch in ("1", "2", "3") for i in reports[0]["orders"][epoch]]
    seen0, seen1 = reports[0]["seen"], reports[1]["seen"]
    assert len(seen0) == len(seen1) == len(order) // 2  # 112 rows * 3 epochs, 8 per rank per batch
    for batch in range(len(order) // 16):  # each global batch of 16 is dealt as two disjoint halves
        assert seen0[batch * 8:(batch + 1) * 8] + seen1[batch * 8:(batch + 1) * 8] == order[batch * 16:(batch + 1) * 16]
    # the 1-process run draws the same orders (same model, same scores, same seed)
    assert json.loads((one / "bss_report_rank0.json").read_text())["orders"] == reports[0]["orders"]


def test_bss_resumed_mid_pass_under_two_processes_continues_the_same_order_and_weights(runs):
    two, _ = runs
    for rank in (0, 1):
        full = json.loads((two / f"bss_report_rank{rank}.json").read_text())
        resumed = json.loads((two / f"bss_resumed_report_rank{rank}.json").read_text())
        assert resumed["seen"] == full["seen"][9 * 8:]  # step 9 onwards, in epoch 2: not epoch 1's order replayed
        full_params = load_file(two / f"bss_params_rank{rank}.safetensors")
        resumed_params = load_file(two / f"bss_resumed_params_rank{rank}.safetensors")
        for name in full_params:
            torch.testing.assert_close(resumed_params[name], full_params[name], atol=1e-6, rtol=1e-5)


def test_active_learning_selects_identical_rows_on_both_ranks(runs):
    two, one = runs
    rank0 = json.loads((two / "active_rank0.json").read_text())
    rank1 = json.loads((two / "active_rank1.json").read_text())
    assert rank0 == rank1 and len(rank0["acquired"]) == 3
    acquired = [i for round_ in rank0["acquired"] for i in round_]
    assert len(acquired) == len(set(acquired)) == 24
    state = json.loads((two / "active" / "active_learning_state.json").read_text())
    assert [r["acquired"] for r in state["rounds"]] == rank0["acquired"]


@pytest.mark.parametrize("variant", ["selfmm", "sugrm"])
def test_ulgm_banks_are_identical_on_both_ranks_and_match_one_process(runs, variant):
    two, one = runs
    rank0 = load_file(two / f"ulgm_{variant}_banks_rank0.safetensors")
    rank1 = load_file(two / f"ulgm_{variant}_banks_rank1.safetensors")
    single = load_file(one / f"ulgm_{variant}_banks_rank0.safetensors")
    assert set(rank0) == set(single) and {"labels.a", "features.fused"} <= set(rank0)
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
        torch.testing.assert_close(rank0[key], single[key], atol=1e-4, rtol=1e-3)
    assert not torch.equal(rank0["labels.a"], rank0["labels.fused"])  # labels were generated after epoch 1
