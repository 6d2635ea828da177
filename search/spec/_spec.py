"""Study specs: load YAML, apply ``--set`` overrides, fill defaults, validate, resolve.

Every problem ends as one ``SpecError`` line naming the file, the key path and what is allowed.
The sections ``data``, ``model`` and ``train`` belong to the trial backend, which supplies their
schemas and semantic checks; this module knows only their shape.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import yaml

from .._contract import TrialSide
from ._budget import DEFAULT_SPLIT, check_budget
from ._files import dump_spec
from ._files import read_yaml as read_yaml_file
from ._schema import SpecError, allowed, check_section, coerce, did_you_mean
from ._space import DISTRIBUTIONS, check_distribution, is_branch, option_label, option_parts, searched_keys

ALGORITHMS = ("random", "grid", "optuna", "bohb")
SCHEDULERS = ("fifo", "asha", "hyperband", "median", "pbt")
FIDELITIES = ("epochs", "data")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

# key -> (type, default[, allowed values]); the time unit of every scheduler is the epoch.
SCHEMA: dict[str, dict[str, tuple[Any, ...]]] = {
    "experiment": {
        "name": (str, None),  # default: the spec file's stem
        "metric": (str, "val_acc"),  # one of the trial side's METRICS
        "mode": (str, None, ("max", "min")),  # default: the metric's better direction
        "output_dir": (str, "runs"),
        "description": (str, ""),
    },
    "search": {
        "algorithm": (str, "random", ALGORITHMS),
        "num_samples": (int, None),  # samples (random/optuna/bohb), or repeats of the grid; None = sized
        # from search.budget when there is one, else 1
        "max_concurrent": (int, 0),  # 0 = as many as the resources allow
        "seed": (int, 0),
        "epochs": (int | str | None, None),  # the search's trials: null = train.epochs; auto = sized from the budget
        "recipe_first": (bool, False),  # the spec's own values of the searched keys are the first trial
        # Keep trial processes (and their imports) alive between trials: a new process costs about 4 s of a
        # 2-core CPU per trial (6 one-epoch trials: 28 s without, 7 s with). The reset that reuses one waits for
        # the previous trial to end (trainables/ray_adapter.py, RESET_TIMEOUT_S).
        "reuse_actors": (bool, True),
        "budget": (str, None),  # 45s | 30m | 2h | 1.5gpu-h | 400epochs: search + final training (_budget.py)
        "budget_split": (float, DEFAULT_SPLIT),  # the search's share of the budget; final training gets the rest
        # Seconds with trials paused and none running before the study ends (exit 1; --resume goes on): a
        # scheduler that never resumes its paused trials would otherwise keep it waiting for ever.
        "stall_timeout_s": (float, 600.0),
    },
    "scheduler": {
        "name": (str, "fifo", SCHEDULERS),
        "max_t": (int, None),  # epochs; default train.epochs
        "grace_period": (int, 1),  # asha, median: epochs before a trial may be stopped
        "reduction_factor": (float, 3.0),  # asha, hyperband
        "brackets": (int, 1),  # asha
        "min_samples_required": (int, 3),  # median
        "perturbation_interval": (int, 2),  # pbt, epochs
        "quantile_fraction": (float, 0.25),  # pbt
        "resample_probability": (float, 0.25),  # pbt
        "fidelity": (str, "epochs", FIDELITIES),  # asha, hyperband: what rungs grow (data: also the training set)
    },
    "resources": {
        "cpu": (float, 1.0),
        "gpu": (float, 0.0),  # fractions pack several trials on one GPU
        "max_failures": (int, 3),  # retries of a trial whose process or node died, from its last checkpoint
    },
    "tracking": {
        "mlflow_uri": (str, "sqlite:///mlflow.db"),  # relative to the working directory
        "mlflow_experiment": (str, None),  # default: experiment.name
        "parent_run_id": (str, None),  # nest runs under this MLflow run (best.yaml: the study's run)
        "enabled": (bool, True),
    },
}
BACKEND_SECTIONS = ("data", "model", "train")
TOP_LEVEL = ("experiment", "data", "model", "train", "space", "search", "scheduler", "resources", "tracking", "final")


# --------------------------------------------------------------------------- paths and overrides


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
    entry = SCHEMA.get(section, {}).get(name)
    return entry is not None and entry[0] is str


# --------------------------------------------------------------------------- load and validate


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


def _override_in_branches(raw: dict[str, Any], key: str, value: Any) -> None:
    """``--set model.pretrained=false`` also wins over a branch option that fixes model.pretrained:
    an override on the command line is the user's last word on that key."""
    for k, dist in (raw.get("space") or {}).items():
        if is_branch(str(k), dist):
            for opt in next(iter(dist.values())):
                if key in opt:
                    opt[key] = value


def load_spec(
    path: str | Path, backend: TrialSide, overrides: typing.Sequence[str] = (), smoke: bool = False
) -> dict[str, Any]:
    """Read, override, fill and validate a spec file; returns the resolved spec."""
    file = str(path)
    raw = read_yaml(path)
    for text in overrides:
        key, value = parse_override(text, file)
        set_path(raw, key, value)
        _override_in_branches(raw, key, value)
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
    seeds = spec["final"]["seeds"]
    if not seeds or not all(isinstance(x, int) and not isinstance(x, bool) for x in seeds):
        raise SpecError(file, "final.seeds", f"a non-empty list of integers, got {seeds!r}")
    for section, key in (("data", "dataset"), ("model", "name")):
        if not spec[section].get(key):
            raise SpecError(file, f"{section}.{key}", "is required")
    _check_orchestration(file, spec, default_name)
    _check_metric(file, spec["experiment"], backend.METRICS)
    spec["space"] = _check_space(file, raw.get("space"), spec, schemas, raw, backend)
    if spec["search"]["epochs"] is not None and "train.epochs" in searched_keys(spec["space"]):
        raise SpecError(
            file,
            "search.epochs",
            "the space searches train.epochs, so the trials' length is not "
            "search.epochs' to set: remove one of the two",
        )
    _check_max_t(file, spec, given=(raw.get("scheduler") or {}).get("max_t") is not None)
    _check_pbt_schedule(file, spec)
    for path, msg in backend.check(spec):
        raise SpecError(file, path, msg)
    return {k: spec[k] for k in TOP_LEVEL}


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


def _check_orchestration(file: str, spec: dict[str, Any], default_name: str | None) -> None:
    exp, search, sched, res = spec["experiment"], spec["search"], spec["scheduler"], spec["resources"]
    exp["name"] = exp["name"] or default_name
    if not exp["name"] or not NAME_RE.match(exp["name"]):
        raise SpecError(file, "experiment.name", f"letters, digits, '.', '_' and '-' only, got {exp['name']!r}")
    check_budget(file, spec)  # fills num_samples when it is left open without a budget
    if search["num_samples"] is not None and search["num_samples"] < 1:
        raise SpecError(file, "search.num_samples", f"num_samples >= 1 must hold, got {search['num_samples']}")
    if search["stall_timeout_s"] <= 0:
        raise SpecError(
            file,
            "search.stall_timeout_s",
            f"stall_timeout_s > 0 must hold, got stall_timeout_s={search['stall_timeout_s']}",
        )
    if search["max_concurrent"] < 0:
        raise SpecError(file, "search.max_concurrent", f"max_concurrent >= 0 must hold, got {search['max_concurrent']}")
    epochs = spec_epochs(spec)
    sched["max_t"] = sched["max_t"] or epochs
    if sched["reduction_factor"] <= 1:
        raise SpecError(
            file, "scheduler.reduction_factor", f"reduction_factor > 1 must hold, got {sched['reduction_factor']}"
        )
    if sched["name"] == "pbt" and search["algorithm"] not in ("random", "grid"):
        raise SpecError(
            file,
            "scheduler.name",
            f"pbt mutates trials itself and takes search.algorithm random or grid, got {search['algorithm']!r}",
        )
    if search["algorithm"] == "bohb" and sched["name"] != "hyperband":
        raise SpecError(
            file,
            "scheduler.name",
            f"search.algorithm=bohb needs scheduler.name=hyperband "
            f"(BOHB's own bracket schedule), got {sched['name']!r}",
        )
    if sched["fidelity"] == "data" and sched["name"] not in ("asha", "hyperband"):
        raise SpecError(
            file,
            "scheduler.fidelity",
            f"data grows the training set at asha's or hyperband's rungs; scheduler.name is {sched['name']!r}",
        )
    if res["cpu"] <= 0:
        raise SpecError(file, "resources.cpu", f"cpu > 0 must hold, got {res['cpu']}")
    if res["gpu"] < 0 or (res["gpu"] > 1 and not float(res["gpu"]).is_integer()):
        raise SpecError(file, "resources.gpu", f"gpu must be a fraction in [0, 1] or a whole number, got {res['gpu']}")
    if res["max_failures"] < 0:
        raise SpecError(file, "resources.max_failures", f"max_failures >= 0 must hold, got {res['max_failures']}")


def _check_metric(file: str, exp: dict[str, Any], metrics: dict[str, str]) -> None:
    """The study's metric is one a trial reports; its mode defaults to, and must agree with, the metric's
    better direction (maximising a loss is always a mistake)."""
    metric = exp["metric"]
    if metric not in metrics:
        raise SpecError(
            file,
            "experiment.metric",
            f"{metric!r} is not reported by trials; allowed: {allowed(metrics)}{did_you_mean(metric, metrics)}",
        )
    better = metrics[metric]
    if exp["mode"] is None:
        exp["mode"] = better
    elif exp["mode"] != better:
        raise SpecError(
            file,
            "experiment.mode",
            f"{metric} is better when {'higher' if better == 'max' else 'lower'}: "
            f"mode must be {better}, got {exp['mode']}",
        )


def spec_epochs(spec: dict[str, Any]) -> int:
    train = spec.get("train") or {}
    return int(train.get("epochs") or 1)


_PBT_IS_A_SCHEDULE = (
    "a pbt trial's hyperparameters change while it trains (a schedule, logged in the study "
    "folder's pbt_policy_*.txt), so its last values are no fixed recipe to retrain"
)


def _check_pbt_schedule(file: str, spec: dict[str, Any]) -> None:
    """A PBT study ends in a schedule, not a configuration: refuse to retrain one (best.yaml, final:)."""
    if spec["scheduler"]["name"] != "pbt":
        return
    if not spec["space"]:  # a PBT study's best.yaml: its best trial's last values
        raise SpecError(
            file,
            "scheduler.name",
            f"pbt perturbs the keys in space and this spec searches none; "
            f"{_PBT_IS_A_SCHEDULE}; --set scheduler.name=fifo trains them "
            f"as one anyway",
        )
    if spec["final"]["after_search"]:
        raise SpecError(file, "final", f"no final training after a pbt search: {_PBT_IS_A_SCHEDULE}")


def _longest_trial(spec: dict[str, Any]) -> tuple[int, str]:
    """The largest train.epochs a trial can have, and where it is set (spec, space or a branch option)."""

    def top(dist: dict[str, list[Any]]) -> int:
        ((kind, args),) = dist.items()
        return int(max(args) if kind in ("grid", "choice") else args[1])

    space = spec["space"]
    found = [
        (top(space["train.epochs"]), "space.train.epochs")
        if "train.epochs" in space
        else (int(spec["train"]["epochs"]), "train.epochs")
    ]
    for key, dist in space.items():
        if is_branch(key, dist):
            ((kind, options),) = dist.items()
            found += [
                (
                    top(o["train.epochs"]) if isinstance(o["train.epochs"], dict) else int(o["train.epochs"]),
                    f"space.{key}.{kind}[{i}].train.epochs",
                )
                for i, o in enumerate(options)
                if "train.epochs" in o
            ]
    return max(found)


def _check_max_t(file: str, spec: dict[str, Any], given: bool) -> None:
    """max_t (default: the longest trial) may not cut a trial short: ASHA and Hyperband stop every trial
    at max_t, so a longer train.epochs would never be run, and its trial would read as stopped."""
    sched = spec["scheduler"]
    longest, where = _longest_trial(spec)
    if not given:
        sched["max_t"] = max(sched["max_t"], longest)
    elif sched["name"] in ("asha", "hyperband") and sched["max_t"] < longest:
        raise SpecError(
            file,
            "scheduler.max_t",
            f"max_t >= every train.epochs a trial can have must hold, got "
            f"max_t={sched['max_t']}, {where} up to {longest}",
        )
    # After max_t took its final value: a searched train.epochs may raise it above train.epochs.
    if sched["grace_period"] < 1 or sched["grace_period"] > sched["max_t"]:
        raise SpecError(
            file,
            "scheduler.grace_period",
            f"1 <= grace_period <= max_t must hold, got grace_period={sched['grace_period']}, max_t={sched['max_t']}",
        )


def _check_space(
    file: str,
    space: Any,
    spec: dict[str, Any],
    schemas: dict[str, dict[str, tuple[Any, ...]] | None],
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
        out[key] = check_distribution(file, kp, dist, typ, algo)
        why = backend.checkpoint_conflict(str(key)) if backend and spec["scheduler"]["name"] == "pbt" else None
        if why:  # PBT resumes a trial from another trial's checkpoint, with this key perturbed
            raise SpecError(
                file,
                kp,
                f"pbt cannot perturb {key}: {why}, so another trial's checkpoint would not "
                f"load; search it with another scheduler",
            )
    return out


def _check_branch(
    file: str, kp: str, dist: Any, spec: dict[str, Any], raw: dict[str, Any], backend: TrialSide
) -> dict[str, list[dict[str, Any]]]:
    """A conditional sub-space: each option is checked as the whole spec would be with it chosen."""
    algo = spec["search"]["algorithm"]
    kinds = ("choice",) if algo in ("optuna", "bohb") else ("grid", "choice")
    if (
        not isinstance(dist, dict)
        or len(dist) != 1
        or next(iter(dist)) not in kinds
        or not isinstance(next(iter(dist.values())), list)
        or not next(iter(dist.values()))
    ):
        raise SpecError(
            file,
            kp,
            f"a key without a dot is a branch: {' or '.join(kinds)} over a list of options, "
            f"each a mapping of dotted keys to values or distributions (with "
            f"search.algorithm={algo})",
        )
    if spec["scheduler"]["name"] == "pbt":
        raise SpecError(file, kp, "pbt perturbs one flat space; conditional branches need another scheduler")
    ((kind, options),) = dist.items()
    labels: list[str] = []
    out: list[dict[str, Any]] = []
    for i, opt in enumerate(options):
        okp = f"{kp}.{kind}[{i}]"
        if not isinstance(opt, dict) or not opt:
            raise SpecError(file, okp, f"an option is a mapping of dotted keys to values or distributions, got {opt!r}")
        label = option_label(opt, i)
        if not NAME_RE.match(label) or label in labels:
            raise SpecError(file, f"{okp}.name", f"a unique label of letters, digits, '.', '_', '-', got {label!r}")
        labels.append(label)
        consts, dists = option_parts(opt)
        if algo != "grid" and kind == "choice" and any("grid" in d for d in dists.values()):
            raise SpecError(file, okp, "grid inside a choice branch would cross only that option; use choice")
        clash = [k for k in opt if k in (raw.get("space") or {})]
        if clash:
            raise SpecError(file, f"{okp}.{clash[0]}", "is also searched outside the branch; set it in one place")
        for k in consts:
            if "." not in str(k):
                raise SpecError(file, f"{okp}.{k}", "option keys are dotted paths into data, model or train")
        sub = backend.apply_config(raw, consts)  # the whole spec with this option chosen
        sub["scheduler"] = {**(sub.get("scheduler") or {}), "max_t": None}  # checked once, over all options
        sub["space"] = {**{k: v for k, v in (raw.get("space") or {}).items() if not is_branch(str(k))}, **dists}
        try:
            res = resolve(sub, backend, file=file, default_name=spec["experiment"]["name"])
        except SpecError as err:
            where = err.path[len("space.") :] if err.path.startswith("space.") else err.path
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
    schemas: dict[str, dict[str, tuple[Any, ...]] | None],
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
    schema = schemas[parent_path]
    if schema is None:
        return Any
    if leaf not in schema or f"{parent_path}.{leaf}" in schemas:
        raise SpecError(
            file, kp, f"{parent_path} has no key {leaf!r}; keys: {allowed(schema)}{did_you_mean(leaf, schema)}"
        )
    if key in branch_keys:  # its value decides which other keys exist: a branch (conditional sub-space)
        raise SpecError(file, kp, f"{key} cannot be searched in a flat space; {branch_keys[key]}")
    return schema[leaf][0]


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


__all__ = [
    "ALGORITHMS",
    "DISTRIBUTIONS",
    "SCHEDULERS",
    "SpecError",
    "load_spec",
    "resolve",
    "smoke_spec",
    "dump_spec",
    "set_path",
    "get_path",
    "coerce",
]
