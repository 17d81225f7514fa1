"""``params.yaml`` sections as frozen dataclasses.

Each stage reads only its own section. :func:`parse` turns a mapping into a frozen dataclass,
refusing unknown keys (a typo would otherwise silently fall back to a default) and values of
the wrong type, and naming the offending key with its section before any work starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from pipeline.errors import ConfigError

__all__ = ["SECTIONS", "as_dict", "load_section", "parse"]

#: The top-level sections of ``params.yaml``, one per stage; any other is a typo.
SECTIONS = ("prepare", "extract", "train", "evaluate", "baseline", "figures", "report")

T = TypeVar("T")


def _check_value(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a type hint; return it, converted where lossless (int -> float)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for option in typing.get_args(hint):
            try:
                return _check_value(value, option, where)
            except ConfigError as err:
                errors.append(str(err))
        names = " or ".join(_type_name(a) for a in typing.get_args(hint))
        raise ConfigError(f"{where}: expected {names}, got {value!r}")
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    if origin is typing.Literal:
        allowed = typing.get_args(hint)
        if value in allowed:
            return value
        raise ConfigError(f"{where}: must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(hint)
        item = args[0] if args else Any
        return tuple(_check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping of {hint.__name__} keys, got {value!r}")
        return parse(hint, value, section=where)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise ConfigError(f"{where}: expected {_type_name(hint)}, got {value!r}")


_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _type_name(hint: Any) -> str:
    """How an error message names a type: "an integer", "null", "a list", ..."""
    if hint is type(None):
        return "null"
    if hint in _NAMES:
        return _NAMES[hint]
    return getattr(hint, "__name__", str(hint))


def parse(
    cls: type[T],
    mapping: Mapping[str, Any] | None,
    *,
    section: str,
    subsections: Sequence[str] = (),
) -> T:
    """Build the frozen dataclass ``cls`` from a ``params.yaml`` section.

    Parameters
    ----------
    cls : type
        A dataclass whose field defaults are the paper's values.
    mapping : mapping or None
        The section's content; ``None`` (an empty section) means all defaults.
    section : str
        The section's dotted name, used in error messages (``"extract.hog"``).
    subsections : sequence of str
        Names the section may also hold, parsed by the caller (``extract``'s feature
        subsections): not in ``mapping`` here, but offered with the known keys when a key
        is unknown, so that a typo'd subsection is told apart from a typo'd key.

    Returns
    -------
    cls instance

    Raises
    ------
    ConfigError
        On an unknown key (listing the known ones), a value of the wrong type, or whatever
        the dataclass's own ``__post_init__`` validation rejects.
    """
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"params section {section!r} must be a mapping, got {mapping!r}")
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"{cls!r} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        named = []
        for name in unknown:
            close = difflib.get_close_matches(str(name), [*fields, *subsections], n=1)
            named.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        also = f", and the subsections {', '.join(subsections)}" if subsections else ""
        raise ConfigError(
            f"unknown key(s) {', '.join(named)} in params section {section!r}; "
            f"known keys: {', '.join(sorted(fields))}{also}"
        )
    hints = typing.get_type_hints(cls)
    values = {
        name: _check_value(value, hints[name], f"{section}.{name}")
        for name, value in mapping.items()
    }
    try:
        return cls(**values)
    except ConfigError as err:
        raise ConfigError(f"params section {section!r}: {err}") from None


def as_dict(params: Any) -> dict[str, Any]:
    """A frozen params dataclass as a plain, JSON-serialisable dict (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(params).items()}


#: libyaml's parser where PyYAML was built with it: ~10x faster than the pure-Python one
#: (25 ms of every command's start on params.yaml), the same safe subset of YAML.
_SAFE_LOADER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_yaml(text: str) -> Any:
    """``yaml.safe_load(text)``, through libyaml when PyYAML has it.

    Raises
    ------
    yaml.YAMLError
        As ``yaml.safe_load``.
    """
    return yaml.load(text, Loader=_SAFE_LOADER)  # a safe loader


def load_section(path: str | Path | None, section: str) -> Mapping[str, Any] | None:
    """Read one dotted section (``"extract"``, ``"extract.hog"``) of a params file.

    Parameters
    ----------
    path : str or Path or None
        The params file. ``None`` means no file: every section is empty (all defaults).
    section : str
        Dotted path of the section.

    Returns
    -------
    mapping or None
        ``None`` when the file or the section is absent.
    """
    if path is None:
        return None
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"params file {str(path)!r} does not exist; pass --params PATH")
    try:
        data = parse_yaml(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"params file {str(path)!r} is not valid YAML: {err}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"params file {str(path)!r} must be a mapping of sections, got {data!r}")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        import difflib

        hints = []
        for name in unknown:
            close = difflib.get_close_matches(str(name), SECTIONS, n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(
            f"params file {str(path)!r} has unknown section(s) {', '.join(hints)}; "
            f"sections: {', '.join(SECTIONS)}"
        )
    node: Any = data
    for part in section.split("."):
        if not isinstance(node, Mapping):
            raise ConfigError(f"params file {str(path)!r}: {section!r} is not a mapping")
        if part not in node:
            return None
        node = node[part]
    return typing.cast("Mapping[str, Any] | None", node)
