"""Study specs: load YAML, apply ``--set`` overrides, fill defaults, validate, resolve.

Every problem ends as one ``SpecError`` line naming the file, the key path and what is allowed.
The sections ``data``, ``model`` and ``train`` belong to the trial backend, which supplies their
schemas and semantic checks; this module knows only their shape.
"""

from __future__ import annotations

import copy
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .._contract import TrialSide
from ._distributions import BranchError, check_branch, check_distribution, option_label, option_parts
from ._files import read_yaml as read_yaml_file
from ._keys import get_path, override_in_branches, parse_override, set_path
from ._rules import Study, fill_across, fill_max_t, spec_epochs
from ._schema import SpecError, allowed, check_rules, check_section, check_value, did_you_mean, key_rules, schema_of
from ._sections import BACKEND_SECTIONS, SCHEMA, TOP_LEVEL
from ._space import flat_space, is_branch


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A spec file's mapping of sections; a damaged or empty file is one SpecError line."""
    raw = read_yaml_file(path, "spec file")
    if raw is None:
        raise SpecError(str(path), "", f"is empty; a spec is a mapping of sections ({', '.join(TOP_LEVEL)})")
    if not isinstance(raw, dict):
        raise SpecError(
            str(path), "", f"expected a mapping of sections ({', '.join(TOP_LEVEL)}), got {type(raw).__name__}"
        )
    return raw


def load_spec(
    path: str | Path,
    backend: TrialSide,
    overrides: typing.Sequence[str] = (),
    smoke: bool = False,
    recorded: bool = False,
) -> dict[str, Any]:
    """Read, override, fill and validate a spec file; returns the resolved spec. ``recorded``: a spec a run
    wrote (a model folder's), read as the settings it holds."""
    file = str(path)
    raw = read_yaml(path)
    if recorded:
        raw = backend.settings_only(raw)
    for text in overrides:
        key, value = parse_override(text, file)
        set_path(raw, key, value)
        override_in_branches(raw, key, value)
    spec = resolve(raw, backend, file=file, default_name=Path(path).stem)
    if smoke:
        spec = resolve(smoke_spec(spec, backend), backend, file=file)
    return spec


def resolve(
    raw: dict[str, Any], backend: TrialSide, *, file: str = "<spec>", default_name: str | None = None
) -> dict[str, Any]:
    """Fill defaults into a raw spec mapping and validate everything; raises SpecError."""
    for key in raw:
        if key not in TOP_LEVEL:
            raise SpecError(
                file, str(key), f"unknown section; allowed: {', '.join(TOP_LEVEL)}{did_you_mean(str(key), TOP_LEVEL)}"
            )
    raw = _keys_from_branch(raw, backend.BRANCH_KEYS)
    for key in ("data", "model"):
        if not raw.get(key):
            raise SpecError(file, key, "section is required")
    spec: dict[str, Any] = {}
    for section in ("experiment", "search", "scheduler", "resources", "tracking"):
        spec[section] = check_section(file, section, raw.get(section), SCHEMA[section], {})
    schemas = backend.section_schemas(raw)
    for section in BACKEND_SECTIONS + ("final",):
        spec[section] = check_section(file, section, raw.get(section), schemas[section], schemas)
    if spec["final"]["after_search"] is None:  # a final section in the file asks for final training
        spec["final"]["after_search"] = bool(raw.get("final"))
    for section, key in (("data", "dataset"), ("model", "name")):
        if not spec[section].get(key):
            raise SpecError(file, f"{section}.{key}", "is required")
    fill_across(file, spec, default_name, backend.METRICS, backend.COST_METRICS)
    spec["space"] = _check_space(file, raw.get("space"), spec, schemas, raw, backend)
    fill_max_t(spec, given=(raw.get("scheduler") or {}).get("max_t") is not None)
    check_rules(file, "", Study, spec)
    for path, msg in backend.check(spec):
        raise SpecError(file, path, msg)
    for key, dist in flat_space(spec["space"]).items():
        _each_value_fits(file, f"space.{key}", key, dist, spec, schemas)
    out = {k: spec[k] for k in TOP_LEVEL}
    for i, overrides in enumerate(spec["search"]["sizes"]):  # each a spec of its own: checked as the plan will use it
        with_size(out, overrides, backend, file=file, where=f"search.sizes[{i}]")
    return out


# A size changes what an epoch costs, not how many there are: the plan's shares and the scheduler count in
# train.epochs, which every size shares.
_SIZE_SECTIONS = ("model.", "train.")


def with_size(
    spec: dict[str, Any], overrides: dict[str, Any], backend: TrialSide, *, file: str = "<spec>", where: str = "size"
) -> dict[str, Any]:
    """``spec`` (resolved) with one of ``search.sizes`` applied and resolved again (its own sizes left out): a
    SpecError names ``where`` and the key."""
    raw = copy.deepcopy(spec)
    raw["search"]["sizes"] = []
    for key, value in overrides.items():
        if not str(key).startswith(_SIZE_SECTIONS) or key == "train.epochs":
            raise SpecError(
                file,
                f"{where}.{key}",
                "a size sets model.* and train.* keys, not train.epochs (every size trains as long)",
            )
        set_path(raw, str(key), value)
    try:
        return resolve(raw, backend, file=file)
    except SpecError as err:
        raise SpecError(file, f"{where}.{err.path}" if err.path else where, err.message) from None


def _keys_from_branch(raw: dict[str, Any], keys: typing.Iterable[str]) -> dict[str, Any]:
    """A key a branch chooses for the whole spec (the trial side's ``BRANCH_KEYS``, e.g. the model family) may be
    left out of its section: the branch's first option's value stands in."""
    for dotted in keys:
        section, _, leaf = dotted.partition(".")
        current = raw.get(section) or {}
        if isinstance(current, dict) and current.get(leaf):
            continue
        for key, dist in (raw.get("space") or {}).items():
            if not (is_branch(str(key)) and isinstance(dist, dict) and len(dist) == 1):
                continue
            options = next(iter(dist.values()))
            if isinstance(options, list) and options and all(isinstance(o, dict) and dotted in o for o in options):
                base = current if isinstance(current, dict) else {}
                raw = {**raw, section: {**base, leaf: options[0][dotted]}}
                break
    return raw


def _check_space(
    file: str,
    space: Any,
    spec: dict[str, Any],
    schemas: typing.Mapping[str, type[BaseModel] | None],
    raw: dict[str, Any] | None = None,
    backend: TrialSide | None = None,
) -> dict[str, Any]:
    if space is None:
        return {}
    if not isinstance(space, dict):
        raise SpecError(file, "space", "expected a mapping of dotted key paths to distributions")
    algo = spec["search"]["algorithm"]
    out: dict[str, Any] = {}
    for key, dist in space.items():
        kp = f"space.{key}"
        if is_branch(str(key), dist):
            if raw is None or backend is None:
                raise SpecError(file, kp, "a branch (a key without a dot) cannot sit inside another branch")
            out[key] = _check_branch(file, kp, dist, spec, raw, backend)
            continue
        typ = _key_type(file, kp, str(key), schemas, backend.BRANCH_KEYS if backend else {})
        try:
            out[key] = check_distribution(dist, typ, algo)
        except ValueError as err:
            raise SpecError(file, kp, str(err)) from None
        why = backend.checkpoint_conflict(str(key)) if backend and spec["scheduler"]["name"] == "pbt" else None
        if why:  # PBT resumes a trial from another trial's checkpoint, with this key perturbed
            raise SpecError(
                file,
                kp,
                f"pbt cannot perturb {key}: {why}, so another trial's checkpoint would not "
                f"load; search it with another scheduler",
            )
    return out


def _each_value_fits(
    file: str, kp: str, key: str, dist: dict[str, list[Any]], spec: dict[str, Any], schemas: typing.Mapping[str, Any]
) -> None:
    """Every value a distribution can draw (each value of a grid or choice, both ends of a range as a trial draws
    them) is one the key takes when set in the spec: its type, allowed values, range and its own rules. Rules across
    keys are not applied: a trial draws its keys together, from the spec's values and the space's."""
    parent, _, leaf = key.rpartition(".")
    model = schemas.get(parent)
    entry = schema_of(model).get(leaf) if model is not None else None
    if model is None or entry is None:  # a library model's keyword argument: checked when the model is built
        return
    ((kind, args),) = dist.items()
    ranged = kind not in ("grid", "choice")
    for value in _ends(kind, args) if ranged else args:
        where = f"{kind} reaches {value!r}: " if ranged else ""
        try:
            value = check_value(file, kp, leaf, entry, value)
        except SpecError as err:
            raise SpecError(file, kp, f"{where}{err.message}") from None
        for message in key_rules(model, {**get_path(spec, parent), leaf: value}, leaf):
            raise SpecError(file, kp, f"{where}{message}")


def _ends(kind: str, args: list[Any]) -> list[Any]:
    """The least and largest value a range draws: a quantized one rounds its ends to its step, as Tune does."""
    if kind in ("quniform", "qloguniform", "qrandint"):
        q = args[2]
        return [type(q)(round(a / q) * q) for a in args[:2]]
    return list(args[:2])


def _check_branch(
    file: str, kp: str, dist: Any, spec: dict[str, Any], raw: dict[str, Any], backend: TrialSide
) -> dict[str, list[dict[str, Any]]]:
    """A conditional sub-space: its shape and labels by its model (``_distributions``), then each option checked as
    the whole spec would be with it chosen."""
    others = {k: v for k, v in (raw.get("space") or {}).items() if k != kp[len("space.") :]}
    try:
        kind, options = check_branch(dist, spec["search"]["algorithm"], spec["scheduler"]["name"], others)
    except BranchError as err:
        raise SpecError(file, f"{kp}.{err.where}" if err.where else kp, err.message) from None
    out: list[dict[str, Any]] = []
    for i, opt in enumerate(options):
        okp = f"{kp}.{kind}[{i}]"
        label = option_label(opt, i)
        consts, dists = option_parts(opt)
        sub = backend.apply_config(raw, consts)  # the whole spec with this option chosen
        sub["scheduler"] = {**(sub.get("scheduler") or {}), "max_t": None}  # checked once, over all options
        sub["space"] = {**{k: v for k, v in (raw.get("space") or {}).items() if not is_branch(str(k))}, **dists}
        try:
            res = resolve(sub, backend, file=file, default_name=spec["experiment"]["name"])
        except SpecError as err:
            where = err.path[len("space.") :] if err.path.startswith("space.") else err.path
            if err.path.startswith("space.") and where in sub["space"] and where not in dists:
                raise  # a key searched outside the branch: its own place names it
            raise SpecError(file, f"{okp}.{where}", err.message) from None
        norm = {"name": label} if "name" in opt else {}
        norm.update({k: get_path(res, str(k)) for k in consts})
        norm.update({k: res["space"][k] for k in dists})
        out.append(norm)
    return {kind: out}


def _key_type(
    file: str,
    kp: str,
    key: str,
    schemas: typing.Mapping[str, type[BaseModel] | None],
    branch_keys: typing.Mapping[str, str],
) -> Any:
    """The schema type of a searched dotted path (Any for free-form model args)."""
    section, _, rest = key.partition(".")
    if section not in BACKEND_SECTIONS or not rest:
        raise SpecError(
            file,
            kp,
            f"searched keys are dotted paths into {', '.join(BACKEND_SECTIONS)}, "
            f"e.g. train.lr (a key without a dot is a branch whose options are mappings)",
        )
    parent_path, _, leaf = key.rpartition(".")
    if parent_path not in schemas:
        raise SpecError(
            file,
            kp,
            f"{parent_path!r} is not a section; sections: "
            f"{', '.join(k for k in schemas)}{did_you_mean(parent_path, schemas)}",
        )
    model = schemas[parent_path]
    if model is None:
        return Any
    schema = schema_of(model)
    if leaf not in schema and model.model_config.get("extra") == "allow":  # a library model's keyword argument
        return Any
    if leaf not in schema or f"{parent_path}.{leaf}" in schemas:
        raise SpecError(
            file, kp, f"{parent_path} has no key {leaf!r}; keys: {allowed(schema)}{did_you_mean(leaf, schema)}"
        )
    if key in branch_keys:  # its value decides which other keys exist: a branch (conditional sub-space)
        raise SpecError(file, kp, f"{key} cannot be searched in a flat space; {branch_keys[key]}")
    return schema[leaf].type


def smoke_spec(spec: dict[str, Any], backend: TrialSide) -> dict[str, Any]:
    """Shrink a resolved spec to a run of about a minute: the trial side shrinks its sections (epochs,
    images); here, at most 2 trials, one grid point and one final seed."""
    s = backend.smoke(spec)
    s["search"]["num_samples"] = min(s["search"]["num_samples"] or 2, 2)

    # One grid point: the first value of every grid (a grid branch: its first option).
    # train.epochs leaves the space (and every option): the smoke's epochs hold for all trials.
    def first(space: dict[str, Any]) -> dict[str, Any]:
        return {
            k: ({"grid": v["grid"][:1]} if isinstance(v, dict) and "grid" in v and not is_branch(k) else v)
            for k, v in space.items()
            if k != "train.epochs"
        }

    s["space"] = first(s["space"])
    for key, dist in s["space"].items():
        if is_branch(key):
            ((kind, options),) = dist.items()
            options = options[:1] if kind == "grid" else options
            s["space"][key] = {kind: [first(o) for o in options]}
    sched = s["scheduler"]
    sched["max_t"] = min(sched["max_t"], spec_epochs(s))
    sched["grace_period"] = 1
    sched["perturbation_interval"] = 1
    s["final"]["seeds"] = s["final"]["seeds"][:1]
    s["experiment"]["name"] = s["experiment"]["name"] + "-smoke"
    return s
