"""On-disk layout of a `MultimodalProcessor`: one JSON file plus one subfolder per sub-processor.

The layout is chosen to share a folder (or Hub repo) with a model checkpoint: nothing is written at the top level but
`mmbalance_processor.json`, so `config.json`, `model.safetensors` and `README.md` are never touched, and each
sub-processor's own files (`preprocessor_config.json`, `tokenizer.json`, ...) live in `processor_<modality>/`.
JSON only, no pickle; loading goes through the transformers Auto classes.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

CONFIG_NAME = "mmbalance_processor.json"
SUBFOLDER_PREFIX = "processor_"
FORMAT_VERSION = 1
# Names become folder names: a plain name cannot escape the save directory (no "/", no "..").
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_LOADERS = {
    "tokenizer": "AutoTokenizer",
    "image_processor": "AutoImageProcessor",
    "feature_extractor": "AutoFeatureExtractor",
}


def check_safe_name(name: str, what: str) -> str:
    """`name` unchanged, or ValueError when it cannot be a folder name inside the save directory."""
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or ".." in name:
        raise ValueError(f"{what} {name!r} must be letters, digits, '_', '-' or '.' (it names a folder)")
    return name


def subfolder_for(modality: str) -> str:
    return SUBFOLDER_PREFIX + check_safe_name(modality, "modality name")


def write_config(directory: Path, modalities: dict[str, dict[str, Any]]) -> Path:
    """Write `mmbalance_processor.json` ({"format_version", "modalities": {name: entry}}); returns its path."""
    path = Path(directory) / CONFIG_NAME
    payload = {"format_version": FORMAT_VERSION, "processor_class": "MultimodalProcessor", "modalities": modalities}
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def read_config(directory: Path) -> dict[str, dict[str, Any]]:
    """The validated `modalities` mapping of a saved processor (ValueError when the file is missing or malformed)."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise ValueError(f"no {CONFIG_NAME} in {os.fspath(directory)!r}: not a saved MultimodalProcessor")
    payload = json.loads(path.read_text(encoding="utf-8"))
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{CONFIG_NAME} has format_version {version!r}; this version reads up to {FORMAT_VERSION}")
    modalities = payload.get("modalities")
    if not isinstance(modalities, dict) or not modalities:
        raise ValueError(f"{CONFIG_NAME} lists no modalities")
    for name, entry in modalities.items():
        check_safe_name(name, "modality name")
        check_safe_name(entry.get("subfolder"), f"subfolder of modality {name!r}")
        if entry.get("kind") not in _LOADERS:
            raise ValueError(
                f"modality {name!r}: kind {entry.get('kind')!r} is unknown; expected one of {sorted(_LOADERS)}"
            )
    return modalities


def load_sub_processor(directory: Path, entry: dict[str, Any], trust_remote_code: bool) -> Any:
    """Load one sub-processor from its subfolder with the Auto class of its stored kind.

    Remote code runs only when the caller asked for it; an image processor is loaded with the backend it was saved
    with (PIL or torchvision), since the two round differently.
    """
    import transformers

    loader = getattr(transformers, _LOADERS[entry["kind"]])
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if entry["kind"] == "image_processor" and entry.get("backend"):
        kwargs["backend"] = entry["backend"]
    return loader.from_pretrained(os.fspath(Path(directory) / entry["subfolder"]), **kwargs)


def resolve_directory(path_or_repo_id: str | os.PathLike, hub_kwargs: dict[str, Any]) -> Path:
    """A local folder as is; otherwise a Hub repo id, of which only the processor's files are downloaded (the model
    weights in the same repo are not), honouring `revision`, `token`, `cache_dir`, `local_files_only`..."""
    if os.path.isdir(path_or_repo_id):
        return Path(path_or_repo_id)
    from huggingface_hub import snapshot_download

    patterns = [CONFIG_NAME, f"{SUBFOLDER_PREFIX}*/*"]
    return Path(snapshot_download(repo_id=str(path_or_repo_id), allow_patterns=patterns, **hub_kwargs))
