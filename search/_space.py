"""Search-space distributions: validation, conversion to Ray Tune domains, grid counting, sampling.

A distribution is a one-key mapping, e.g. ``{loguniform: [1e-4, 1e-2]}``. Bounds are inclusive
(``randint: [2, 6]`` can give 6), unlike Ray's exclusive ``tune.randint``.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable

import numpy as np

# name -> (number of arguments or None for a list of values, what the arguments are)
DISTRIBUTIONS: dict[str, tuple[int | None, str]] = {
    "grid": (None, "a list of values, each tried (crossed with the other grids)"),
    "choice": (None, "a list of values, one sampled per trial"),
    "uniform": (2, "[low, high]"),
    "quniform": (3, "[low, high, q]"),
    "loguniform": (2, "[low, high], low > 0"),
    "qloguniform": (3, "[low, high, q], low > 0"),
    "randint": (2, "[low, high], integers, high included"),
    "qrandint": (3, "[low, high, q], integers, high included"),
}
# What each searcher can take.
SUPPORTED: dict[str, tuple[str, ...]] = {
    "random": tuple(DISTRIBUTIONS),
    "grid": ("grid", "choice"),
    # Optuna drops the step of a quantized log range; refusing it beats silently ignoring q.
    "optuna": tuple(d for d in DISTRIBUTIONS if d not in ("grid", "qloguniform")),
    "bohb": tuple(d for d in DISTRIBUTIONS if d != "grid"),
}
_INT_ONLY = ("randint", "qrandint")


def check_distribution(file: str, kp: str, dist: Any, typ: Any, algorithm: str,
                       coerce: Callable[[Any, Any], Any], error: type[Exception]) -> dict[str, list[Any]]:
    """Validate one distribution against the searched key's type and the searcher; return it normalised."""
    if not isinstance(dist, dict) or len(dist) != 1:
        raise error(file, kp, f"expected one of {{{', '.join(DISTRIBUTIONS)}}}: [...], got {dist!r}")
    (kind, args), = dist.items()
    if kind not in DISTRIBUTIONS:
        from ._spec import did_you_mean

        raise error(file, kp, f"unknown distribution {kind!r}; allowed: {', '.join(DISTRIBUTIONS)}"
                              f"{did_you_mean(str(kind), DISTRIBUTIONS)}")
    if kind not in SUPPORTED[algorithm]:
        raise error(file, kp, f"{kind} is not supported by search.algorithm={algorithm}; allowed with "
                              f"{algorithm}: {', '.join(SUPPORTED[algorithm])}")
    nargs, what = DISTRIBUTIONS[kind]
    if not isinstance(args, list) or (nargs is None and not args) or (nargs is not None and len(args) != nargs):
        raise error(file, kp, f"{kind} takes {what}, got {args!r}")
    if nargs is None:
        try:
            return {kind: [coerce(v, typ) for v in args]}
        except TypeError:
            raise error(file, kp, f"{kind} values must fit the key's type, got {args!r}") from None
    nums = []
    for a in args:
        if isinstance(a, bool) or not isinstance(a, (int, float, str)):
            raise error(file, kp, f"{kind} takes {what}, got {args!r}")
        try:
            nums.append(float(a) if not isinstance(a, int) else a)
        except ValueError:
            raise error(file, kp, f"{kind} takes {what}, got {args!r}") from None
    low, high = nums[0], nums[1]
    if kind in _INT_ONLY and not all(isinstance(v, int) for v in nums):
        raise error(file, kp, f"{kind} takes integers, got {args!r}")
    if not low <= high:
        raise error(file, kp, f"low <= high must hold, got low={low}, high={high}")
    if kind.endswith("loguniform") and low <= 0:
        raise error(file, kp, f"a log range must lie above 0, got low={low}, high={high}")
    if nargs == 3 and nums[2] <= 0:
        raise error(file, kp, f"q > 0 must hold, got q={nums[2]}")
    if typ is int and kind not in _INT_ONLY and kind not in ("quniform", "qloguniform"):
        raise error(file, kp, f"the key is an integer; use randint, qrandint, choice or grid, not {kind}")
    if typ is int and kind in ("quniform", "qloguniform") and not float(nums[2]).is_integer():
        raise error(file, kp, f"the key is an integer; q must be whole, got q={nums[2]}")
    if typ not in (int, float) and typ is not Any and "float" not in str(typ) and "int" not in str(typ):
        raise error(file, kp, f"{kind} gives numbers but the key is not numeric; use choice or grid")
    return {kind: nums}


def grid_points(space: dict[str, dict[str, list[Any]]]) -> int:
    """How many grid points the space's ``grid`` entries span (1 when there are none)."""
    return math.prod(len(d["grid"]) for d in space.values() if "grid" in d)


def to_tune(space: dict[str, dict[str, list[Any]]], algorithm: str) -> dict[str, Any]:
    """Ray Tune domains for each searched key (``grid`` algorithm turns choices into grids)."""
    from ray import tune

    out: dict[str, Any] = {}
    for key, dist in space.items():
        (kind, a), = dist.items()
        if kind == "grid" or (kind == "choice" and algorithm == "grid"):
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
    (kind, a), = dist.items()
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


def preview_configs(space: dict[str, dict[str, list[Any]]], num_samples: int, seed: int,
                    limit: int = 10_000) -> list[dict[str, Any]]:
    """The grid points crossed with ``num_samples`` draws of the sampled keys (at most ``limit``)."""
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
