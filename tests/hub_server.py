"""A tiny, offline, Hugging Face Hub-API-compatible HTTP server for tests.

Standard library only (``http.server`` + ``threading``).  It implements the subset of the Hub API that
``huggingface_hub`` (checked against 2.4.0) and ``transformers`` actually call for

* ``HfApi.create_repo`` / ``delete_repo`` / ``create_branch`` / ``list_repo_refs`` / ``list_repo_commits``,
* ``HfApi.upload_folder`` / ``upload_file`` / ``create_commit`` / ``delete_file`` / ``PreTrainedModel.push_to_hub``
  (both the ``hf_xet`` "pipelined" upload path and the legacy ``create_commit`` path),
* ``HfApi.repo_info`` / ``model_info`` / ``list_repo_files`` / ``list_repo_tree`` / ``get_paths_info`` / ``whoami``,
* ``hf_hub_download`` / ``snapshot_download`` / ``from_pretrained``,

and it only ever listens on ``127.0.0.1`` (port chosen by the OS).  By default every file is uploaded as a *regular*
(non-LFS, non-Xet) file: the ``preupload`` endpoint answers ``uploadMode: "regular"`` for all of them (huggingface_hub
never forces LFS on its own: the server decides), so no LFS/Xet storage is needed and downloads are plain HTTP (no
``X-Xet-Hash`` header is ever sent).  Optionally (``lfs_patterns=`` / ``lfs_min_size=``) chosen files are declared
LFS and go through the git-LFS batch API ("basic" transfer, served here too); that path needs
``HF_HUB_DISABLE_XET=1`` in the client (``client_env()`` then sets it) because a Xet CAS server is not emulated.
``datasets.Dataset.push_to_hub`` needs it (``lfs_patterns=["*.parquet"]``).

Usage in a test
---------------
``huggingface_hub`` reads ``HF_ENDPOINT`` (``constants.ENDPOINT`` and the resolve-URL template), ``HF_HOME`` /
the cache paths and ``HF_HUB_DISABLE_*`` flags **once, at import time**.  Setting them after ``huggingface_hub`` (or
``transformers``) has been imported in the test process has no effect, so run the client code in a subprocess::

    import subprocess, sys
    from hub_server import LocalHubServer

    def test_roundtrip(tmp_path):
        with LocalHubServer(tmp_path / "hub") as hub:          # or: hub = LocalHubServer(...).start(); hub.stop()
            env = hub.client_env(tmp_path / "hf_home")         # HF_ENDPOINT, HF_TOKEN=hf_dummy, HF_HOME, ...
            code = "from huggingface_hub import HfApi; HfApi().create_repo('user/tiny')"
            subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
            assert hub.files("user/tiny") == []

``client_env()`` returns a copy of ``os.environ`` with ``HF_ENDPOINT=<endpoint>``, ``HF_TOKEN=hf_dummy``,
``HF_HOME=<hf_home>``, ``HF_HUB_DISABLE_TELEMETRY=1``, ``HF_HUB_DISABLE_PROGRESS_BARS=1``, ``NO_PROXY`` covering
127.0.0.1, and the offline / cache-location / staging variables that would override them removed.  Use a fresh
``hf_home`` to force a real download in the reading process.

Storage
-------
The head of each repo's ``main`` branch is mirrored on disk as plain files:
``store_dir/<namespace>/<repo_name>/<path>`` for models, and ``store_dir/.datasets/...``, ``store_dir/.spaces/...``,
``store_dir/.kernels/...`` for the other repo types.  ``LocalHubServer.files(repo_id)`` lists them (sorted posix
paths) and ``read(repo_id, path)`` returns bytes.  The full history (commits, other branches, ``refs/pr/N``) is kept
in memory, content-addressed by git blob sha1.  A new repo starts with one empty commit (no ``.gitattributes``).
Every commit gets a fresh 40-hex sha.  ``create_repo`` on an existing repo answers ``409`` with the repo ``url`` in
the body, exactly like the Hub: ``exist_ok=True`` succeeds, ``exist_ok=False`` raises.  The token is not checked
(any ``Authorization`` header, or none, is accepted); ``whoami`` reports the user given as ``user=`` ("user").

Repo ids must have a namespace ("user/tiny"); ``create_repo("tiny")`` creates ``"<user>/tiny"`` like the Hub does.
Requests the server does not understand are answered 404 and recorded in ``LocalHubServer.unhandled`` (every
request is recorded in ``LocalHubServer.requests`` as ``(method, path)``), which is handy to assert on in tests.
"""

from __future__ import annotations

import base64
import datetime as _dt
import fnmatch
import gzip
import hashlib
import json
import os
import re
import shutil
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Mapping
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["LocalHubServer", "HubError"]

_REPO_TYPES_PLURAL = {"models": "model", "datasets": "dataset", "spaces": "space", "kernels": "kernel"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/", "kernel": "kernels/"}
_STORE_PREFIX = {"model": "", "dataset": ".datasets", "space": ".spaces", "kernel": ".kernels"}
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_PR_RE = re.compile(r"^refs/pr/(\d+)$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _git_blob_sha1(data: bytes) -> str:
    """Git blob oid, as the Hub reports it for regular files (and as huggingface_hub computes `_local_oid`)."""
    h = hashlib.sha1()
    h.update(b"blob %d\0" % len(data))
    h.update(data)
    return h.hexdigest()


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class HubError(Exception):
    """An error answered to the client as JSON ``{"error": message}`` with an optional ``X-Error-Code``."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})


@dataclass
class _Commit:
    sha: str
    parents: list[str]
    tree: dict[str, str]  # path -> blob oid (git sha1 of the content)
    title: str
    message: str
    date: str
    lfs: frozenset[str] = frozenset()  # paths committed as LFS files ("lfsFile")


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    refs: dict[str, str] = field(default_factory=dict)  # "main", other branches, "refs/pr/N" -> commit sha
    commits: dict[str, _Commit] = field(default_factory=dict)
    nb_prs: int = 0


class LocalHubServer:
    """In-process fake of the Hugging Face Hub HTTP API, bound to 127.0.0.1 on an OS-chosen port.

    Args:
        store_dir: where repo files are mirrored (``store_dir/<namespace>/<repo_name>/<path>``). A temporary
            directory (removed by ``stop()``) is used when omitted.
        user: the user name answered by ``whoami`` and used as default namespace.
        lfs_patterns: fnmatch patterns (matched against the path in repo and its basename, e.g. ``"*.parquet"``)
            of files the ``preupload`` endpoint declares as LFS; ``lfs_min_size``: same for files of at least this
            many bytes. Default: none, every file is "regular". LFS files go through the LFS batch API ("basic"
            transfer), which huggingface_hub only uses when Xet is disabled, so ``client_env()`` then sets
            ``HF_HUB_DISABLE_XET=1``. Needed e.g. for ``datasets.Dataset.push_to_hub``, which deletes its temporary
            parquet shards right after ``preupload_lfs_files`` (so they must be uploaded as LFS, not inlined in the
            commit).
    """

    def __init__(
        self,
        store_dir: str | os.PathLike | None = None,
        *,
        user: str = "user",
        lfs_patterns: Iterable[str] = (),
        lfs_min_size: int | None = None,
    ):
        self._own_store = store_dir is None
        if store_dir is None:
            import tempfile

            store_dir = tempfile.mkdtemp(prefix="local_hub_")
        self.store_dir = Path(store_dir).resolve()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.user = user
        self.lfs_patterns = tuple(lfs_patterns)
        self.lfs_min_size = lfs_min_size
        self.requests: list[tuple[str, str]] = []
        self.unhandled: list[tuple[str, str]] = []
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._blobs: dict[str, bytes] = {}
        self._sha256_to_oid: dict[str, str] = {}
        self._lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._counter = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "LocalHubServer":
        if self._httpd is not None:
            return self
        server = self

        class _Handler(_HubRequestHandler):
            hub = server

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="local-hub-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._own_store:
            shutil.rmtree(self.store_dir, ignore_errors=True)

    def __enter__(self) -> "LocalHubServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("LocalHubServer is not started")
        return self._httpd.server_address[1]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client_env(
        self,
        hf_home: str | os.PathLike,
        *,
        token: str = "hf_dummy",
        base: Mapping[str, str] | None = None,
        **extra: str,
    ) -> dict[str, str]:
        """Environment for a client subprocess talking to this server (see the module docstring)."""
        env = dict(os.environ if base is None else base)
        for var in (
            "HF_HUB_OFFLINE",
            "TRANSFORMERS_OFFLINE",
            "HF_DATASETS_OFFLINE",
            "HF_HUB_CACHE",
            "HUGGINGFACE_HUB_CACHE",
            "HF_XET_CACHE",
            "TRANSFORMERS_CACHE",
            "HF_DATASETS_CACHE",
            "HF_TOKEN_PATH",
            "HUGGING_FACE_HUB_TOKEN",
            "HUGGINGFACE_CO_STAGING",
            "HF_HUB_ENABLE_HF_TRANSFER",
        ):
            env.pop(var, None)
        no_proxy = ",".join(x for x in ("127.0.0.1", "localhost", env.get("NO_PROXY", "")) if x)
        env.update(
            {
                "HF_ENDPOINT": self.endpoint,
                "HF_TOKEN": token,
                "HF_HOME": str(hf_home),
                "HF_HUB_DISABLE_TELEMETRY": "1",
                "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                "NO_PROXY": no_proxy,
                "no_proxy": no_proxy,
            }
        )
        if self.lfs_patterns or self.lfs_min_size is not None:
            env["HF_HUB_DISABLE_XET"] = "1"  # LFS uploads must use the LFS batch API, not the Xet protocol
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def upload_mode(self, path: str, size: int) -> str:
        """"lfs" or "regular", as answered by the preupload endpoint."""
        if size <= 0:
            return "regular"
        if self.lfs_min_size is not None and size >= self.lfs_min_size:
            return "lfs"
        name = PurePosixPath(path).name
        if any(fnmatch.fnmatchcase(path, pat) or fnmatch.fnmatchcase(name, pat) for pat in self.lfs_patterns):
            return "lfs"
        return "regular"

    # ------------------------------------------------------------------ test helpers (server side)

    def repo_dir(self, repo_id: str, repo_type: str = "model") -> Path:
        """Directory mirroring the head of ``main`` of the repo."""
        ns, name = self._split_repo_id(repo_id)
        prefix = _STORE_PREFIX[repo_type]
        base = self.store_dir / prefix if prefix else self.store_dir
        return base / ns / name

    def files(self, repo_id: str, repo_type: str = "model", revision: str | None = None) -> list[str]:
        """Sorted posix paths of the files of a repo: stored on disk for ``main`` (default), else from history."""
        if revision is None:
            root = self.repo_dir(repo_id, repo_type)
            if not root.is_dir():
                raise KeyError(f"unknown {repo_type} repo {repo_id!r}")
            return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            return sorted(self._resolve(repo, revision).tree)

    def read(self, repo_id: str, path: str, repo_type: str = "model", revision: str | None = None) -> bytes:
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            commit = self._resolve(repo, revision or "main")
            if path not in commit.tree:
                raise KeyError(path)
            return self._blobs[commit.tree[path]]

    def head(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> str:
        """Commit sha a revision (default ``main``) points to."""
        with self._lock:
            return self._resolve(self._get_repo(repo_type, repo_id), revision).sha

    def commits(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> list[str]:
        """Commit shas reachable from ``revision``, newest first (first-parent history)."""
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            out, commit = [], self._resolve(repo, revision)
            while True:
                out.append(commit.sha)
                if not commit.parents:
                    return out
                commit = repo.commits[commit.parents[0]]

    def create_repo(self, repo_id: str, repo_type: str = "model", private: bool = False, exist_ok: bool = True) -> str:
        """Create a repo server-side (seeding); returns its id."""
        with self._lock:
            key = (repo_type, repo_id)
            if key in self._repos:
                if not exist_ok:
                    raise HubError(409, "You already created this repo")
                return repo_id
            self._split_repo_id(repo_id)
            repo = _Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=_now_iso())
            init = self._make_commit(repo, parent=None, tree={}, title="initial commit", message="")
            repo.refs["main"] = init.sha
            self._repos[key] = repo
            self.repo_dir(repo_id, repo_type).mkdir(parents=True, exist_ok=True)
            return repo_id

    def commit_files(
        self,
        repo_id: str,
        add: Mapping[str, bytes] | None = None,
        delete: Iterable[str] = (),
        *,
        repo_type: str = "model",
        revision: str = "main",
        message: str = "server-side commit",
    ) -> str:
        """Commit files server-side (seeding, simulating a concurrent push); returns the new commit sha."""
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            ops = [("file", p, bytes(c)) for p, c in (add or {}).items()] + [("deletedFile", p, None) for p in delete]
            return self._apply_commit(repo, revision, ops, title=message, message="").sha

    # ------------------------------------------------------------------ internals: state

    def _split_repo_id(self, repo_id: str) -> tuple[str, str]:
        parts = repo_id.split("/")
        if len(parts) != 2 or not all(_NAME_RE.match(p) for p in parts) or ".." in repo_id:
            raise HubError(400, f"Invalid repo id {repo_id!r} (expected 'namespace/name')")
        return parts[0], parts[1]

    def _get_repo(self, repo_type: str, repo_id: str) -> _Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _resolve(self, repo: _Repo, revision: str) -> _Commit:
        if revision in repo.refs:
            return repo.commits[repo.refs[revision]]
        if revision.startswith("refs/heads/") and revision[len("refs/heads/") :] in repo.refs:
            return repo.commits[repo.refs[revision[len("refs/heads/") :]]]
        if _SHA_RE.match(revision) and revision in repo.commits:
            return repo.commits[revision]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _make_commit(
        self,
        repo: _Repo,
        parent: str | None,
        tree: dict[str, str],
        title: str,
        message: str,
        lfs: Iterable[str] = (),
    ) -> _Commit:
        self._counter += 1
        payload = json.dumps(
            [
                repo.repo_type,
                repo.repo_id,
                parent,
                sorted(tree.items()),
                title,
                message,
                self._counter,
                uuid.uuid4().hex,
            ]
        )
        sha = hashlib.sha1(payload.encode()).hexdigest()
        commit = _Commit(
            sha=sha,
            parents=[parent] if parent else [],
            tree=tree,
            title=title,
            message=message,
            date=_now_iso(),
            lfs=frozenset(p for p in lfs if p in tree),
        )
        repo.commits[sha] = commit
        return commit

    def _store_blob(self, data: bytes) -> str:
        oid = _git_blob_sha1(data)
        self._blobs[oid] = data
        self._sha256_to_oid[hashlib.sha256(data).hexdigest()] = oid
        return oid

    def _apply_commit(
        self,
        repo: _Repo,
        revision: str,
        ops: list[tuple[str, str, Any]],
        *,
        title: str,
        message: str,
        parent_commit: str | None = None,
        create_pr: bool = False,
    ) -> _Commit:
        """Apply ``ops`` on top of ``revision`` and move the ref.

        ops: ("file", path, bytes) | ("lfsFile", path, sha256) | ("deletedFile" | "deletedFolder", path, None).
        """
        base = self._resolve(repo, revision)
        if parent_commit and not base.sha.startswith(parent_commit.lower()):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        if not create_pr and revision not in repo.refs:
            if revision.startswith("refs/heads/") and revision[len("refs/heads/") :] in repo.refs:
                revision = revision[len("refs/heads/") :]
            else:
                raise HubError(400, f"Cannot commit to revision {revision!r}: not a branch")
        tree = dict(base.tree)
        lfs = set(base.lfs)
        for kind, path, payload in ops:
            path = _clean_path(path)
            if kind == "file":
                tree[path] = self._store_blob(payload)
                lfs.discard(path)
            elif kind == "lfsFile":
                oid = self._sha256_to_oid.get(str(payload).lower())
                if oid is None:
                    raise HubError(422, f"LFS object {payload} for {path!r} was never uploaded")
                tree[path] = oid
                lfs.add(path)
            elif kind == "deletedFile":
                if path not in tree:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                del tree[path]
            elif kind == "deletedFolder":
                prefix = path.rstrip("/") + "/"
                doomed = [p for p in tree if p.startswith(prefix)]
                if not doomed:
                    raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                for p in doomed:
                    del tree[p]
            else:  # pragma: no cover - guarded by the parser
                raise HubError(400, f"Unknown operation {kind!r}")
        commit = self._make_commit(repo, parent=base.sha, tree=tree, title=title, message=message, lfs=lfs)
        if create_pr:
            repo.nb_prs += 1
            ref = f"refs/pr/{repo.nb_prs}"
        else:
            ref = revision
        repo.refs[ref] = commit.sha
        if ref == "main":
            self._sync_disk(repo, base.tree, tree)
        return commit

    def _sync_disk(self, repo: _Repo, old: dict[str, str], new: dict[str, str]) -> None:
        root = self.repo_dir(repo.repo_id, repo.repo_type)
        root.mkdir(parents=True, exist_ok=True)
        for path in set(old) - set(new):
            target = root / path
            target.unlink(missing_ok=True)
            parent = target.parent
            while parent != root and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent
        for path, oid in new.items():
            if old.get(path) == oid and (root / path).is_file():
                continue
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp-local-hub")
            tmp.write_bytes(self._blobs[oid])
            os.replace(tmp, target)

    # ------------------------------------------------------------------ internals: JSON views

    def _repo_url(self, repo: _Repo) -> str:
        return f"{self.endpoint}/{_URL_PREFIX[repo.repo_type]}{repo.repo_id}"

    def _lfs_info(self, oid: str) -> tuple[str, int, str, int]:
        """(sha256, size, git oid of the LFS pointer file, pointer size) of a blob."""
        data = self._blobs[oid]
        sha256 = hashlib.sha256(data).hexdigest()
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n".encode()
        return sha256, len(data), _git_blob_sha1(pointer), len(pointer)

    def _file_entry(self, commit: _Commit, path: str) -> dict:
        oid = commit.tree[path]
        entry: dict[str, Any] = {"type": "file", "oid": oid, "size": len(self._blobs[oid]), "path": path}
        if path in commit.lfs:
            sha256, size, pointer_oid, pointer_size = self._lfs_info(oid)
            entry["oid"] = pointer_oid
            entry["lfs"] = {"oid": sha256, "size": size, "pointerSize": pointer_size}
        return entry

    @staticmethod
    def _dir_entry(path: str, tree: dict[str, str]) -> dict:
        prefix = path + "/"
        digest = hashlib.sha1(json.dumps(sorted((p, o) for p, o in tree.items() if p.startswith(prefix))).encode())
        return {"type": "directory", "oid": digest.hexdigest(), "size": 0, "path": path}

    def _repo_info(self, repo: _Repo, commit: _Commit, blobs: bool) -> dict:
        siblings = []
        for path in sorted(commit.tree):
            sib: dict[str, Any] = {"rfilename": path}
            if blobs:
                entry = self._file_entry(commit, path)
                sib["size"] = entry["size"]
                sib["blobId"] = entry["oid"]
                if "lfs" in entry:
                    lfs = entry["lfs"]
                    sib["lfs"] = {"size": lfs["size"], "sha256": lfs["oid"], "pointerSize": lfs["pointerSize"]}
            siblings.append(sib)
        ns = repo.repo_id.split("/")[0]
        info: dict[str, Any] = {
            "_id": hashlib.md5(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": ns,
            "sha": commit.sha,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(len(self._blobs[o]) for o in set(commit.tree.values())),
        }
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
        if repo.repo_type == "space":
            info.update({"sdk": "static", "runtime": None})
        return info


def _clean_path(path: str) -> str:
    p = str(path).replace("\\", "/").lstrip("/")
    if p.startswith("./"):
        p = p[2:]
    parts = PurePosixPath(p).parts
    if not parts or any(part in ("", ".", "..") for part in parts) or parts[0] == ".git":
        raise HubError(400, f"Invalid path in repo: {path!r}")
    return "/".join(parts)


class _HubRequestHandler(BaseHTTPRequestHandler):
    hub: LocalHubServer  # set on the per-server subclass
    protocol_version = "HTTP/1.1"
    server_version = "LocalHub/1.0"
    timeout = 60  # idle keep-alive connections are closed after this many seconds

    # ------------------------------------------------------------------ plumbing

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            body = b"".join(chunks)
        else:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length > 0 else b""
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        return body

    def _send(
        self, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None, ctype: str | None = None
    ) -> None:
        self.send_response(status)
        hdrs = dict(headers or {})
        if ctype is not None:
            hdrs.setdefault("Content-Type", ctype)
        hdrs.setdefault("Content-Length", str(len(body)))
        for k, v in hdrs.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers, "application/json; charset=utf-8")

    def _error(self, err: HubError) -> None:
        headers = dict(err.headers)
        if err.code:
            headers["X-Error-Code"] = err.code
        headers["X-Error-Message"] = err.message.encode("ascii", "replace").decode()
        self._json({"error": err.message}, err.status, headers)

    def _dispatch(self, method: str) -> None:
        hub = self.hub
        split = urlsplit(self.path)
        with hub._lock:
            hub.requests.append((method, split.path))
        try:
            body = self._read_body()
            query = parse_qs(split.query, keep_blank_values=True)
            segs = [unquote(s) for s in split.path.strip("/").split("/")] if split.path.strip("/") else []
            if not self._route(method, segs, query, body):
                with hub._lock:
                    hub.unhandled.append((method, split.path))
                raise HubError(404, f"Not implemented by LocalHubServer: {method} {split.path}")
        except HubError as err:
            self._error(err)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # pragma: no cover - surfaced to the client as a 500
            self._json({"error": f"LocalHubServer internal error: {exc!r}"}, 500)

    # ------------------------------------------------------------------ routing

    def _route(self, method: str, segs: list[str], query: dict[str, list[str]], body: bytes) -> bool:
        if not segs:
            return False
        if segs[0] == "api":
            rest = segs[1:]
            if rest == ["whoami-v2"] and method == "GET":
                return self._whoami()
            if rest == ["agent-harnesses"] and method == "GET":
                self._json({"standardEnvVars": [], "harnesses": {}})
                return True
            if rest == ["validate-yaml"] and method == "POST":
                self._json({"errors": [], "warnings": []})
                return True
            if rest == ["repos", "create"] and method == "POST":
                return self._create_repo(_json_body(body))
            if rest == ["repos", "delete"] and method == "DELETE":
                return self._delete_repo(_json_body(body))
            if len(rest) >= 3 and rest[0] in _REPO_TYPES_PLURAL:
                repo_type = _REPO_TYPES_PLURAL[rest[0]]
                repo_id = f"{rest[1]}/{rest[2]}"
                return self._repo_api(method, repo_type, repo_id, rest[3:], query, body)
            return False
        # LFS "basic" transfer: upload target handed out by the batch endpoint
        if len(segs) == 2 and segs[0] == "_lfs_upload" and method == "PUT":
            return self._lfs_put(segs[1], body)
        # /{repo_id}.git/info/lfs/objects/batch, /datasets/{repo_id}.git/info/lfs/objects/batch, ...
        if segs[-4:] == ["info", "lfs", "objects", "batch"] and method == "POST":
            head = segs[:-4]
            repo_type = "model"
            if len(head) == 3 and head[0] in _REPO_TYPES_PLURAL:
                repo_type, head = _REPO_TYPES_PLURAL[head[0]], head[1:]
            if len(head) == 2 and head[1].endswith(".git"):
                return self._lfs_batch(repo_type, f"{head[0]}/{head[1][: -len('.git')]}", _json_body(body))
            return False
        # /{repo_id}/resolve/{revision}/{path}, /datasets/{repo_id}/resolve/..., ...
        repo_type = "model"
        if segs[0] in _REPO_TYPES_PLURAL and len(segs) >= 6 and segs[3] == "resolve":
            repo_type, segs = _REPO_TYPES_PLURAL[segs[0]], segs[1:]
        if len(segs) >= 5 and segs[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve_file(repo_type, f"{segs[0]}/{segs[1]}", segs[3], "/".join(segs[4:]))
        return False

    def _repo_api(
        self, method: str, repo_type: str, repo_id: str, rest: list[str], query: dict[str, list[str]], body: bytes
    ) -> bool:
        hub = self.hub
        blobs = _truthy(query, "blobs")
        if not rest and method == "GET":
            with hub._lock:
                repo = hub._get_repo(repo_type, repo_id)
                self._json(hub._repo_info(repo, hub._resolve(repo, "main"), blobs))
            return True
        if len(rest) == 2 and rest[0] == "revision" and method == "GET":
            with hub._lock:
                repo = hub._get_repo(repo_type, repo_id)
                self._json(hub._repo_info(repo, hub._resolve(repo, rest[1]), blobs))
            return True
        if len(rest) == 2 and rest[0] == "preupload" and method == "POST":
            return self._preupload(repo_type, repo_id, rest[1], _json_body(body))
        if len(rest) == 2 and rest[0] == "commit" and method == "POST":
            return self._commit(repo_type, repo_id, rest[1], body, create_pr=_truthy(query, "create_pr"))
        if len(rest) >= 2 and rest[0] == "tree" and method == "GET":
            return self._tree(repo_type, repo_id, rest[1], "/".join(rest[2:]), recursive=_truthy(query, "recursive"))
        if len(rest) == 2 and rest[0] == "paths-info" and method == "POST":
            return self._paths_info(repo_type, repo_id, rest[1], body)
        if len(rest) == 1 and rest[0] == "refs" and method == "GET":
            return self._refs(repo_type, repo_id, include_prs=_truthy(query, "include_prs"))
        if len(rest) == 2 and rest[0] == "branch" and method in ("POST", "DELETE"):
            return self._branch(method, repo_type, repo_id, rest[1], _json_body(body) if body else {})
        if len(rest) == 2 and rest[0] == "commits" and method == "GET":
            return self._list_commits(repo_type, repo_id, rest[1])
        if len(rest) == 1 and rest[0] == "settings" and method == "PUT":
            with hub._lock:
                repo = hub._get_repo(repo_type, repo_id)
                payload = _json_body(body)
                if "private" in payload:
                    repo.private = bool(payload["private"])
                if "visibility" in payload:
                    repo.private = payload["visibility"] != "public"
            self._json({})
            return True
        return False

    # ------------------------------------------------------------------ endpoints

    def _whoami(self) -> bool:
        user = self.hub.user
        self._json(
            {
                "type": "user",
                "id": hashlib.md5(user.encode()).hexdigest()[:24],
                "name": user,
                "fullname": user,
                "email": f"{user}@localhost",
                "emailVerified": True,
                "isPro": False,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "dummy", "role": "write"}},
            }
        )
        return True

    def _create_repo(self, payload: dict) -> bool:
        hub = self.hub
        name = payload.get("name")
        if not name:
            raise HubError(400, "Missing repo name")
        repo_id = f"{payload.get('organization') or hub.user}/{name}"
        repo_type = payload.get("type") or "model"
        if repo_type not in _URL_PREFIX:
            raise HubError(400, f"Invalid repo type {repo_type!r}")
        private = payload.get("private")
        if "visibility" in payload:
            private = payload["visibility"] != "public"
        with hub._lock:
            url = f"{hub.endpoint}/{_URL_PREFIX[repo_type]}{repo_id}"
            if (repo_type, repo_id) in hub._repos:
                self._json({"error": f"You already created this {repo_type} repo", "url": url}, 409)
                return True
            hub.create_repo(repo_id, repo_type=repo_type, private=bool(private), exist_ok=False)
        self._json({"url": url, "name": repo_id, "id": repo_id})
        return True

    def _delete_repo(self, payload: dict) -> bool:
        hub = self.hub
        repo_id = f"{payload.get('organization') or hub.user}/{payload.get('name')}"
        repo_type = payload.get("type") or "model"
        with hub._lock:
            hub._get_repo(repo_type, repo_id)
            del hub._repos[(repo_type, repo_id)]
            shutil.rmtree(hub.repo_dir(repo_id, repo_type), ignore_errors=True)
        self._json({})
        return True

    def _preupload(self, repo_type: str, repo_id: str, revision: str, payload: dict) -> bool:
        hub = self.hub
        with hub._lock:
            repo = hub._get_repo(repo_type, repo_id)
            commit = hub._resolve(repo, revision)
            files = []
            for item in payload.get("files", []):
                path = item["path"]
                remote_oid = commit.tree.get(path)
                if remote_oid is not None and path in commit.lfs:
                    remote_oid = hub._lfs_info(remote_oid)[0]  # the client compares sha256 for LFS files
                mode = hub.upload_mode(path, int(item.get("size") or 0))
                files.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": remote_oid})
            self._json({"files": files, "commitOid": commit.sha})
        return True

    def _commit(self, repo_type: str, repo_id: str, revision: str, body: bytes, create_pr: bool) -> bool:
        hub = self.hub
        header: dict = {}
        ops: list[tuple[str, str, Any]] = []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value") or {}
            if key == "header":
                header = value
            elif key == "file":
                content = value.get("content", "")
                if value.get("encoding", "base64") == "base64":
                    data = base64.b64decode(content)
                else:
                    data = content.encode("utf-8")
                ops.append(("file", value["path"], data))
            elif key == "lfsFile":
                ops.append(("lfsFile", value["path"], value.get("oid")))
            elif key in ("deletedFile", "deletedFolder"):
                ops.append((key, value["path"], None))
            else:
                raise HubError(400, f"Unknown commit line key {key!r}")
        title = header.get("summary") or ""
        if not title:
            raise HubError(400, "Missing commit summary")
        with hub._lock:
            repo = hub._get_repo(repo_type, repo_id)
            commit = hub._apply_commit(
                repo,
                revision,
                ops,
                title=title,
                message=header.get("description") or "",
                parent_commit=header.get("parentCommit"),
                create_pr=create_pr,
            )
            pr_url = f"{hub._repo_url(repo)}/discussions/{repo.nb_prs}" if create_pr else None
            self._json(
                {
                    "success": True,
                    "commitOid": commit.sha,
                    "commitUrl": f"{hub._repo_url(repo)}/commit/{commit.sha}",
                    "pullRequestUrl": pr_url,
                    "hookOutput": "",
                }
            )
        return True

    def _tree(self, repo_type: str, repo_id: str, revision: str, path: str, recursive: bool) -> bool:
        hub = self.hub
        with hub._lock:
            repo = hub._get_repo(repo_type, repo_id)
            commit = hub._resolve(repo, revision)
            tree = commit.tree
            prefix = path.strip("/")
            if prefix and prefix in tree:
                raise HubError(400, f"{prefix!r} is a file, not a directory")
            base = prefix + "/" if prefix else ""
            under = [p for p in sorted(tree) if p.startswith(base)]
            if prefix and not under:
                raise HubError(404, f"Path {prefix!r} not found", "EntryNotFound", {"X-Repo-Commit": commit.sha})
            dirs: set[str] = set()
            files: list[str] = []
            for p in under:
                rel = p[len(base) :].split("/")
                if recursive:
                    for i in range(1, len(rel)):
                        dirs.add(base + "/".join(rel[:i]))
                    files.append(p)
                elif len(rel) == 1:
                    files.append(p)
                else:
                    dirs.add(base + rel[0])
            entries = [hub._dir_entry(d, tree) for d in sorted(dirs)] + [hub._file_entry(commit, p) for p in files]
            self._json(entries)
        return True

    def _paths_info(self, repo_type: str, repo_id: str, revision: str, body: bytes) -> bool:
        hub = self.hub
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            paths = _json_body(body).get("paths", [])
        else:
            paths = parse_qs(body.decode("utf-8"), keep_blank_values=True).get("paths", [])
        if isinstance(paths, str):
            paths = [paths]
        with hub._lock:
            repo = hub._get_repo(repo_type, repo_id)
            commit = hub._resolve(repo, revision)
            tree = commit.tree
            out = []
            for path in paths:
                p = path.strip("/")
                if p in tree:
                    out.append(hub._file_entry(commit, p))
                elif p and any(q.startswith(p + "/") for q in tree):
                    out.append(hub._dir_entry(p, tree))
            self._json(out)
        return True

    def _refs(self, repo_type: str, repo_id: str, include_prs: bool) -> bool:
        hub = self.hub
        with hub._lock:
            repo = hub._get_repo(repo_type, repo_id)
            branches = [
                {"name": name, "ref": f"refs/heads/{name}", "targetCommit": sha}
                for name, sha in sorted(repo.refs.items())
                if not name.startswith("refs/")
            ]
            out: dict[str, Any] = {"branches": branches, "converts": [], "tags": []}
            if include_prs:
                out["pullRequests"] = [
                    {"name": name, "ref": name, "targetCommit": sha}
                    for name, sha in sorted(repo.refs.items())
                    if _PR_RE.match(name)
                ]
            self._json(out)
        return True

    def _branch(self, method: str, repo_type: str, repo_id: str, branch: str, payload: dict) -> bool:
        hub = self.hub
        with hub._lock:
            repo = hub._get_repo(repo_type, repo_id)
            if method == "POST":
                if branch in repo.refs:
                    raise HubError(409, f"Reference already exists: refs/heads/{branch}")
                if branch.startswith("refs/") or not branch:
                    raise HubError(400, f"Invalid branch name {branch!r}")
                start = hub._resolve(repo, payload.get("startingPoint") or "main")
                repo.refs[branch] = start.sha
            else:
                if branch == "main":
                    raise HubError(403, "Cannot delete the default branch")
                if branch not in repo.refs:
                    raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
                del repo.refs[branch]
        self._json({})
        return True

    def _list_commits(self, repo_type: str, repo_id: str, revision: str) -> bool:
        hub = self.hub
        with hub._lock:
            repo = hub._get_repo(repo_type, repo_id)
            items, commit = [], hub._resolve(repo, revision)
            while True:
                items.append(
                    {
                        "id": commit.sha,
                        "authors": [{"user": hub.user}],
                        "date": commit.date,
                        "title": commit.title,
                        "message": commit.message,
                    }
                )
                if not commit.parents:
                    break
                commit = repo.commits[commit.parents[0]]
            self._json(items)
        return True

    def _lfs_batch(self, repo_type: str, repo_id: str, payload: dict) -> bool:
        hub = self.hub
        if payload.get("operation") != "upload":
            raise HubError(400, "Only the 'upload' LFS batch operation is supported")
        with hub._lock:
            hub._get_repo(repo_type, repo_id)
            objects = []
            for obj in payload.get("objects", []):
                oid, size = str(obj["oid"]).lower(), int(obj["size"])
                item: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
                if oid not in hub._sha256_to_oid:  # already-known content => no action => client skips upload
                    item["actions"] = {"upload": {"href": f"{hub.endpoint}/_lfs_upload/{oid}", "expires_in": 3600}}
                objects.append(item)
        body = json.dumps({"transfer": "basic", "objects": objects}).encode()
        self._send(200, body, None, "application/vnd.git-lfs+json")
        return True

    def _lfs_put(self, sha256: str, body: bytes) -> bool:
        if hashlib.sha256(body).hexdigest() != sha256.lower():
            raise HubError(400, f"LFS upload content does not match oid {sha256}")
        with self.hub._lock:
            self.hub._store_blob(body)
        self._send(200)
        return True

    def _resolve_file(self, repo_type: str, repo_id: str, revision: str, path: str) -> bool:
        hub = self.hub
        with hub._lock:
            repo = hub._get_repo(repo_type, repo_id)
            commit = hub._resolve(repo, revision)
            oid = commit.tree.get(path)
            if oid is None:
                raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.sha})
            data = hub._blobs[oid]
            lfs_sha256 = hub._lfs_info(oid)[0] if path in commit.lfs else None
        total = len(data)
        headers = {
            "ETag": f'"{oid}"',
            "X-Repo-Commit": commit.sha,
            "Accept-Ranges": "bytes",
            "Content-Disposition": f'inline; filename="{PurePosixPath(path).name}"',
            "Cache-Control": "private, max-age=0",
        }
        if lfs_sha256 is not None:
            headers["X-Linked-Etag"] = f'"{lfs_sha256}"'
            headers["X-Linked-Size"] = str(total)
        status, payload = 200, data
        rng = self.headers.get("Range")
        if rng:
            m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", rng)
            if m and (m.group(1) or m.group(2)):
                if m.group(1):
                    start = int(m.group(1))
                    end = int(m.group(2)) if m.group(2) else total - 1
                else:  # suffix range: last N bytes
                    start, end = max(total - int(m.group(2)), 0), total - 1
                end = min(end, total - 1)
                if start >= total or start > end:
                    self._send(416, b"", {**headers, "Content-Range": f"bytes */{total}"})
                    return True
                status, payload = 206, data[start : end + 1]
                headers["Content-Range"] = f"bytes {start}-{end}/{total}"
        self._send(status, payload, headers, "application/octet-stream")
        return True


def _json_body(body: bytes) -> dict:
    if not body:
        return {}
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise HubError(400, f"Invalid JSON body: {exc}") from exc
    if not isinstance(value, dict):
        raise HubError(400, "Expected a JSON object")
    return value


def _truthy(query: Mapping[str, list[str]], key: str) -> bool:
    values = query.get(key) or query.get(key + "[]") or []
    return any(v.lower() in ("1", "true", "yes", "on") for v in values)
