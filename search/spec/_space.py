"""Search spaces: conversion to Ray Tune domains and to Optuna's and BOHB's spaces, branches (conditional
sub-spaces), grid counting, sampling (each distribution's own check: ``_distributions``).

A distribution is a one-key mapping, e.g. ``{loguniform: [1e-4, 1e-2]}``. Bounds are inclusive
(``randint: [2, 6]`` can give 6), unlike Ray's exclusive ``tune.randint``.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from ._distributions import INT_ONLY, is_distribution, option_label, option_parts


def _grid_points_flat(space: dict[str, dict[str, list[Any]]]) -> int:
    return math.prod(len(d["grid"]) for d in space.values() if "grid" in d)


def _to_tune_flat(space: dict[str, dict[str, list[Any]]], algorithm: str) -> dict[str, Any]:
    from ray import tune

    out: dict[str, Any] = {}
    for key, dist in space.items():
        ((kind, a),) = dist.items()
        if kind == "grid":
            out[key] = tune.grid_search(list(a))
        elif kind == "choice":
            out[key] = tune.choice(list(a))
        elif kind == "uniform":
            out[key] = tune.uniform(a[0], a[1])
        elif kind == "quniform":
            out[key] = tune.quniform(a[0], a[1], a[2])
        elif kind == "loguniform":
            out[key] = tune.loguniform(a[0], a[1])
        elif kind == "qloguniform":
            out[key] = tune.qloguniform(a[0], a[1], a[2])
        elif kind == "randint":
            out[key] = tune.randint(int(a[0]), int(a[1]) + 1)  # Ray's upper bound is exclusive
        elif kind == "qrandint":
            out[key] = tune.qrandint(int(a[0]), int(a[1]), int(a[2]))  # inclusive in Ray
    return out


def sample(dist: dict[str, list[Any]], rng: np.random.Generator) -> Any:
    """One draw (numpy), for previews such as ``--dry-run``; grids are handled by the caller."""
    ((kind, a),) = dist.items()
    if kind in ("choice", "grid"):
        return a[int(rng.integers(len(a)))]
    if kind in ("uniform", "quniform"):
        v = rng.uniform(a[0], a[1])
    elif kind in ("loguniform", "qloguniform"):
        v = math.exp(rng.uniform(math.log(a[0]), math.log(a[1])))
    else:
        v = int(rng.integers(int(a[0]), int(a[1]) + 1))
    if kind.startswith("q"):
        v = type(a[2])(round(v / a[2]) * a[2])
    return v


def contains(dist: dict[str, list[Any]], value: Any) -> bool:
    """Whether ``dist`` can draw ``value`` (a choice or grid holds it; a range covers it)."""
    ((kind, a),) = dist.items()
    if kind in ("choice", "grid"):
        return any(value == x and isinstance(value, bool) == isinstance(x, bool) for x in a)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if kind in INT_ONLY and not float(value).is_integer():
        return False
    return a[0] <= value <= a[1]


def recipe_point(space: dict[str, Any], values: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The spec's own values of the searched keys (``values``: key -> value, absent keys missing), as one
    point for the searcher to evaluate first, or None and why not: a grid already names its points, a
    conditional space has no single recipe, and a value the space cannot draw is no point of it."""
    if not space:
        return None, "the spec searches nothing"
    if any("grid" in d for d in flat_space(space).values()) or branches(space):
        return None, "a grid or conditional space"
    point: dict[str, Any] = {}
    for key, dist in space.items():
        if key not in values:
            return None, f"the spec sets no value for {key}"
        if not contains(dist, values[key]):
            return None, f"the spec's {key}={values[key]!r} lies outside space.{key}={dist}"
        point[key] = values[key]
    return point, ""


def _preview_flat(
    space: dict[str, dict[str, list[Any]]], num_samples: int, seed: int, limit: int = 10_000
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    grid_keys = [k for k, d in space.items() if "grid" in d]
    other = [k for k in space if k not in grid_keys]
    combos = itertools.product(*(space[k]["grid"] for k in grid_keys))
    out: list[dict[str, Any]] = []
    for values in combos:
        for _ in range(num_samples):
            cfg = dict(zip(grid_keys, values))
            cfg.update({k: sample(space[k], rng) for k in other})
            out.append(cfg)
            if len(out) >= limit:
                return out
    return out


# --------------------------------------------------------------------------- conditional sub-spaces
#
# A space key without a dot is a *branch*: ``{grid|choice: [option, ...]}`` where each option is a
# mapping of dotted keys to constants or distributions, plus an optional ``name`` (its label).
# Only the chosen option's keys are set and sampled (e.g. each model family with its own knobs).
# In a trial's config the branch is a dict holding its label under ``LABEL`` and its sampled
# values (random/grid: directly; Optuna/BOHB: under the label, so their names stay unique).

LABEL = "#"


def is_branch(key: str, dist: Any = None) -> bool:
    """A key without a dot; given its distribution, also one whose options are mappings."""
    if "." in key:
        return False
    if dist is None:
        return True
    options = next(iter(dist.values()), None) if isinstance(dist, dict) else None
    return isinstance(options, list) and all(isinstance(o, dict) for o in options)


def option_labels(options: list[dict[str, Any]]) -> list[str]:
    return [option_label(o, i) for i, o in enumerate(options)]


def flat_space(space: dict[str, Any]) -> dict[str, dict[str, list[Any]]]:
    return {k: d for k, d in space.items() if not is_branch(k, d)}


def branches(space: dict[str, Any]) -> dict[str, tuple[str, list[dict[str, Any]]]]:
    """key -> (grid|choice, options) for every branch of the space."""
    return {k: next(iter(d.items())) for k, d in space.items() if is_branch(k, d)}


def searched_keys(space: dict[str, Any]) -> list[str]:
    """Every key a trial's flat config can hold: plain keys, branch labels, each option's keys."""
    keys: list[str] = []
    for k, d in space.items():
        keys.append(k)
        if is_branch(k, d):
            for opt in next(iter(d.values())):
                keys += [x for x in opt if x != "name" and x not in keys]
    return keys


def plain(v: Any) -> Any:
    """numpy scalars (from searchers and result frames) as plain Python values, for YAML and JSON."""
    return v.item() if hasattr(v, "item") and not isinstance(v, (list, dict, str)) else v


def flat_config(config: dict[str, Any], space: dict[str, Any]) -> dict[str, Any]:
    """A trial's config (as any searcher shapes it) as {dotted key: value} plus {branch: label}."""
    out: dict[str, Any] = {}
    for key, dist in space.items():
        if not is_branch(key, dist):
            if key in config:
                out[key] = config[key]
            continue
        node = config.get(key) or {}
        label = str(node.get(LABEL))
        options = next(iter(dist.values()))
        labels = option_labels(options)
        if label not in labels:
            raise KeyError(f"space.{key}: the trial chose option {label!r}, which the space does not have")
        consts, dists = option_parts(options[labels.index(label)])
        sampled = node[label] if isinstance(node.get(label), dict) else node
        out[key] = label
        out.update(consts)
        out.update({k: sampled[k] for k in dists})
    return {k: plain(v) for k, v in out.items()}


def longest_trial(spec: dict[str, Any]) -> tuple[int, str]:
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


def grid_points(space: dict[str, Any]) -> int:
    """How many grid points the space spans (1 when it has no grid); a grid branch adds its options'
    own grids rather than multiplying them."""
    n = _grid_points_flat(flat_space(space))
    for kind, options in branches(space).values():
        if kind == "grid":
            n *= sum(_grid_points_flat(option_parts(o)[1]) for o in options)
    return n


def as_searched(space: dict[str, Any], algorithm: str) -> dict[str, Any]:
    """The space as ``algorithm`` runs it: the grid searcher tries every value of a ``choice`` and every
    option of a choice branch, so they become grids (what Tune runs, counts and previews alike)."""
    if algorithm != "grid":
        return space

    def grid(d: dict[str, list[Any]]) -> dict[str, list[Any]]:
        return {"grid": d["choice"]} if "choice" in d else d

    out: dict[str, Any] = {}
    for key, dist in space.items():
        if is_branch(key, dist):
            options = next(iter(dist.values()))
            out[key] = {"grid": [{k: grid(v) if is_distribution(v) else v for k, v in o.items()} for o in options]}
        else:
            out[key] = grid(dist)
    return out


def to_tune(space: dict[str, Any], algorithm: str) -> dict[str, Any]:
    """Ray Tune domains for each searched key (``grid`` algorithm turns choices into grids); a branch
    becomes a grid or choice over dicts whose nested domains Ray resolves once that option is picked."""
    from ray import tune

    space = as_searched(space, algorithm)
    out = _to_tune_flat(flat_space(space), algorithm)
    for key, (kind, options) in branches(space).items():
        parts = [option_parts(o) for o in options]
        values = [
            {LABEL: label, **consts, **_to_tune_flat(dists, algorithm)}
            for label, (consts, dists) in zip(option_labels(options), parts)
        ]
        out[key] = tune.grid_search(values) if kind == "grid" else tune.choice(values)
    return out


def _suggest(trial: Any, name: str, dist: dict[str, list[Any]]) -> Any:
    ((kind, a),) = dist.items()
    if kind in ("choice", "grid"):
        return trial.suggest_categorical(name, list(a))
    if kind in ("uniform", "quniform", "loguniform"):
        return trial.suggest_float(
            name, a[0], a[1], log=kind == "loguniform", step=a[2] if kind == "quniform" else None
        )
    return trial.suggest_int(name, int(a[0]), int(a[1]), step=int(a[2]) if kind == "qrandint" else 1)


class OptunaSpace:
    """Optuna define-by-run space (a picklable callable: Tune checkpoints its searcher): a branch's
    keys are sampled only when that option is chosen."""

    def __init__(self, space: dict[str, Any]) -> None:
        self.space = space

    def __call__(self, trial: Any) -> None:
        for key, dist in flat_space(self.space).items():
            _suggest(trial, key, dist)
        for key, (_, options) in branches(self.space).items():
            labels = option_labels(options)
            label = trial.suggest_categorical(f"{key}/{LABEL}", labels)
            for k, d in option_parts(options[labels.index(label)])[1].items():
                _suggest(trial, f"{key}/{label}/{k}", d)


def bohb_space(space: dict[str, Any], seed: int) -> Any:
    """A ConfigSpace whose branch keys are conditional on their option's label (BOHB samples them so)."""
    import ConfigSpace as CS
    from ray.tune.search.bohb import TuneBOHB

    cs = CS.ConfigurationSpace(seed=seed)
    if flat_space(space):
        cs.add(*TuneBOHB.convert_search_space(_to_tune_flat(flat_space(space), "bohb")).values())
    for key, (_, options) in branches(space).items():
        labels = option_labels(options)
        parent = CS.CategoricalHyperparameter(f"{key}/{LABEL}", labels)
        cs.add(parent)
        for label, opt in zip(labels, options):
            dists = option_parts(opt)[1]
            if not dists:
                continue
            sub = TuneBOHB.convert_search_space({key: {label: _to_tune_flat(dists, "bohb")}})
            hps = list(sub.values())
            cs.add(*hps)
            cs.add(*[CS.EqualsCondition(hp, parent, label) for hp in hps])
    return cs


def preview_configs(space: dict[str, Any], num_samples: int, seed: int, limit: int = 10_000) -> list[dict[str, Any]]:
    """The grid points crossed with ``num_samples`` draws of the sampled keys (at most ``limit``).

    A grid branch gives one flat space per option; a choice branch picks an option per sample."""
    rng = np.random.default_rng(seed)
    grid_b = {k: o for k, (kind, o) in branches(space).items() if kind == "grid"}
    choice_b = {k: o for k, (kind, o) in branches(space).items() if kind != "grid"}
    out: list[dict[str, Any]] = []
    for picks in itertools.product(*(list(enumerate(o)) for o in grid_b.values())):
        sub = dict(flat_space(space))
        fixed: dict[str, Any] = {}
        for key, (i, opt) in zip(grid_b, picks):
            consts, dists = option_parts(opt)
            fixed.update({key: option_label(opt, i), **consts})
            sub.update(dists)
        for cfg in _preview_flat(sub, num_samples, int(rng.integers(2**31)), limit - len(out)):
            for key, options in choice_b.items():
                i = int(rng.integers(len(options)))
                consts, dists = option_parts(options[i])
                cfg.update({key: option_label(options[i], i), **consts})
                cfg.update({k: (d["grid"][0] if "grid" in d else sample(d, rng)) for k, d in dists.items()})
            out.append({**fixed, **cfg})
        if len(out) >= limit:
            break
    return out
