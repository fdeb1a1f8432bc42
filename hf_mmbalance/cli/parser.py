"""`--config recipe.yaml` + CLI flags -> argument dataclasses (CLI flags override the recipe, as in TRL)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser


class RecipeError(ValueError):
    """A recipe file or a command-line flag that cannot be used."""


def read_recipe(path: str) -> dict[str, Any]:
    recipe_path = Path(path)
    if not recipe_path.is_file():
        raise RecipeError(f"--config {path}: no such recipe file")
    content = yaml.safe_load(recipe_path.read_text(encoding="utf-8")) or {}
    if not isinstance(content, dict):
        raise RecipeError(f"--config {path}: a recipe is a YAML mapping of field: value, got {type(content).__name__}")
    return content


def parse_recipe_and_flags(dataclass_types: tuple[type, ...], argv: list[str]) -> tuple[Any, ...]:
    """Parse `argv` (`--config FILE` first if given, then `--field value` flags) into `dataclass_types`."""
    argv = list(argv)
    recipe: dict[str, Any] = {}
    if "--config" in argv:
        position = argv.index("--config")
        if position + 1 >= len(argv):
            raise RecipeError("--config needs a path to a YAML recipe")
        recipe = read_recipe(argv[position + 1])
        del argv[position : position + 2]
    known = {field.name for cls in dataclass_types for field in dataclasses.fields(cls) if field.init}
    unknown = sorted(set(recipe) - known)
    if unknown:
        raise RecipeError(f"recipe has unknown fields {unknown}; see `hf-mmbalance train --help` for the valid ones")
    parser = HfArgumentParser(dataclass_types)
    parser.set_defaults(**recipe)
    parsed = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    *dataclasses_out, remaining = parsed
    if remaining:
        raise RecipeError(f"unknown command-line flags {remaining}; see `hf-mmbalance train --help`")
    return tuple(dataclasses_out)
