"""The JSON Schema of a whole spec, from the sections' models: what an editor's YAML language server completes,
describes and underlines (``tune-run --schema``, shipped as ``spaces/tune-run.schema.json``).

It states what one key can be (type, allowed values, range, unknown keys); the rules across keys (``max_t`` against
the longest trial, a metric a binary task alone reports, ...) stay with ``resolve``, which a run always applies.
"""

from __future__ import annotations

import copy
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic import create_model as section_model

from .._contract import TrialSide
from ._sections import NAME_RE, SCHEMA
from ._space import DISTRIBUTIONS

SCHEMA_ID = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_FILE = "tune-run.schema.json"  # beside the shipped specs, in spaces/
_NUMERIC = {"integer", "number"}


def spec_schema(backend: TrialSide) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a spec file."""
    trial = backend.section_models()
    models: list[Any] = trial["model"]
    fields: dict[str, Any] = {
        "experiment": (SCHEMA["experiment"] | None, None),
        "data": (trial["data"], Field(description="what the trials read and how it is split (required)")),
        "model": (
            typing.Union[tuple(models)] | None,  # noqa: UP007  (a union of a run-time list)
            Field(
                None,
                description="the model: name selects its keys (required, unless a branch of space sets model.name)",
            ),
        ),
        "train": (trial["train"] | None, None),
        "space": (dict[str, Any] | None, Field(None, description="what the search varies: dotted key -> distribution")),
        **{name: (SCHEMA[name] | None, None) for name in ("search", "scheduler", "resources", "tracking")},
        "final": (trial["final"] | None, None),
    }
    root = section_model(
        "Spec",
        __config__=ConfigDict(extra="forbid"),
        __doc__="A tune-run study spec: one YAML file from the data to the final models (spaces/README.md).",
        **fields,
    )
    schema = root.model_json_schema()
    defs = schema["$defs"]
    for sub in defs.values():
        _tidy_section(sub)
    exp = defs["Experiment"]["properties"]
    exp["name"] = {**exp["name"], "pattern": NAME_RE.pattern}
    exp["metric"] = {**exp["metric"], "enum": [*backend.METRICS, None]}
    schema["properties"]["space"] = _space_schema(defs, models, trial, backend.BRANCH_KEYS)
    defs["ranges_number"], defs["ranges_integer"] = _ranges(integer=False), _ranges(integer=True)
    for key in ("experiment", "model", "train", "search", "scheduler", "resources", "tracking", "final"):
        schema["properties"][key].pop("default", None)
    return {"$schema": SCHEMA_ID, **schema, "title": "tune-run spec"}


def _tidy_section(section: dict[str, Any]) -> None:
    """Each key but a required one may be null (a null value means its default, as ``resolve`` reads it); titles
    say nothing the key's name does not."""
    section.pop("title", None)
    required = set(section.get("required", []))
    for key, prop in section.get("properties", {}).items():
        prop.pop("title", None)
        if key not in required:
            section["properties"][key] = _nullable(prop)


def _nullable(prop: dict[str, Any]) -> dict[str, Any]:
    if "anyOf" in prop:
        if {"type": "null"} not in prop["anyOf"]:
            prop["anyOf"].append({"type": "null"})
        return prop
    if "$ref" in prop:
        meta: dict[str, Any] = {k: prop.pop(k) for k in ("description", "default") if k in prop}
        return {"anyOf": [prop, {"type": "null"}], **meta}
    if isinstance(prop.get("type"), str):
        prop["type"] = [prop["type"], "null"]
    if "enum" in prop and None not in prop["enum"]:
        prop["enum"] = [*prop["enum"], None]
    return prop


def _value_schema(prop: dict[str, Any]) -> dict[str, Any]:
    """What one value of a key may be, without its null, default and description."""
    out = {k: v for k, v in copy.deepcopy(prop).items() if k not in ("default", "description", "title")}
    if isinstance(out.get("type"), list):
        kinds = [t for t in out["type"] if t != "null"]
        out["type"] = kinds[0] if len(kinds) == 1 else kinds
    if "anyOf" in out:
        out["anyOf"] = [s for s in out["anyOf"] if s != {"type": "null"}]
        if len(out["anyOf"]) == 1:
            out = {**out.pop("anyOf")[0], **out}
    if "enum" in out:
        out["enum"] = [v for v in out["enum"] if v is not None]
    return out


def _kinds(value: dict[str, Any]) -> set[str]:
    if "anyOf" in value:
        return set().union(*(_kinds(s) for s in value["anyOf"]))
    kinds = value.get("type", [])
    return {kinds} if isinstance(kinds, str) else set(kinds)


def _one(kind: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {kind: args}, "required": [kind], "additionalProperties": False}


def _ranges(integer: bool) -> dict[str, Any]:
    """The range distributions a numeric key takes; an integer key only those that draw integers
    (``_space.check_distribution``)."""
    number: dict[str, Any] = {"type": "integer"} if integer else {"type": "number"}
    options = []
    for kind, (nargs, what) in DISTRIBUTIONS.items():
        if nargs is None or (integer and kind in ("uniform", "loguniform")):
            continue
        item: dict[str, Any] = {"type": "integer"} if kind in ("randint", "qrandint") else number
        item = {**item, "exclusiveMinimum": 0} if "log" in kind else item
        args: dict[str, Any] = {
            "type": "array",
            "items": item,
            "minItems": nargs,
            "maxItems": nargs,
            "description": what,
        }
        options.append(_one(kind, args))
    return {"anyOf": options}


def _distribution(value: dict[str, Any], description: str) -> dict[str, Any]:
    """A search distribution over one key: grid and choice list values of the key's type; a numeric key also takes
    the ranges (``$defs``: ranges_number, ranges_integer)."""
    values = {"type": "array", "items": value, "minItems": 1}
    options = [_one("grid", values), _one("choice", values)]
    kinds = _kinds(value) or {"number"}  # a free-form key (a timm argument): any value, any range
    if kinds & _NUMERIC:
        options.append({"$ref": f"#/$defs/ranges_{'integer' if kinds <= {'integer'} else 'number'}"})
    return {"description": description, "anyOf": options}


def _space_schema(
    defs: dict[str, Any], models: list[type[BaseModel]], trial: dict[str, Any], branch_keys: typing.Iterable[str]
) -> dict[str, Any]:
    """``space``: each searchable key's distributions typed by the key; a key without a dot is a branch."""
    props: dict[str, Any] = {}

    def add(prefix: str, section: dict[str, Any]) -> None:
        for key, prop in section.get("properties", {}).items():
            if "$ref" in _value_schema(prop):  # a sub-section (data.augment): its own keys
                add(f"{prefix}{key}.", defs[_value_schema(prop)["$ref"].rsplit("/", 1)[-1]])
                continue
            dotted = f"{prefix}{key}"
            if dotted in props:  # a key several models have: any of their types
                props[dotted]["anyOf"] += _distribution(_value_schema(prop), "")["anyOf"]
                continue
            props[dotted] = _distribution(_value_schema(prop), prop.get("description", ""))

    for name in ("data", "train"):
        add(f"{name}.", defs[trial[name].__name__])
    for model in models:
        add("model.", defs[model.__name__])
    for key in [*trial["not_searchable"], *branch_keys]:
        props[key] = False
    any_value: dict[str, Any] = {}
    branch_option = {"type": "object", "minProperties": 1, "additionalProperties": any_value}
    branch = {
        "description": "a branch: options that each set several keys (e.g. the model family and its arguments)",
        "type": "object",
        "minProperties": 1,
        "maxProperties": 1,
        "properties": {kind: {"type": "array", "items": branch_option, "minItems": 1} for kind in ("grid", "choice")},
        "additionalProperties": False,
    }
    return {
        "description": "what the search varies: a dotted key of data, model or train -> a distribution, "
        "e.g. train.lr: {loguniform: [1.0e-4, 1.0e-2]}",
        "type": ["object", "null"],
        "properties": props,
        # timm/tv models take any keyword argument of their library
        "patternProperties": {r"^[^.]+$": branch, r"^model\.": _distribution({}, "a model argument")},
        "additionalProperties": False,
    }
