"""Real 2-process FSDP2 (accelerate's FSDP plugin, full shard, on CPU/gloo through `tests/distributed/cpu_fsdp.py`)
against 2-process DDP with the same global batch, for every balancing method: tests/distributed/fsdp_script.py."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_distributed import launch_two_processes

SCRIPT = Path(__file__).parent / "distributed" / "fsdp_script.py"
ATOL = 1e-6  # float tolerance: the sharded and replicated runs reduce the same gradients in another order


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = {}
    for engine in ("fsdp", "ddp"):
        folder = tmp_path_factory.mktemp(engine)
        result = launch_two_processes(SCRIPT, str(folder), engine)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
        out[engine] = folder
    return out["fsdp"], out["ddp"]


def params(folder: Path, name: str, rank: int = 0) -> dict[str, torch.Tensor]:
    return load_file(folder / f"{name}_params_rank{rank}.safetensors")


def report(folder: Path, name: str, rank: int = 0):
    return json.loads((folder / f"{name}_rank{rank}.json").read_text())


def assert_same(a: dict, b: dict, atol: float = ATOL) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=key)


@pytest.mark.parametrize("run", ["mod_pre_optimizer_step", "mod_backward_hook", "mod_clipped", "mod_noise", "bss", "ulgm",
                                 "combo"])
def test_fsdp_ends_with_the_ddp_parameters(runs, run):
    fsdp, ddp = runs
    assert_same(params(fsdp, run), params(ddp, run))
    assert_same(params(fsdp, run, 1), params(fsdp, run))


@pytest.mark.parametrize("apply", ["pre_optimizer_step", "backward_hook"])
def test_both_apply_modes_modulate_under_fsdp(runs, apply):
    fsdp, ddp = runs
    sharded, replicated = report(fsdp, f"mod_{apply}"), report(ddp, f"mod_{apply}")
    assert (sharded["engine"], sharded["applied"]) == ("fsdp", apply)
    assert replicated["engine"] == "ddp"
    assert min(sharded["k"].values()) < 1  # modulation was active
    assert sharded["k"] == pytest.approx(replicated["k"], abs=1e-6)
    # with the same k the two modes train the same model (no accumulation, clipping not binding here)
    assert_same(params(fsdp, "mod_pre_optimizer_step"), params(fsdp, "mod_backward_hook"), atol=1e-6)


def test_the_clipping_that_carries_k_takes_the_full_gradient_norm_under_fsdp(runs):
    fsdp, ddp = runs
    sharded, replicated = report(fsdp, "mod_clipped"), report(ddp, "mod_clipped")
    assert min(sharded) > 0.05  # binding at every logged step, so the norm sets the update
    assert sharded == pytest.approx(replicated, rel=1e-5)
    assert report(fsdp, "mod_clipped", 1) == pytest.approx(sharded, rel=1e-6)


def test_ge_noise_std_of_a_sharded_gradient_is_the_full_tensors(runs):
    fsdp, _ = runs
    records = report(fsdp, "mod_noise_std")
    assert len(records) == 3 and all(all(r["sharded"]) for r in records)  # the gradients really were DTensor shards
    for record in records:
        assert record["method"] == pytest.approx(record["full"], rel=1e-6)
    assert records == report(fsdp, "mod_noise_std", 1)


def test_bss_orders_and_batches_match_ddp(runs):
    fsdp, ddp = runs
    sharded = [report(fsdp, "bss", rank) for rank in (0, 1)]
    assert sharded[0]["orders"] == sharded[1]["orders"] == report(ddp, "bss")["orders"]
    assert sorted(sharded[0]["orders"]) == ["1", "2", "3"]
    for rank in (0, 1):
        assert sharded[rank]["seen"] == report(ddp, "bss", rank)["seen"]


def test_ulgm_banks_match_ddp_on_both_ranks(runs):
    fsdp, ddp = runs
    banks = load_file(fsdp / "ulgm_banks_rank0.safetensors")
    assert {"labels.a", "features.fused"} <= set(banks)
    assert_same(banks, load_file(fsdp / "ulgm_banks_rank1.safetensors"), atol=0)
    assert_same(banks, load_file(ddp / "ulgm_banks_rank0.safetensors"))
    assert not torch.equal(banks["labels.a"], banks["labels.fused"])  # labels were generated


def test_bmmal_acquires_what_ddp_acquires(runs):
    fsdp, ddp = runs
    sharded = report(fsdp, "active")
    assert sharded == report(fsdp, "active", 1)
    assert len(sharded["acquired"]) == 2 and sharded["acquired"] == report(ddp, "active")["acquired"]
    assert sharded["phi"][1] == pytest.approx(report(ddp, "active")["phi"][1], abs=1e-6)


def test_a_resume_under_fsdp_gives_the_uninterrupted_result(runs):
    fsdp, _ = runs
    files = report(fsdp, "checkpoint_files")
    # sharded model and optimizer state (torch.distributed.checkpoint folders) plus every method's state
    assert {"pytorch_model_fsdp_0", "optimizer_0", "bss_state.json", "gradient_modulation.json"} <= set(files)
    for rank in (0, 1):
        assert_same(params(fsdp, "combo_resumed", rank), params(fsdp, "combo", rank))  # modulation (noise) + BSS, AdamW
        assert_same(params(fsdp, "ulgm_resumed", rank), params(fsdp, "ulgm", rank))
    assert_same(load_file(fsdp / "ulgm_resumed_banks_rank0.safetensors"), load_file(fsdp / "ulgm_banks_rank0.safetensors"))
