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


def parse_recipe_and_flags(
    dataclass_types: tuple[type, ...], argv: list[str], method_names: tuple[str, ...] = ()
) -> tuple[Any, ...]:
    """Parse `argv` (`--config FILE` first if given, then `--field value` flags) into `dataclass_types`.

    With `method_names`, a recipe section `<method>: {option: value}` (and flags `--<method>.<option> value`,
    which override it) configures a balancing method; the parsed sections `{method: {option: value}}` are then
    returned after the dataclasses. Sections keep method options apart from the Trainer's fields.
    """
    argv = list(argv)
    recipe: dict[str, Any] = {}
    if "--config" in argv:
        position = argv.index("--config")
        if position + 1 >= len(argv):
            raise RecipeError("--config needs a path to a YAML recipe")
        recipe = read_recipe(argv[position + 1])
        del argv[position : position + 2]
    if method_names:
        recipe, argv, sections = _method_sections(recipe, argv, method_names)
        return (*_parse_fields(dataclass_types, recipe, argv), sections)
    return _parse_fields(dataclass_types, recipe, argv)


def _method_sections(recipe: dict[str, Any], argv: list[str], method_names: tuple[str, ...]):
    sections: dict[str, dict[str, Any]] = {}
    for name in method_names:
        if name in recipe:
            section = recipe.pop(name)
            if section is None:
                section = {}
            if not isinstance(section, dict):
                raise RecipeError(f"recipe section {name!r} must be a mapping of option: value, got {section!r}")
            sections[name] = dict(section)
    remaining = []
    position = 0
    while position < len(argv):
        flag = argv[position]
        method, _, option = flag[2:].partition(".") if flag.startswith("--") else ("", "", "")
        if option and method in method_names:
            if position + 1 >= len(argv):
                raise RecipeError(f"{flag} needs a value")
            # YAML typing, as in a recipe: 0.2 -> float, true -> bool, [a, b] -> list, null -> None.
            sections.setdefault(method, {})[option] = yaml.safe_load(argv[position + 1])
            position += 2
        elif option:
            raise RecipeError(f"unknown method in flag {flag}; methods: {list(method_names)}")
        else:
            remaining.append(flag)
            position += 1
    return recipe, remaining, sections


def _parse_fields(dataclass_types: tuple[type, ...], recipe: dict[str, Any], argv: list[str]) -> tuple[Any, ...]:
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
