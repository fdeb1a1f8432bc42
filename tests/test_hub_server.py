"""End-to-end tests of the offline Hub server in ``tests/hub_server.py``.

The Hub client code runs in subprocesses because huggingface_hub reads ``HF_ENDPOINT`` / ``HF_HOME`` at import time.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

try:
    from hub_server import LocalHubServer
except ImportError:  # pragma: no cover - when tests/ is not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from hub_server import LocalHubServer


def _run(code: str, env: dict[str, str], timeout: float = 120) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"client failed (rc={proc.returncode})\nSTDOUT:\n{proc.stdout}\nSTDERR:\n{proc.stderr}"
    return proc.stdout


def _last_json(stdout: str):
    return json.loads(stdout.strip().splitlines()[-1])


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture
def hub(tmp_path):
    server = LocalHubServer(tmp_path / "hub_store").start()
    try:
        yield server
    finally:
        server.stop()


def _make_folder(folder: Path) -> None:
    import torch
    from safetensors.torch import save_file

    (folder / "nested").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"name": "tiny", "values": [1, 2, 3]}, indent=2))
    tensors = {"w": torch.arange(24, dtype=torch.float32).reshape(4, 6), "b": torch.ones(3)}
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "nested" / "notes.txt").write_text("hello hub\n")


UPLOAD = """
    import json, os
    from huggingface_hub import HfApi, constants
    assert constants.ENDPOINT == os.environ["HF_ENDPOINT"], constants.ENDPOINT
    api = HfApi()
    assert api.whoami()["name"] == "user"
    url = api.create_repo("user/tiny")
    api.create_repo("user/tiny", exist_ok=True)  # 409 + url => accepted
    info = api.upload_folder(repo_id="user/tiny", folder_path=os.environ["SRC"], commit_message="first upload")
    print(json.dumps({"url": str(url), "oid": info.oid, "files": sorted(api.list_repo_files("user/tiny"))}))
"""


@pytest.mark.parametrize("disable_xet", ["0", "1"], ids=["xet-pipeline", "legacy-commit"])
def test_upload_folder_then_snapshot_download(hub, tmp_path, disable_xet):
    src = tmp_path / "src"
    _make_folder(src)
    expected = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())

    # (a) create_repo + upload_folder => byte-identical files in store_dir
    env = hub.client_env(tmp_path / "home_up", SRC=str(src), HF_HUB_DISABLE_XET=disable_xet)
    out = _last_json(_run(UPLOAD, env))
    assert out["url"] == f"{hub.endpoint}/user/tiny"
    assert out["files"] == expected
    assert out["oid"] == hub.head("user/tiny")
    assert len(out["oid"]) == 40
    assert hub.files("user/tiny") == expected
    repo_dir = hub.store_dir / "user" / "tiny"
    for rel in expected:
        assert (repo_dir / rel).read_bytes() == (src / rel).read_bytes(), rel

    # (b) snapshot_download into a fresh HF_HOME => same bytes back
    env = hub.client_env(tmp_path / "home_down")
    out = _last_json(
        _run(
            """
            import json
            from huggingface_hub import snapshot_download, hf_hub_download
            path = snapshot_download("user/tiny")
            single = hf_hub_download("user/tiny", "nested/notes.txt")
            print(json.dumps({"path": path, "single": single}))
            """,
            env,
        )
    )
    snap = Path(out["path"])
    assert snap.parent.name == "snapshots" and snap.name == hub.head("user/tiny")
    got = sorted(p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file())
    assert got == expected
    for rel in expected:
        assert _sha(snap / rel) == _sha(src / rel), rel
    assert Path(out["single"]).read_text() == "hello hub\n"
    assert hub.unhandled == []


def test_push_to_hub_then_from_pretrained(hub, tmp_path):
    out_path = tmp_path / "outputs.json"
    push = f"""
        import json, torch
        from transformers import BertConfig, BertModel
        torch.manual_seed(0)
        cfg = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
        model = BertModel(cfg).eval()
        info = model.push_to_hub("user/tinybert")
        ids = torch.tensor([[1, 5, 7, 3, 2]])
        with torch.no_grad():
            out = model(input_ids=ids).last_hidden_state
        json.dump({{"out": out.tolist(), "oid": info.oid}}, open({str(out_path)!r}, "w"))
    """
    _run(push, hub.client_env(tmp_path / "home_push"))
    pushed = json.loads(out_path.read_text())
    files = hub.files("user/tinybert")
    assert "config.json" in files and "model.safetensors" in files and "README.md" in files
    assert pushed["oid"] == hub.head("user/tinybert")

    load = """
        import json, torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained("user/tinybert").eval()
        ids = torch.tensor([[1, 5, 7, 3, 2]])
        with torch.no_grad():
            out = model(input_ids=ids).last_hidden_state
        print(json.dumps({"cls": type(model).__name__, "out": out.tolist()}))
    """
    loaded = _last_json(_run(load, hub.client_env(tmp_path / "home_load")))
    assert loaded["cls"] == "BertModel"
    assert loaded["out"] == pushed["out"]  # bit-identical weights => identical outputs
    assert hub.unhandled == []


def test_second_commit_deletes_file(hub, tmp_path):
    src = tmp_path / "src"
    _make_folder(src)
    code = """
        import json, os
        from huggingface_hub import HfApi, CommitOperationAdd, CommitOperationDelete
        api = HfApi()
        api.create_repo("user/del")
        first = api.upload_folder(repo_id="user/del", folder_path=os.environ["SRC"]).oid
        second = api.create_commit(
            "user/del",
            operations=[
                CommitOperationDelete("nested/notes.txt"),
                CommitOperationAdd("extra.txt", b"extra"),
            ],
            commit_message="delete notes, add extra",
        ).oid
        third = api.delete_file("config.json", repo_id="user/del").oid
        try:
            api.delete_file("does-not-exist.txt", repo_id="user/del")
        except Exception as e:
            missing = type(e).__name__
        files = api.list_repo_files("user/del")
        print(json.dumps({"oids": [first, second, third], "files": files, "missing": missing}))
    """
    out = _last_json(_run(code, hub.client_env(tmp_path / "home", SRC=str(src))))
    first, second, third = out["oids"]
    assert len({first, second, third}) == 3
    assert hub.commits("user/del")[:3] == [third, second, first]
    assert out["files"] == ["extra.txt", "model.safetensors"]
    assert out["missing"] == "RemoteEntryNotFoundError"
    assert hub.files("user/del") == ["extra.txt", "model.safetensors"]
    assert not (hub.store_dir / "user" / "del" / "nested").exists()  # emptied folder removed from disk
    assert hub.read("user/del", "extra.txt") == b"extra"
    # history is kept: the file is still readable at the first commit
    assert hub.files("user/del", revision=first) == ["config.json", "model.safetensors", "nested/notes.txt"]

    # download of an old revision and 404s with the right error classes
    code = f"""
        import json
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
        old = open(hf_hub_download("user/del", "nested/notes.txt", revision={first!r})).read()
        errs = []
        for kwargs in [dict(repo_id="user/del", filename="nested/notes.txt"),
                       dict(repo_id="user/nope", filename="x"),
                       dict(repo_id="user/del", filename="x", revision="nobranch")]:
            try:
                hf_hub_download(**kwargs)
                errs.append(None)
            except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError) as e:
                errs.append(type(e).__name__)
        print(json.dumps({{"old": old, "errs": errs}}))
    """
    out = _last_json(_run(code, hub.client_env(tmp_path / "home2")))
    assert out["old"] == "hello hub\n"
    assert out["errs"] == ["RemoteEntryNotFoundError", "RepositoryNotFoundError", "RevisionNotFoundError"]
    assert hub.unhandled == []


def test_server_side_helpers_and_lifecycle(tmp_path):
    with LocalHubServer(tmp_path / "store", user="alice") as hub:
        assert hub.endpoint.startswith("http://127.0.0.1:")
        hub.create_repo("alice/seeded")
        sha0 = hub.head("alice/seeded")
        sha1 = hub.commit_files("alice/seeded", {"a/b.txt": b"x", "c.bin": bytes(range(256))})
        assert sha0 != sha1 and len(sha1) == 40
        assert hub.files("alice/seeded") == ["a/b.txt", "c.bin"]
        assert (hub.store_dir / "alice" / "seeded" / "c.bin").read_bytes() == bytes(range(256))
        hub.commit_files("alice/seeded", delete=["a/b.txt"])
        assert hub.files("alice/seeded") == ["c.bin"]
        port = hub.port
    import socket

    with socket.socket() as s:  # port released after stop()
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_lfs_datasets_push_to_hub_then_load_dataset(tmp_path):
    # datasets deletes its temporary parquet shards right after `preupload_lfs_files`, so they must go through LFS.
    with LocalHubServer(tmp_path / "store", lfs_patterns=["*.parquet"]) as hub:
        push = """
            from datasets import Dataset
            Dataset.from_dict({"x": list(range(10)), "y": ["a", "b"] * 5}).push_to_hub("user/ds")
        """
        env = hub.client_env(tmp_path / "home_push")
        assert env["HF_HUB_DISABLE_XET"] == "1"
        _run(push, env)
        files = hub.files("user/ds", repo_type="dataset")
        assert "README.md" in files
        parquet = [f for f in files if f.endswith(".parquet")]
        assert len(parquet) == 1
        assert hub.read("user/ds", parquet[0], repo_type="dataset")[:4] == b"PAR1"
        assert (hub.store_dir / ".datasets" / "user" / "ds" / parquet[0]).read_bytes()[:4] == b"PAR1"
        assert ("POST", "/datasets/user/ds.git/info/lfs/objects/batch") in hub.requests

        load = """
            import json
            from datasets import load_dataset
            from huggingface_hub import HfApi
            ds = load_dataset("user/ds", split="train")
            tree = HfApi().list_repo_tree("user/ds", repo_type="dataset", recursive=True)
            lfs = {f.path: f.lfs is not None for f in tree if hasattr(f, "lfs")}
            print(json.dumps({"x": list(ds["x"]), "y": list(ds["y"]), "lfs": lfs}))
        """
        out = _last_json(_run(load, hub.client_env(tmp_path / "home_load")))
        assert out["x"] == list(range(10)) and out["y"] == ["a", "b"] * 5
        assert out["lfs"] == {"README.md": False, parquet[0]: True}
        assert hub.unhandled == []
