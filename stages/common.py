"""What every stage command shares: the params file option, logging, error reporting."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from pipeline.config import load_section
from pipeline.errors import ConfigError, PipelineError

F = TypeVar("F", bound=Callable[..., Any])

params_option = click.option(
    "--params",
    "params_file",
    type=click.Path(dir_okay=False),
    default="params.yaml",
    show_default=True,
    help="Parameters file; the command reads only its own section. A missing default file "
    "means the paper's defaults.",
)


def as_mapping(value: Any, section: str) -> dict[str, Any]:
    """A params section as a dict: ``{}`` for an empty one, an error for a non-mapping."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"params section {section!r} must be a mapping of keys, got {value!r}")
    return dict(value)


def read_section(params_file: str | None, section: str) -> dict[str, Any]:
    """The stage's section of the params file (``{}``: absent file at the default path)."""
    from pathlib import Path

    if params_file == "params.yaml" and not Path(params_file).exists():
        return {}
    return as_mapping(load_section(params_file, section), section)


def reports_errors(func: F) -> F:
    """Turn pipeline errors into a clear one-line message and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PipelineError as err:
            raise click.ClickException(f"{type(err).__name__}: {err}") from err

    return wrapper  # type: ignore[return-value]


def setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("pipeline").setLevel(level)
