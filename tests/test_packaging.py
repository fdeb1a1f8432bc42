"""Packaging: every package folder is listed in pyproject.toml; bundled files are importable resources."""

import tomllib
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in (ROOT / "hf_mmbalance").rglob("__init__.py")
        if "__pycache__" not in path.parts
    }
    assert on_disk <= listed, f"add {sorted(on_disk - listed)} to [tool.setuptools] packages"


def test_bundled_data_and_model_card_template_are_package_resources():
    assert resources.files("hf_mmbalance.model_cards").joinpath("mmbalance_model_card.md").is_file()
    assert resources.files("hf_mmbalance.data").joinpath("_mfeat/mfeat.parquet").is_file()
    assert resources.files("hf_mmbalance.data").joinpath("_mfeat/LICENSE.md").is_file()
