"""YAML configuration for every part of Tradewind, validated with pydantic.

Each consumer defines a pydantic model for its file; `load_config` reads the YAML and turns any
validation failure into one `ConfigError` line per problem, naming the file and the key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

CONFIG_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = CONFIG_DIR.parent
# a source checkout (configs/ beside pyproject.toml) keeps its data in the checkout; an installed
# wheel's configs/ sits in site-packages, which is no place for data
SOURCE_CHECKOUT = (PROJECT_ROOT / "pyproject.toml").is_file()


def data_home() -> Path:
    """Where relative data folders count from: the checkout, or for an installed package the
    user's data folder ($XDG_DATA_HOME/tradewind, by default ~/.local/share/tradewind)."""
    if SOURCE_CHECKOUT:
        return PROJECT_ROOT
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "tradewind"

ModelT = TypeVar("ModelT", bound=BaseModel)


class ConfigError(ValueError):
    """A config file is missing, unreadable or invalid. The message names file and key."""


class InputError(ValueError):
    """A file, column, format or value the user gave is wrong. The message is one line naming it
    (file, column or field, the value) and what was expected; the CLI prints it and exits 2."""


class StrictModel(BaseModel):
    """Base for config sections: an unknown key is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def config_path(name: str | Path) -> Path:
    """Resolve `marketplace` or `marketplace.yaml` to `configs/marketplace.yaml`; paths pass through."""
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        path = path.with_suffix(".yaml")
    if not path.is_absolute() and not path.exists():
        path = CONFIG_DIR / path.name
    return path


def format_validation_error(source: str, error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{key}'")
        elif item["type"] == "missing":
            lines.append(f"{source}: missing key '{key}'")
        else:
            lines.append(f"{source}: key '{key}': {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def validate_config(data: object, model: type[ModelT], source: str) -> ModelT:
    """Validate already-parsed data (a dict from YAML, or overrides) against `model`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(source, error)) from None


def load_config(name: str | Path, model: type[ModelT]) -> ModelT:
    """Load `configs/<name>.yaml` (or a path) and validate it against `model`."""
    path, data = read_config_file(name)
    return validate_config(data, model, str(path))


def read_config_file(name: str | Path) -> tuple[Path, Any]:
    """`configs/<name>.yaml` (or a path) and its parsed YAML; a missing or unreadable file is a
    ConfigError naming it."""
    path = config_path(name)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        return path, yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: {yaml_problem(error)}") from None


def yaml_problem(error: yaml.YAMLError) -> str:
    """'not valid YAML at line L, column C: <problem>' (1-based), one line."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"not valid YAML{where}: {problem}"
