"""Schema checking shared by every part of a spec: the one-line error, type coercion, sections.

No imports from the rest of ``search``: ``_space`` and ``_spec`` both build on it.
"""

from __future__ import annotations

import copy
import difflib
import types
import typing
from typing import Any


class SpecError(Exception):
    """A bad spec; ``str(err)`` is the one line the CLI prints."""

    def __init__(self, file: str, path: str, message: str) -> None:
        self.file, self.path, self.message = file, path, message
        super().__init__(f"{file}: {path}: {message}" if path else f"{file}: {message}")


def did_you_mean(word: str, options: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def allowed(options: typing.Iterable[str]) -> str:
    opts = list(options)
    return ", ".join(opts[:15]) + (", …" if len(opts) > 15 else "")


def type_name(t: Any) -> str:
    if isinstance(t, (types.UnionType,)) or typing.get_origin(t) is typing.Union:
        return " or ".join(type_name(a) for a in typing.get_args(t))
    return {
        float: "a number",
        int: "an integer",
        bool: "true/false",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(t, getattr(t, "__name__", str(t)))


def coerce(value: Any, t: Any) -> Any:
    """Return ``value`` as type ``t`` or raise TypeError. Ints widen to floats; YAML's "1e-3" strings
    (PyYAML reads exponents without a dot as text) become floats."""
    if t is Any or t is None:
        return value
    if isinstance(t, types.UnionType) or typing.get_origin(t) is typing.Union:
        for arg in typing.get_args(t):
            if arg is type(None) and value is None:
                return None
            try:
                return coerce(value, arg)
            except TypeError:
                continue
        raise TypeError
    origin = typing.get_origin(t) or t
    if origin is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if origin is int:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():  # quantized samples arrive as 64.0
            return int(value)
        raise TypeError
    if origin is float:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise TypeError from None
        raise TypeError
    if origin is str:
        if isinstance(value, str):
            return value
        raise TypeError
    if origin in (list, tuple):
        if isinstance(value, (list, tuple)):
            return list(value)
        raise TypeError
    if origin is dict:
        if isinstance(value, dict):
            return value
        raise TypeError
    return value


def check_section(
    file: str,
    path: str,
    given: Any,
    schema: dict[str, tuple[Any, ...]] | None,
    nested: dict[str, dict[str, tuple[Any, ...]] | None],
) -> dict[str, Any]:
    """Fill defaults into one section and type-check it; ``nested`` holds sub-section schemas by path."""
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise SpecError(file, path, f"expected a mapping, got {type(given).__name__}")
    if schema is None:  # free-form (a timm model's keyword arguments)
        return dict(given)
    out: dict[str, Any] = {}
    for key in given:
        if key not in schema:
            raise SpecError(
                file, f"{path}.{key}", f"unknown key; allowed: {allowed(schema)}{did_you_mean(str(key), schema)}"
            )
    for key, (typ, default, *rest) in schema.items():
        kp = f"{path}.{key}"
        if kp in nested:
            out[key] = check_section(file, kp, given.get(key), nested[kp], nested)
            continue
        if key not in given or given[key] is None:
            out[key] = copy.deepcopy(default)
            continue
        value = given[key]
        try:
            value = coerce(value, typ)
        except TypeError:
            raise SpecError(file, kp, f"expected {type_name(typ)}, got {value!r}") from None
        if rest and value not in rest[0]:
            raise SpecError(
                file, kp, f"{value!r} is not allowed; allowed: {allowed(rest[0])}{did_you_mean(str(value), rest[0])}"
            )
        out[key] = value
    return out
