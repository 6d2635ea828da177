"""Dotted key paths into a spec (``train.lr``), ``--set key.path=value`` overrides, and the differences
between two specs (``--resume``'s check)."""

from __future__ import annotations

from typing import Any

import yaml

from ._schema import SpecError, schema_of
from ._sections import SCHEMA
from ._space import is_branch

_REQUIRED = object()


def get_path(d: dict[str, Any], dotted: str, default: Any = _REQUIRED) -> Any:
    """The value at a dotted path; a missing one is ``default`` when given, else KeyError."""
    cur: Any = d
    for part in dotted.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif default is _REQUIRED:
            raise KeyError(dotted)
        else:
            return default
    return cur


def set_path(d: dict[str, Any], dotted: str, value: Any) -> None:
    """Set a dotted path; keys under ``space`` are dotted paths themselves and are kept whole."""
    first, _, rest = dotted.partition(".")
    if first == "space" and rest:
        d.setdefault("space", {})
        d["space"] = d["space"] or {}
        d["space"][rest] = value
        return
    parts = dotted.split(".")
    cur = d
    for part in parts[:-1]:
        if not isinstance(cur.get(part), dict):
            cur[part] = {}
        cur = cur[part]
    cur[parts[-1]] = value


def parse_override(text: str, file: str) -> tuple[str, Any]:
    if "=" not in text:
        raise SpecError(file, "--set", f"expected key.path=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw  # not YAML: take the text as it is (a path, a name)
    return key, (raw if isinstance(value, (int, float)) and _is_str_key(key) else value)


def _is_str_key(key: str) -> bool:
    """Keys typed as strings keep override text verbatim (``--set experiment.name=123``)."""
    section, _, name = key.partition(".")
    model = SCHEMA.get(section)
    entry = schema_of(model).get(name) if model else None
    return entry is not None and entry.type is str


# --------------------------------------------------------------------------- load and validate


def override_in_branches(raw: dict[str, Any], key: str, value: Any) -> None:
    """``--set model.pretrained=false`` also wins over a branch option that fixes model.pretrained:
    an override on the command line is the user's last word on that key."""
    for k, dist in (raw.get("space") or {}).items():
        if is_branch(str(k), dist):
            for opt in next(iter(dist.values())):
                if key in opt:
                    opt[key] = value


def spec_differences(before: Any, after: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ, each with both values: ``train.epochs (12 -> 5)``."""
    if isinstance(before, dict) and isinstance(after, dict):
        out: list[str] = []
        for k in list(before) + [k for k in after if k not in before]:
            key = f"{prefix}.{k}" if prefix else str(k)
            if k not in after:
                out.append(f"{key} (removed)")
            elif k not in before:
                out.append(f"{key} (added: {_short(after[k])})")
            else:
                out += spec_differences(before[k], after[k], key)
        return out
    return [] if before == after else [f"{prefix} ({_short(before)} -> {_short(after)})"]


def _short(value: Any, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"
