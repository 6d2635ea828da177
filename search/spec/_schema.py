"""Schema checking shared by every part of a spec: the one-line error, type coercion, sections.

No imports from the rest of ``search``: ``_space`` and ``_spec`` both build on it.
"""

from __future__ import annotations

import copy
import difflib
import functools
import operator
import re
import types
import typing
from typing import Any, Literal, NamedTuple

import annotated_types
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

# The error type of a section model's rule across its keys (a ``model_validator``): its context names the key the
# one-line error names. The trial side's models raise the same (search/_contract.py).
RULE = "spec_rule"
# A name that is also a folder and a label: an experiment's name, a branch option's.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def rule(key: str, message: str) -> PydanticCustomError:
    """What a section model's validator raises when a rule across its keys breaks: ``key`` and the message line."""
    return PydanticCustomError(RULE, "{message}", {"key": key, "message": message})


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


def _is_union(t: Any) -> bool:
    return isinstance(t, types.UnionType) or typing.get_origin(t) is typing.Union


def is_numeric(t: Any) -> bool:
    """Whether a key of type ``t`` can hold a number (a union with one; never a list of them)."""
    if _is_union(t):
        return any(is_numeric(a) for a in typing.get_args(t))
    return t in (int, float) or t is Any


def type_name(t: Any) -> str:
    if _is_union(t):
        return " or ".join(type_name(a) for a in typing.get_args(t))
    if typing.get_origin(t) is list and typing.get_args(t):  # list[int]: "a list of integers"
        return f"a list of {type_name(typing.get_args(t)[0]).split(' ', 1)[-1]}s"
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
    if _is_union(t):
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
        if not isinstance(value, (list, tuple)):
            raise TypeError
        item = typing.get_args(t)[0] if origin is list and typing.get_args(t) else Any
        return [coerce(v, item) for v in value]
    if origin is dict:
        if isinstance(value, dict):
            return value
        raise TypeError
    return value


class Key(NamedTuple):
    """One key of a section as the checks read it from the section's model."""

    type: Any  # what ``coerce`` checks: the annotation without None, a Literal as the type of its values
    default: Any
    allowed: tuple[Any, ...] | None  # a Literal's values
    bounds: tuple[tuple[str, Any], ...]  # ((">=", 1), ("<", 1)): the field's ge/gt/le/lt
    min_length: int = 0  # a list's fewest values (the field's min_length)


_OPS = {
    annotated_types.Ge: (">=", "ge"),
    annotated_types.Gt: (">", "gt"),
    annotated_types.Le: ("<=", "le"),
    annotated_types.Lt: ("<", "lt"),
}


def _plain(t: Any) -> tuple[Any, tuple[Any, ...] | None]:
    """(type to coerce to, allowed values): None dropped (a null value means the default), a Literal read as the
    type of its values and, alone, as the allowed values, a constrained union member as its type (its model's
    validator states the constraint), ``list[int]`` kept (each value is checked; a list is never numeric to a
    search-space range)."""
    if typing.get_origin(t) is typing.Annotated:  # a union's constrained member: its validator states the range
        return _plain(typing.get_args(t)[0])
    if typing.get_origin(t) is Literal:
        values = typing.get_args(t)
        return type(values[0]), values
    if _is_union(t):
        args = [a for a in typing.get_args(t) if a is not type(None)]
        if len(args) == 1:
            return _plain(args[0])
        plain = tuple(dict.fromkeys(_plain(a)[0] for a in args))
        return functools.reduce(lambda a, b: a | b, plain), None
    return t, None  # list[int] checks each value (never numeric to a search-space range: its origin is a list)


@functools.cache
def schema_of(model: type[BaseModel]) -> dict[str, Key]:
    """The keys of a section model, in declaration order."""
    out = {}
    for name, field in model.model_fields.items():
        typ, allowed_values = _plain(field.annotation)
        bounds = tuple(
            (op, getattr(m, attr)) for m in field.metadata for cls, (op, attr) in _OPS.items() if isinstance(m, cls)
        )
        min_length = max([m.min_length for m in field.metadata if isinstance(m, annotated_types.MinLen)], default=0)
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):  # a nested section: filled by its own model
            default = None
        out[name] = Key(typ, default, allowed_values, bounds, min_length)
    return out


def bounds_rule(key: str, bounds: tuple[tuple[str, Any], ...]) -> str:
    """``0 < val_fraction < 1``, ``epochs >= 1``: a key's range as its error line states it."""
    lower = [(op, v) for op, v in bounds if op.startswith(">")]
    upper = [(op, v) for op, v in bounds if op.startswith("<")]
    if lower and upper:
        (lop, lo), (uop, hi) = lower[0], upper[0]
        return f"{lo} {lop.replace('>', '<')} {key} {uop} {hi}"
    return " and ".join(f"{key} {op} {v}" for op, v in bounds)


_COMPARE = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


def in_bounds(value: Any, bounds: tuple[tuple[str, Any], ...]) -> bool:
    return all(_COMPARE[op](value, v) for op, v in bounds)


def check_section(
    file: str,
    path: str,
    given: Any,
    model: type[BaseModel] | None,
    nested: typing.Mapping[str, type[BaseModel] | None],
) -> dict[str, Any]:
    """Fill defaults into one section and check each key against its model: type, allowed values, range;
    ``nested`` holds sub-sections' models by path (``data.augment``)."""
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise SpecError(file, path, f"expected a mapping, got {type(given).__name__}")
    if model is None:  # free-form
        return dict(given)
    schema = schema_of(model)
    extra = model.model_config.get("extra") == "allow"  # a timm model: any keyword argument besides its own keys
    out: dict[str, Any] = {}
    for key in given:
        if key not in schema and not extra:
            raise SpecError(
                file, f"{path}.{key}", f"unknown key; allowed: {allowed(schema)}{did_you_mean(str(key), schema)}"
            )
    for key, entry in schema.items():
        kp = f"{path}.{key}"
        if kp in nested:
            out[key] = check_section(file, kp, given.get(key), nested[kp], nested)
        elif key not in given or given[key] is None:
            out[key] = copy.deepcopy(entry.default)
        else:
            out[key] = check_value(file, kp, key, entry, given[key])
    if extra:
        out.update({k: v for k, v in given.items() if k not in schema})
    check_rules(file, path, model, out)
    return out


def check_value(file: str, kp: str, key: str, entry: Key, value: Any) -> Any:
    """One value of a key (at ``kp``) against its entry: type, allowed values, length, range; returns it coerced."""
    try:
        value = coerce(value, entry.type)
    except TypeError:
        raise SpecError(file, kp, f"expected {type_name(entry.type)}, got {value!r}") from None
    if entry.allowed and value not in entry.allowed:
        raise SpecError(
            file,
            kp,
            f"{value!r} is not allowed; allowed: {allowed(entry.allowed)}{did_you_mean(str(value), entry.allowed)}",
        )
    if isinstance(value, list) and len(value) < entry.min_length:
        raise SpecError(
            file, kp, f"at least {entry.min_length} value{'s' * (entry.min_length > 1)} must be given, got {value!r}"
        )
    if entry.bounds and isinstance(value, (int, float)) and not in_bounds(value, entry.bounds):
        raise SpecError(file, kp, f"{bounds_rule(key, entry.bounds)} must hold, got {key}={value}")
    return value


def key_rules(model: type[BaseModel], section: dict[str, Any], key: str) -> list[str]:
    """What the model's rules of ``key`` alone (its field validators) say of the section's value: the messages of
    the broken ones. Rules across keys (model validators) are left out: a search draws keys together."""
    try:
        model.model_validate(section)
    except ValidationError as err:
        return [str((e.get("ctx") or {})["message"]) for e in err.errors() if e["type"] == RULE and e["loc"] == (key,)]
    return []


def check_rules(
    file: str, path: str, model: type[BaseModel], section: dict[str, Any], context: dict[str, Any] | None = None
) -> None:
    """The section model's rules across its keys (its validators), on the filled section: the first broken one as
    the one-line error. Other validation errors are the checks' above, which have said what they refuse.
    ``context``: what a rule needs from beyond the section (the trial side's metrics)."""
    try:
        model.model_validate(section, context=context)
    except ValidationError as err:
        for e in err.errors():
            if e["type"] == RULE:
                ctx = e.get("ctx") or {}
                raise SpecError(file, f"{path}.{ctx['key']}" if path else ctx["key"], str(ctx["message"])) from None
