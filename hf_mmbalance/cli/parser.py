"""`--config recipe.yaml` + CLI flags -> argument dataclasses (CLI flags override the recipe, as in TRL).

Only `yaml` and the standard library are imported here: transformers' `HfArgumentParser` is imported when fields are
parsed, so `hf-mmbalance --help` stays fast.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any

import yaml


class RecipeError(ValueError):
    """A recipe file or a command-line flag that cannot be used."""


def one_line(text: str) -> str:
    """`text` on one line: its lines stripped and joined by spaces (YAML and Trainer messages span several)."""
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def read_recipe(path: str) -> dict[str, Any]:
    recipe_path = Path(path)
    if not recipe_path.is_file():
        raise RecipeError(f"--config {path}: no such recipe file")
    try:
        content = yaml.safe_load(recipe_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise RecipeError(f"--config {path}: not valid YAML: {one_line(error)}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise RecipeError(f"--config {path}: cannot read it ({error})") from None
    if not isinstance(content, dict):
        raise RecipeError(f"--config {path}: a recipe is a YAML mapping of field: value, got {type(content).__name__}")
    return content


def split_config_flag(argv: list[str]) -> tuple[str | None, list[str]]:
    """(the `--config` path or None, the other flags); `--config=FILE` works too."""
    argv = list(argv)
    for position, flag in enumerate(argv):
        if flag == "--config":
            if position + 1 >= len(argv) or argv[position + 1].startswith("--"):
                raise RecipeError("--config needs a path to a YAML recipe")
            return argv[position + 1], argv[:position] + argv[position + 2 :]
        if flag.startswith("--config="):
            return flag.partition("=")[2], argv[:position] + argv[position + 1 :]
    return None, argv


def parse_recipe_and_flags(
    dataclass_types: tuple[type, ...],
    argv: list[str],
    method_names: tuple[str, ...] = (),
    method_options: dict[str, type] | None = None,
) -> tuple[Any, ...]:
    """Parse `argv` (`--config FILE` first if given, then `--field value` flags) into `dataclass_types`.

    With `method_names`, a recipe section `<method>: {option: value}` (and flags `--<method>.<option> value`,
    which override it) configures a balancing method; the parsed sections `{method: {option: value}}` are then
    returned after the dataclasses. Sections keep method options apart from the Trainer's fields. With
    `method_options` (method name -> its config dataclass) every option is checked against the dataclass's fields,
    and an unknown one is refused with the list of valid options.
    """
    config_path, argv = split_config_flag(argv)
    recipe = read_recipe(config_path) if config_path is not None else {}
    if method_names:
        recipe, argv, sections = _method_sections(recipe, argv, method_names, method_options or {}, config_path)
        return (*_parse_fields(dataclass_types, recipe, argv), sections)
    return _parse_fields(dataclass_types, recipe, argv)


def field_sources(argv: list[str]) -> dict[str, str]:
    """Where each field's value comes from: `"flag"` (the command line) or `"recipe <path>"`; fields set nowhere are
    absent. Lets an error say which of the two to change (e.g. a recipe's views that do not fit another dataset)."""
    config_path, flags = split_config_flag(argv)
    sources: dict[str, str] = {}
    if config_path is not None:
        sources.update({str(name): f"recipe {config_path}" for name in read_recipe(config_path)})
    for flag in flags:
        if flag.startswith("--") and len(flag) > 2:
            sources[flag[2:].partition("=")[0]] = "flag"
    return sources


def option_names(config_class: type) -> list[str]:
    return [field.name for field in dataclasses.fields(config_class) if field.init]


def check_option(method: str, option: str, config_class: type | None, where: str) -> None:
    """Refuse an option that `config_class` (a method's config dataclass) does not have, listing the valid ones."""
    if config_class is None:
        return
    valid = option_names(config_class)
    if option in valid:
        return
    close = difflib.get_close_matches(option, valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise RecipeError(
        f"unknown option {option!r} for {method}; valid: {', '.join(valid)}{hint} ({where}; see "
        f"`hf-mmbalance train --help {method}`)"
    )


def _yaml_value(flag: str, text: str) -> Any:
    # YAML typing, as in a recipe: 0.2 -> float, true -> bool, [a, b] -> list, null -> None.
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise RecipeError(f"{flag} {text!r}: not a valid YAML value ({one_line(error)})") from None


def _method_sections(recipe: dict[str, Any], argv: list[str], method_names: tuple[str, ...],
                     method_options: dict[str, type], config_path: str | None):
    sections: dict[str, dict[str, Any]] = {}
    for name in method_names:
        if name in recipe:
            section = recipe.pop(name)
            if section is None:
                section = {}
            if not isinstance(section, dict):
                raise RecipeError(f"recipe section {name!r} must be a mapping of option: value, got {section!r}")
            for option in section:
                check_option(name, str(option), method_options.get(name), f"recipe section `{name}:` of {config_path}")
            sections[name] = dict(section)
    remaining = []
    position = 0
    while position < len(argv):
        flag = argv[position]
        method, _, option = flag[2:].partition(".") if flag.startswith("--") else ("", "", "")
        if option and method in method_names:
            option, equals, inline = option.partition("=")
            check_option(method, option, method_options.get(method), f"flag --{method}.{option}")
            if equals:
                value, position = inline, position + 1
            elif position + 1 >= len(argv):
                raise RecipeError(f"{flag} needs a value")
            else:
                value, position = argv[position + 1], position + 2
            sections.setdefault(method, {})[option] = _yaml_value(f"--{method}.{option}", value)
        elif option:
            close = difflib.get_close_matches(method, list(method_names), n=1)
            hint = f"; did you mean --{close[0]}.{option}?" if close else ""
            raise RecipeError(f"unknown method in flag {flag}; methods: {list(method_names)}{hint}")
        else:
            remaining.append(flag)
            position += 1
    return recipe, remaining, sections


def _argument_parser(dataclass_types: tuple[type, ...]):
    """An `HfArgumentParser` whose errors (a bad value, a missing one) raise `RecipeError` instead of printing the
    usage of every TrainingArguments field and exiting."""
    from transformers import HfArgumentParser

    class _Parser(HfArgumentParser):
        def error(self, message):  # argparse's hook: called for a bad or missing flag value
            raise RecipeError(f"{one_line(message)}; see `hf-mmbalance train --help`")

    return _Parser(dataclass_types)


def _parse_fields(dataclass_types: tuple[type, ...], recipe: dict[str, Any], argv: list[str]) -> tuple[Any, ...]:
    known = {field.name for cls in dataclass_types for field in dataclasses.fields(cls) if field.init}
    unknown = sorted(set(recipe) - known)
    if unknown:
        hints = [f"{name!r} -> {close[0]!r}" for name in unknown for close in [difflib.get_close_matches(name, known, n=1)] if close]
        hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
        raise RecipeError(f"recipe has unknown fields {unknown}{hint}; see `hf-mmbalance train --help` for the valid ones")
    parser = _argument_parser(dataclass_types)
    parser.set_defaults(**recipe)
    parsed = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    *dataclasses_out, remaining = parsed
    if remaining:
        raise RecipeError(f"unknown command-line flags {remaining}; see `hf-mmbalance train --help`")
    return tuple(dataclasses_out)
