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
from pydantic.json_schema import GenerateJsonSchema

from .._contract import TrialSide
from ._distributions import INT_DRAWS, RANGES
from ._rules import Study
from ._sections import SCHEMA, Experiment

SCHEMA_ID = "https://json-schema.org/draft/2020-12/schema"
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
    schema = root.model_json_schema(schema_generator=_ExamplesInOrder)
    defs = schema["$defs"]
    for sub in defs.values():
        _tidy_section(sub)
    rules = Experiment.json_schema(dict(backend.METRICS), dict(backend.COST_METRICS))
    experiment = defs["Experiment"]
    for key, typed in rules.pop("properties").items():
        experiment["properties"][key] = {**experiment["properties"][key], **typed}
    experiment.update(rules)
    schema["properties"]["space"] = _space_schema(defs, models, trial, backend.BRANCH_KEYS)
    for dotted in backend.BRANCH_KEYS:  # model.name: the section's keys are those of the model it names
        section, _, key = dotted.partition(".")
        schema["properties"][section] = _selected_by(key, schema["properties"][section], defs)
    defs["ranges_number"], defs["ranges_integer"] = _ranges(integer=False), _ranges(integer=True)
    for key in ("experiment", "model", "train", "search", "scheduler", "resources", "tracking", "final"):
        schema["properties"][key].pop("default", None)
    schema["allOf"] = Study.json_schema()
    return {"$schema": SCHEMA_ID, **schema, "title": "tune-run spec"}


def _selected_by(key: str, prop: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """A section that is one of several models, told apart by ``key`` (its value a const or a pattern in each): if
    ``key`` is one model's, then the section is that model. An editor then completes and checks the keys of the model
    named, and its error names the key that model lacks, not 'none of 7 schemas matched'."""
    members = [m["$ref"] for m in _value_schema(prop)["anyOf"]]
    cases, values = [], []
    for ref in members:
        named = defs[ref.rsplit("/", 1)[-1]]["properties"][key]
        value = {k: named[k] for k in ("const", "pattern") if k in named}
        values.append(value)
        # "type": an if without it holds for null (nothing to look into), which would apply every model's then
        cases.append({"if": {"type": "object", "properties": {key: value}, "required": [key]}, "then": {"$ref": ref}})
    names = [v["const"] for v in values if "const" in v]
    choices = [{"enum": names}, *(v for v in values if "const" not in v)]
    return {
        "description": prop.get("description", ""),
        "type": ["object", "null"],
        "properties": {key: {"description": f"one of {', '.join(names)}, or a library's model", "anyOf": choices}},
        "allOf": cases,
    }


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
    if "$ref" in prop:
        meta: dict[str, Any] = {k: prop.pop(k) for k in ("description", "default") if k in prop}
        return {"anyOf": [prop, {"type": "null"}], **meta}
    if isinstance(prop.get("type"), str):  # also beside an anyOf (resources.gpu's fraction-or-whole)
        prop["type"] = [prop["type"], "null"]
    if "enum" in prop and None not in prop["enum"]:
        prop["enum"] = [*prop["enum"], None]
    if "anyOf" in prop and {"type": "null"} not in prop["anyOf"]:
        prop["anyOf"].append({"type": "null"})
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
    """The range distributions a numeric key takes, their arguments typed by their models (``_distributions.RANGES``); an
    integer key takes those that draw integers, with integer arguments."""
    options = []
    for kind, model in RANGES.items():
        if integer and kind not in INT_DRAWS:
            continue
        props = model.model_json_schema()["properties"]
        args = [{k: v for k, v in props[f].items() if k != "title"} for f in model.model_fields]
        if integer:
            args = [{**a, "type": "integer"} for a in args]
        n = len(args)
        options.append(
            _one(kind, {"type": "array", "prefixItems": args, "minItems": n, "maxItems": n, "description": model.WHAT})
        )
    return {"anyOf": options}


def _distribution(value: dict[str, Any], description: str) -> dict[str, Any]:
    """A search distribution over one key: grid and choice list values of the key's type; a numeric key also takes
    the ranges (``$defs``: ranges_number, ranges_integer)."""
    values = {"type": "array", "items": value, "minItems": 1}
    options = [_one("grid", values), _one("choice", values)]
    kinds = _kinds(value) or {"number"}  # a free-form key (a timm argument): any value, any range
    if kinds & _NUMERIC:
        ranges: dict[str, Any] = {"$ref": f"#/$defs/ranges_{'integer' if kinds <= {'integer'} else 'number'}"}
        bounds = _bounds(value)
        if bounds:  # both ends of a range inside the key's own (a step q is no value of the key)
            ranges = {"allOf": [ranges, {"additionalProperties": {"prefixItems": [bounds, bounds]}}]}
        options.append(ranges)
    return {"description": description, "anyOf": options}


def _bounds(value: dict[str, Any]) -> dict[str, Any]:
    """A numeric key's range (minimum, exclusiveMaximum, ...), also where it is one member of a union."""
    words = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
    for member in [value, *value.get("anyOf", [])]:
        if _kinds(member) & _NUMERIC and any(w in member for w in words):
            return {w: member[w] for w in words if w in member}
    return {}


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


# --------------------------------------------------------------------------- the key reference (spaces/README.md)

REFERENCE_ORDER = ("experiment", "data", "model", "train", "search", "scheduler", "resources", "tracking", "final")
_COMMENT_AT = 27  # the column comments start at, as in the hand-written YAML this replaced
_WIDTH = 118


def key_reference(schema: dict[str, Any]) -> str:
    """spaces/README.md's key reference from the schema: every section's keys with their defaults (a required key:
    its example) and meanings as one YAML block, the model section as the first model's (the trial side's example),
    then each other model's own keys as a table (``tune-run --schema reference``)."""
    defs, props = schema["$defs"], schema["properties"]
    lines = ["```yaml"]
    models = [defs[str(case["then"]["$ref"]).rsplit("/", 1)[-1]] for case in props["model"]["allOf"]]
    for name in REFERENCE_ORDER:
        if name == "model":  # the first model as the example, its own keys inline; the others' in tables below
            example = models[0]
            keys = dict(example["properties"])
            names = [m["properties"]["name"].get("const", m["properties"]["name"].get("description")) for m in models]
            keys["name"] = {**keys["name"], "default": keys["name"]["const"], "description": " | ".join(names)}
            lines += _yaml_lines(name, {"description": props[name]["description"], "properties": keys}, defs, 0)
            lines.append("")
            continue
        lines += [*_yaml_lines(name, defs[_ref_name(props[name])], defs, indent=0), ""]
    lines[-1] = "```"
    for model_def in models[1:]:
        own = {k: v for k, v in model_def["properties"].items() if k not in ("name", "freeze")}
        if not own:
            continue
        lines += ["", f"`model.name: {model_def['properties']['name']['const']}`", "", "| key | default | meaning |"]
        lines.append("|---|---|---|")
        lines += [f"| `{k}` | `{_yaml_value(v.get('default'))}` | {v.get('description', '')} |" for k, v in own.items()]
    return "\n".join(lines) + "\n"


def _ref_name(prop: dict[str, Any]) -> str:
    value = _value_schema(prop)
    ref = value["$ref"] if "$ref" in value else value["allOf"][0]["$ref"]
    return str(ref).rsplit("/", 1)[-1]


class _ExamplesInOrder(GenerateJsonSchema):
    """pydantic sorts a schema's keys, inside examples too: experiment.objectives' example, whose order means
    something (the first objective is the study's metric), read latency_ms first in the schema and the reference."""

    def _sort_recursive(self, value: Any, parent_key: str | None = None) -> Any:
        return value if parent_key == "examples" else super()._sort_recursive(value, parent_key)


def _yaml_value(value: Any) -> str:
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=1000, sort_keys=False).strip()  # order can matter
    return text[: -len("...")].strip() if text.endswith("...") else text


def _yaml_lines(key: str, section: dict[str, Any], defs: dict[str, Any], indent: int) -> list[str]:
    pad = " " * indent
    head = _commented(f"{pad}{key}:", section.get("description", ""))
    lines = head
    for name, prop in section.get("properties", {}).items():
        value = _value_schema(prop)
        if "$ref" in value:  # a sub-section (data.augment)
            sub = defs[_ref_name(prop)]
            lines += _yaml_lines(name, {**sub, "description": prop.get("description", "")}, defs, indent + 2)
            continue
        shown = prop["examples"][0] if prop.get("examples") else prop.get("default")  # a required key's example
        lines += _commented(f"{pad}  {name}: {_yaml_value(shown)}", prop.get("description", ""))
    return lines


def _commented(text: str, comment: str) -> list[str]:
    """``text`` with ``comment`` from column _COMMENT_AT, wrapped onto comment lines of its own."""
    import textwrap

    if not comment:
        return [text]
    at = max(_COMMENT_AT, len(text) + 1)
    wrapped = textwrap.wrap(comment, _WIDTH - at - 2) or [""]
    first = f"{text:<{at}}# {wrapped[0]}"
    return [first, *(f"{'':<{at}}# {more}" for more in wrapped[1:])]
