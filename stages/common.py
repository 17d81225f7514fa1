"""What every stage command shares: its common options, logging, error reporting.

An option that several commands take (``--images``, ``--out``, ``--metrics`` ...) is written
once here, with the parameter name the command function receives; where its meaning differs
between commands, the help text is an argument.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

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
    help="Parameters file; the command reads only its own section (and, where it uses a "
    "feature or AlexNet, that part of `extract`). Run from the repository root or pass a path.",
)


def path_template(help: str, *, missing_ok: bool = False) -> str:
    """Help text of an option that takes a path template (``{name}``: the target)."""
    tail = " A missing file is left out." if missing_ok else ""
    return help + " A path template: {name} stands for the target." + tail


def images_option(help: str) -> Callable[[F], F]:
    """``--images`` (required): an image store folder, passed as ``images_path``."""
    return click.option(
        "--images", "images_path", required=True, type=click.Path(file_okay=False), help=help
    )


def features_option(help: str) -> Callable[[F], F]:
    """``--features`` (optional): a feature store folder, passed as ``features_path``."""
    return click.option(
        "--features", "features_path", type=click.Path(file_okay=False), default=None, help=help
    )


def out_option(
    help: str, *, kind: Literal["folder", "file", "template"] = "folder"
) -> Callable[[F], F]:
    """``--out`` (required): what the command writes, passed as ``out``.

    ``kind`` is ``folder`` (a store or model folder), ``file`` (one file) or ``template`` (a
    path that may contain ``{name}``, checked by the command).
    """
    path_type = {
        "folder": click.Path(file_okay=False),
        "file": click.Path(dir_okay=False),
        "template": None,
    }[kind]
    return click.option("--out", required=True, type=path_type, help=help)


def metrics_option(help: str = "Metrics JSON (dvc metrics show).") -> Callable[[F], F]:
    """``--metrics`` (optional): the metrics JSON file to write, passed as ``metrics_path``."""
    return click.option(
        "--metrics", "metrics_path", type=click.Path(dir_okay=False), default=None, help=help
    )


def device_option(overrides: str) -> Callable[[F], F]:
    """``--device`` (optional), passed as ``device``; ``overrides`` names the params it beats."""
    return click.option("--device", default=None, help=f"auto | cpu | cuda | cuda:N ({overrides}).")


def overwrite_option(help: str = "Replace an existing store made differently.") -> Callable[[F], F]:
    """``--overwrite`` flag, passed as ``overwrite``."""
    return click.option("--overwrite", is_flag=True, help=help)


#: ``--no-wait`` flag of every command that writes a store, passed as ``no_wait``
no_wait_option = click.option(
    "--no-wait",
    is_flag=True,
    help="Fail instead of waiting when another process is writing the same store.",
)


def as_mapping(value: Any, section: str) -> dict[str, Any]:
    """A params section as a dict: ``{}`` for an empty one, an error for a non-mapping."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"params section {section!r} must be a mapping of keys, got {value!r}")
    return dict(value)


def read_section(params_file: str | None, section: str) -> dict[str, Any]:
    """The stage's section of the params file (``{}`` when the section is absent).

    A missing file is an error naming it: silently falling back to the paper's defaults
    (300k training steps) is never what a user in the wrong folder wants.
    """
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


def runner_options(func: F) -> F:
    """The options of every shard-writing command: parallelism, scheduler, replace, wait."""
    options = [
        click.option("--workers", type=int, default=None,
                     help="Parallel shard tasks (0: one per core)."),
        click.option("--scheduler", default=None,
                     help="threads | processes | a dask.distributed scheduler address "
                          "(tcp://host:8786)."),
        overwrite_option(),
        no_wait_option,
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def apply_runner_flags(
    section: dict[str, Any], name: str, workers: int | None, scheduler: str | None
) -> str | None:
    """Put ``--workers`` / ``--scheduler`` into ``section['runner']``; return a cluster address.

    ``--scheduler threads|processes`` picks the local Dask scheduler; anything else is the
    address of a ``dask.distributed`` scheduler, returned for the runner to connect to.
    """
    runner = as_mapping(section.get("runner"), f"{name}.runner")
    if workers is not None:
        runner["workers"] = workers
    address = None
    if scheduler in ("threads", "processes"):
        runner["scheduler"] = scheduler
    elif scheduler:
        address = scheduler
    section["runner"] = runner
    return address
