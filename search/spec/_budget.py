"""Compute budgets (``search.budget``, ``tune-run --budget``): parse and plan from a throughput probe (the stopper
that enforces a plan is ``run/_study_budget.py``, what was spent ``run/_spend.py``).

A budget is wall-clock time (``45s``, ``30m``, ``2h``), GPU-hours (``1.5gpu-h``, by the trial side's one
GPU-hours rule) or epochs (``400epochs``, summed over trials). It covers the search and, when the spec has a
``final:`` section, final training: by default (``search.budget_split`` null) final training of the recipe comes
first — its seeds for the whole of ``train.epochs`` at the probe's pace — and the search gets what is left; a
``budget_split`` number gives the search that share instead. Final training also gets whatever the search left
unspent.

What the spec leaves open is sized from the probe: ``search.num_samples`` unset (null) means "as many trials
as the search share affords", ``search.epochs: auto`` "trials as long as leave the search MIN_TRIALS of them",
and ``final.epochs`` unset means "as many epochs as the final share affords, at most train.epochs". Values the spec sets are kept; the stopper below still holds the search to its share.
A wall-clock budget counts from the start of the search: Ray's start, data loading and the probe come before
it (``startup_s`` in study.json) and are not under the budget's control.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ._schema import SpecError

# search.budget_split left null: final training of the recipe as written is planned first (what `tune-run --final
# --budget` would spend: its seeds, train.epochs each, at the probe's pace), the search gets the rest. A fixed recipe
# cannot use more than that, so the search never costs the final models epochs: at a budget too small to also search
# in, no_room skips it and the whole budget trains the recipe (issue 24: never worse than the recipe at any budget).
DEFAULT_SPLIT = None
# What starting a trial costs beyond its epochs (a process, imports, the data from Ray's object store);
# wall-clock plans only. Measured at 2-4 s on a quiet 2-core CPU host.
TRIAL_START_S = 4.0
# search.epochs: auto shortens the search's trials until this many fit its share: Optuna's TPE draws its first
# 10 trials at random (n_startup_trials), so fewer is a random search; fANOVA's shares need 5 scored trials.
MIN_TRIALS = 10
# A budget-sized search whose trials are too short to rank what matters does not run: ranked on a small share of the
# recipe's schedule, a low learning rate looks best and loses over the full run (short-horizon bias, Wu et al.
# 2018; seen here: 1-epoch trials of a 14-epoch recipe picked the lowest rate). Under this share of train.epochs (and
# 2 epochs: ASHA needs a rung below the last), or with fewer trials than the searcher needs, the whole budget trains
# the recipe, as `tune-run --final --budget` would. A judgment, not a measured optimum.
MIN_TRIAL_SHARE = 0.25
# search.min_gain's default: the smallest validation-accuracy gain over the recipe a budget-sized search must be able
# to tell from noise, else it does not run. A search picks by validation accuracy; on n images two settings' accuracies
# differ by noise of up to 2 sqrt(2) x 0.5 / sqrt(n) (two standard errors of a difference, at accuracy 0.5, the worst
# case): 0.063 on 500 images, 0.020 on 5,000. 0.03, three points of accuracy, is more than the searches around a
# tuned recipe found here (a judgment, not a measured optimum): a 15-minute search on 500 CIFAR-10 validation images
# spent 623 s to pick a setting 0.004 above the recipe on the test split (not distinguishable), time that would
# have trained the recipe's final seeds whole.
MIN_GAIN = 0.03
# Final training's cost beyond its epochs, its test evaluation and its speed timing, per round of seeds trained at
# once: starting them, the FLOP count, plots and MLflow's model logging (wall-clock plans only). The test evaluation
# and the speed timing are the probe's test_s and speed_s (evaluation_s), counted per round too (final_round_s):
# under test-time views the evaluation is no small constant (airbench94's widths with flip_shift's six views: 60-87 s
# a seed on the 2-core AMX host, issue 24's 15-minute run); the timing is what final.timing_s sets (2 s by default,
# which these constants held before they were split out: 15 and 8 s).
FINAL_EXTRA_S = 13.0
# Of it, what comes after the last seed's training besides its test evaluation and speed timing: bootstrap, model
# files and plots, and the driver's summary. Measured on a 2-core AVX2 host (the slowest here) with a small CNN:
# 7.5 s from a seed's last epoch to the study's end, 2 s of it the speed timing.
FINAL_AFTER_S = 6.0

_UNITS = {
    "s": ("seconds", 1.0),
    "m": ("seconds", 60.0),
    "h": ("seconds", 3600.0),
    "gpu-h": ("gpu_hours", 1.0),
    "epochs": ("epochs", 1.0),
}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(s|m|h|gpu-h|epochs)\s*$")
SHOWN = {"seconds": "s", "gpu_hours": "GPU-h", "epochs": "epochs"}


@dataclass(frozen=True)
class Budget:
    amount: float  # in ``unit``
    unit: str  # seconds | gpu_hours | epochs
    text: str  # as given

    def show(self, value: float) -> str:
        if self.unit == "epochs":
            return f"{value:.0f} epochs"
        return f"{value:.0f} s" if self.unit == "seconds" else f"{value:.3g} GPU-h"


def parse_budget(text: Any, file: str, key: str = "search.budget") -> Budget:
    """``30m``, ``2h``, ``45s``, ``1.5gpu-h`` or ``400epochs``; anything else is one SpecError line."""
    m = _PATTERN.match(str(text)) if isinstance(text, (str, int, float)) and not isinstance(text, bool) else None
    if m is None:
        raise SpecError(file, key, f"expected a duration like 30m, 2h, 1.5gpu-h or 400epochs, got {str(text)!r}")
    unit, scale = _UNITS[m.group(2)]
    amount = float(m.group(1)) * scale
    if amount <= 0:
        raise SpecError(file, key, f"a budget > 0 must hold, got {text!r}")
    if unit == "epochs" and not float(m.group(1)).is_integer():
        raise SpecError(file, key, f"an epoch budget is a whole number of epochs, got {text!r}")
    return Budget(amount, unit, str(text).strip())


# --------------------------------------------------------------------------- planning


def concurrency(spec: dict[str, Any], cpus: float, gpus: float, trial_cpus: float | None = None) -> int:
    """Trials that run at once on ``cpus`` and ``gpus`` (and under ``search.max_concurrent``), each holding
    ``trial_cpus`` (what it asks Ray for: the trial side's request, e.g. ``resources.cpu`` plus a streamed set's
    decoding workers; ``resources.cpu`` when not given)."""
    res, cap = spec["resources"], spec["search"]["max_concurrent"] or math.inf
    per_trial = min(float(trial_cpus if trial_cpus is not None else res["cpu"]), cpus) if cpus > 0 else res["cpu"]
    n = min(cap, max(1, int(cpus // max(per_trial, 1e-9))))
    if res["gpu"] > 0:
        n = min(n, max(1, int(gpus // res["gpu"])))
    return int(n)


def probed_cpus(probes: list[dict[str, Any]]) -> float | None:
    """CPUs one trial asks Ray for, by the trial side's probes (the largest request among them)."""
    asked = [float(p["trial_cpus"]) for p in probes if "trial_cpus" in p]
    return max(asked) if asked else None


def epoch_cost(budget: Budget, seconds: float, gpu: float, gpu_hours: Callable[..., float], parallel: int) -> float:
    """What one epoch of ``seconds`` costs in the budget's unit (wall clock: shared by ``parallel`` trials)."""
    if budget.unit == "epochs":
        return 1.0
    if budget.unit == "gpu_hours":
        return gpu_hours(seconds, gpu, gpu > 0)
    return seconds / parallel


def final_epochs(available: float, per_epoch: float, cap: int) -> int:
    """Final epochs a share affords (``per_epoch``: the cost of one epoch of every seed), 1 to ``cap``."""
    return int(max(1, min(cap, math.floor(available / per_epoch + 1e-9)))) if per_epoch > 0 else int(cap)


def asha_rungs(sched: dict[str, Any]) -> list[int]:
    """ASHA's rung milestones below ``max_t``: grace_period * reduction_factor**k (one bracket)."""
    g, eta, max_t = int(sched["grace_period"]), float(sched["reduction_factor"]), int(sched["max_t"])
    rungs, r = [], float(g)
    while r < max_t:
        rungs.append(int(r))
        r *= eta
    return rungs


def search_epochs(spec: dict[str, Any], cb: dict[str, Any] | None) -> int:
    """How many epochs the search's trials train: ``search.epochs`` (``auto``: the budget's plan), else
    the scheduler's ``max_t`` (train.epochs)."""
    given = spec["search"]["epochs"]
    if given == "auto":
        return int(cb["trial_epochs"]) if cb else int(spec["scheduler"]["max_t"])
    return int(given) if given is not None else int(spec["scheduler"]["max_t"])


def search_scheduler(sched: dict[str, Any], epochs: int) -> dict[str, Any]:
    """The scheduler section for trials of ``epochs`` epochs (``search.epochs``): max_t is their length, and a
    grace period cannot outlast it."""
    return {**sched, "max_t": epochs, "grace_period": min(int(sched["grace_period"]), epochs)}


def promoted(arrivals: float, eta: float) -> float:
    """Trials ASHA is expected to let past a rung out of ``arrivals`` that reach it one after another. Ray's
    ASHA compares the k-th arrival with the m = k - 1 recorded before it: it goes on when it is at least their
    (1 - 1/eta) quantile (numpy's linear interpolation, h = (m - 1)(1 - 1/eta)), which a value as likely to
    rank anywhere among them is with probability (m - h) / (m + 1): 1 for the first, 1/2 for the second,
    tending to 1/eta. So early trials run long, and few trials cost more each than 1/eta per rung suggests."""

    def p(m: int) -> float:
        return 1.0 if m == 0 else (m - (m - 1) * (1 - 1 / eta)) / (m + 1)

    def passed(w: int) -> float:  # p(0) + ... + p(w - 1), p(m) = (m + eta - 1) / (eta (m + 1)): harmonic numbers
        return 0.0 if w == 0 else 1 + ((w - 1) + (eta - 2) * (_harmonic(w) - 1)) / eta

    whole = int(math.floor(arrivals))
    return passed(whole) + (arrivals - whole) * p(whole)


def _harmonic(n: int) -> float:
    """1 + 1/2 + ... + 1/n (exact below 64, else the asymptotic series: error under 1e-12)."""
    if n < 64:
        return sum(1 / i for i in range(1, n + 1))
    return math.log(n) + 0.5772156649015329 + 1 / (2 * n) - 1 / (12 * n * n) + 1 / (120 * n**4)


def search_cost(sched: dict[str, Any], trials: float) -> float:
    """What ``trials`` trials are expected to train, in epochs of the whole training split (an epoch budget's
    unit; ``search_passes`` counts the epochs themselves, each of which validates on the whole validation set).

    FIFO, median, PBT and Hyperband: every trial may run ``max_t`` epochs (Hyperband's brackets differ;
    counted at full length, which plans fewer trials than run). ASHA with one bracket: the epochs up to the
    first rung are trained by every trial, those up to each next rung by the trials ``promoted`` past the
    rungs before; with ``fidelity: data`` the epochs up to rung r see r/max_t of the data. Trials are counted
    as arriving one at a time (concurrent ones meet fewer recorded results still, so the plan is a little
    optimistic for them).
    """
    return _expected_epochs(sched, trials, sched.get("fidelity") == "data")


def search_passes(sched: dict[str, Any], trials: float) -> float:
    """The epochs ``trials`` trials are expected to run, whatever share of the data each trains on."""
    return _expected_epochs(sched, trials, False)


def _expected_epochs(sched: dict[str, Any], trials: float, data_weighted: bool) -> float:
    max_t = int(sched["max_t"])
    if sched["name"] != "asha" or int(sched["brackets"]) != 1:
        return float(max_t) * trials
    eta = float(sched["reduction_factor"])
    total, arrivals, last = 0.0, float(trials), 0
    for r in asha_rungs(sched):
        total += arrivals * (r - last) * (r / max_t if data_weighted else 1.0)
        arrivals, last = promoted(arrivals, eta), r
    return total + arrivals * (max_t - last)


MAX_PLANNED = 10_000  # trials a plan counts up to (a budget that buys more is planned at this many)


def trials_within(
    sched: dict[str, Any], share: float, per_epoch: float, per_trial: float, per_pass: float = 0.0
) -> int:
    """The most trials (at least 1) whose expected cost fits ``share``: ``search_cost`` epochs of the training split
    at ``per_epoch`` each, ``search_passes`` validations at ``per_pass`` each, and ``per_trial`` each to start."""

    def fits(n: int) -> bool:
        cost = search_cost(sched, n) * per_epoch + search_passes(sched, n) * per_pass + n * per_trial
        return cost <= share + 1e-9

    low, high = 1, 2  # the cost grows with n: double past the share, then halve the gap
    while high <= MAX_PLANNED and fits(high):
        low, high = high, high * 2
    high = min(high, MAX_PLANNED + 1)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def plan(
    spec: dict[str, Any],
    budget: Budget,
    probes: list[dict[str, Any]],
    grid: int,
    parallel: int,
    gpu_hours: Callable[..., float],
    num_samples_given: int | None,
) -> dict[str, Any]:
    """Shares, trials and final epochs of ``spec`` under ``budget``; ``probes``: the trial side's probes of
    the configurations the search draws (their mean cost stands for a trial)."""
    gpu, after = float(spec["resources"]["gpu"]), bool(spec["final"]["after_search"])
    split = spec["search"]["budget_split"]
    recipe_final = recipe_final_cost(spec, budget, probes, parallel, gpu_hours) if after and split is None else None
    if not after:
        search_share = budget.amount
    elif recipe_final is not None:  # the recipe's final training first, the search what is left (DEFAULT_SPLIT)
        search_share = max(0.0, budget.amount - recipe_final)
    else:
        search_share = budget.amount * float(split)
    epoch_s = sum(p["epoch_s"] for p in probes) / len(probes)
    # Validation runs on the whole validation set every epoch, whatever share of the training split it trains on.
    val_s = sum(p.get("val_s", 0.0) for p in probes) / len(probes)
    train_s = epoch_s - val_s

    def fitting(epochs: int) -> tuple[float, int]:  # (expected epochs of a trial, trials that fit)
        sched = search_scheduler(spec["scheduler"], epochs)
        start = TRIAL_START_S / parallel if budget.unit == "seconds" else 0.0
        per_pass = 0.0 if budget.unit == "epochs" else epoch_cost(budget, val_s, gpu, gpu_hours, parallel)
        per_epoch = epoch_cost(budget, train_s, gpu, gpu_hours, parallel)
        n = trials_within(sched, search_share, per_epoch, start, per_pass)
        return search_cost(sched, n) / n, n

    trial_epochs = _trial_epochs(spec, fitting)
    expected, fits = fitting(trial_epochs)
    # Only a search the budget sizes, with final training to hand its share to, is skipped.
    val_images = min(int(p.get("val_images", 0)) for p in probes)
    why = no_room(spec, trial_epochs, fits, grid, val_images) if after and num_samples_given is None else ""
    if recipe_final is not None:
        why = _recipe_first_why(spec, budget, recipe_final, search_share, why)
    if why:
        search_share, num_samples = 0.0, 0
    elif num_samples_given is None:
        num_samples = max(1, fits // max(grid, 1))
    else:
        num_samples = num_samples_given
    trials = num_samples * grid
    out: dict[str, Any] = {
        "budget": budget.text,
        "unit": budget.unit,
        "split": 0.0 if why else search_share / budget.amount,
        "split_from": "spec" if split is not None or not after else "recipe's final training first",
        "planned": {"search": search_share, "final": budget.amount - search_share, "total": budget.amount},
        "num_samples": num_samples,
        "num_samples_from": "budget" if num_samples_given is None else "spec",
        "trials": trials,
        "trials_that_fit": fits,
        "trial_epochs": trial_epochs,
        "trial_epochs_from": {"auto": "budget", None: "train.epochs"}.get(spec["search"]["epochs"], "spec"),
        "train_epochs": int(spec["scheduler"]["max_t"]),
        "trial_epochs_expected": round(expected, 3),
        "epoch_s": epoch_s,
        "parallel": parallel,
        "search": "skipped" if why else "planned",
        "skipped_because": why,
        # What the plan should take by the probe (a wall-clock budget: its shares).
        "planned_seconds": {
            "search": _search_seconds(search_scheduler(spec["scheduler"], trial_epochs), trials, train_s, val_s)
            / parallel
        },
    }
    if after:  # no search: its share may stretch the final models' schedule (final.max_stretch)
        out.update(final_plan(spec, budget, budget.amount - search_share, probes, parallel, gpu_hours, bool(why)))
        out["planned_seconds"]["final"] = out["final_epochs"] * out["final_epoch_s"] * out["final_rounds"]
    if budget.unit == "seconds":
        out["planned_seconds"] = {k: v for k, v in out["planned"].items() if k != "total"}
    out["planned_seconds"]["total"] = sum(out["planned_seconds"].values())
    return out


def resolvable_gain(val_images: int) -> float:
    """The smallest difference of two validation accuracies on ``val_images`` images that noise does not explain:
    two standard errors of the difference, at accuracy 0.5 (MIN_GAIN)."""
    return 2 * math.sqrt(2) * 0.5 / math.sqrt(max(val_images, 1))


def no_room(spec: dict[str, Any], trial_epochs: int, fits: int, grid: int, val_images: int) -> str:
    """Why a budget-sized search cannot pay ("" when it can): too few trials fit, (``search.epochs: auto``) they
    would be too short to rank settings as the recipe's schedule would, or (one metric, val_acc) its validation
    split is too small to tell ``search.min_gain`` from noise."""
    longest = int(spec["scheduler"]["max_t"])
    needed = grid if spec["search"]["algorithm"] == "grid" else MIN_TRIALS
    if fits < needed:
        return f"{fits} trial(s) fit the search's share, fewer than the {needed} its searcher needs"
    shortest = min(longest, max(2, math.ceil(MIN_TRIAL_SHARE * longest)))
    if spec["search"]["epochs"] == "auto" and trial_epochs < shortest:
        return (
            f"its trials would train {trial_epochs} of the recipe's {longest} epochs, fewer than the {shortest} "
            f"(a quarter, at least 2) that rank settings as the whole schedule does"
        )
    min_gain, noise = float(spec["search"]["min_gain"]), resolvable_gain(val_images)
    picks_by_accuracy = spec["experiment"]["metric"] == "val_acc" and not spec["experiment"].get("objectives")
    if picks_by_accuracy and val_images and 0 < min_gain < noise:
        return (
            f"its {val_images:,} validation images tell settings apart by {noise:.3f} of accuracy at best (two "
            f"standard errors), more than the {min_gain:g} gain it would have to find (search.min_gain)"
        )
    return ""


def _recipe_first_why(spec: dict[str, Any], budget: Budget, recipe_final: float, share: float, why: str) -> str:
    """Why a search the recipe's final training left ``share`` of the budget does not run ("" when it does): that
    training takes it all (also for a search whose trials the spec counts: not one fits), or ``why`` (no_room)."""
    seeds = len(spec["final"]["seeds"])
    recipe = (
        f"final training of the recipe ({seeds} seed{'s' * (seeds != 1)} x {int(spec['scheduler']['max_t'])} "
        f"epochs, {budget.show(recipe_final)})"
    )
    if share <= 0:
        return f"{recipe} takes the whole budget"
    return f"{recipe} leaves the search {budget.show(share)}: {why}" if why else ""


def _trial_epochs(spec: dict[str, Any], fitting: Callable[[int], tuple[float, int]]) -> int:
    """How long the search's trials are: ``search.epochs`` as given, ``auto``: the longest that still gives the
    search MIN_TRIALS (``fitting(epochs)[1]``: trials that fit), else the scheduler's ``max_t``."""
    longest, given = int(spec["scheduler"]["max_t"]), spec["search"]["epochs"]
    if given == "auto":
        return next((e for e in range(longest, 0, -1) if fitting(e)[1] >= MIN_TRIALS), 1)
    return int(given) if given is not None else longest


def _search_seconds(sched: dict[str, Any], trials: int, train_s: float, val_s: float) -> float:
    """Seconds of one process that ``trials`` trials take: training on their share of the data, validating whole."""
    return search_cost(sched, trials) * train_s + search_passes(sched, trials) * val_s


def recipe_final_cost(
    spec: dict[str, Any], budget: Budget, probes: list[dict[str, Any]], parallel: int, gpu_hours: Callable[..., float]
) -> float:
    """What final training of the recipe as written takes of ``budget`` (its unit): every seed for the whole of the
    scheduler's ``max_t`` (train.epochs), at the dearest probed configuration's pace, with its fixed costs."""
    seeds, epochs = len(spec["final"]["seeds"]), int(spec["scheduler"]["max_t"])
    if budget.unit == "seconds":
        return final_seconds(spec, probes, parallel, epochs)
    final_s, _ = _final_pace(spec, probes, parallel)
    return epochs * seeds * epoch_cost(budget, final_s, float(spec["resources"]["gpu"]), gpu_hours, 1)


def final_seconds(spec: dict[str, Any], probes: list[dict[str, Any]], parallel: int, epochs: int) -> float:
    """Wall-clock seconds of final training at ``epochs`` a seed: each round of seeds its epochs at the dearest
    probe's pace, and the round's fixed costs and test evaluation."""
    final_s, rounds = _final_pace(spec, probes, parallel)
    return (epochs * final_s + final_round_s(probes)) * rounds


def _final_pace(spec: dict[str, Any], probes: list[dict[str, Any]], parallel: int) -> tuple[float, int]:
    """(seconds of a final epoch, rounds of seeds): the dearest probed configuration (the chosen one is not known
    yet), its seeds trained in parallel, as many at once as fit."""
    return max(p["final_epoch_s"] for p in probes), math.ceil(len(spec["final"]["seeds"]) / parallel)


def evaluation_s(probes: list[dict[str, Any]]) -> float:
    """A final seed's test evaluation and speed timing: the dearest probe's ``test_s`` + ``speed_s`` (a probe
    recorded before it had ``speed_s``: the 2 s of the default timing)."""
    return max((float(p.get("test_s", 0.0)) + float(p.get("speed_s", 2.0)) for p in probes), default=0.0)


def final_round_s(probes: list[dict[str, Any]]) -> float:
    """Seconds a round of final seeds takes beyond its epochs: its fixed costs (FINAL_EXTRA_S) and, after the
    seeds' training, their test evaluation (the seeds of a round evaluate at once, and the next round starts
    after them)."""
    return FINAL_EXTRA_S + evaluation_s(probes)


def final_plan(
    spec: dict[str, Any],
    budget: Budget,
    available: float,
    probes: list[dict[str, Any]],
    parallel: int,
    gpu_hours: Callable[..., float],
    stretch: bool = False,
) -> dict[str, Any]:
    """Final epochs under ``available`` (left open in the spec: sized, at most train.epochs, or with ``stretch`` (a
    study that ran no search) final.max_stretch times it; given: kept)."""
    seeds = len(spec["final"]["seeds"])
    final_s, rounds = _final_pace(spec, probes, parallel)
    gpu = float(spec["resources"]["gpu"])
    if budget.unit == "seconds":
        per_epoch = final_s * rounds
        available = available - final_round_s(probes) * rounds
    else:
        per_epoch = seeds * epoch_cost(budget, final_s, gpu, gpu_hours, 1)
    given, recipe = spec["final"]["epochs"], int(spec["scheduler"]["max_t"])
    cap = math.floor(recipe * float(spec["final"]["max_stretch"])) if stretch else recipe
    epochs = int(given) if given else final_epochs(available, per_epoch, cap)
    return {
        "final_epochs": epochs,
        "final_epochs_from": "spec" if given else "budget",
        "final_stretched": bool(not given and epochs > recipe),
        "final_epoch_s": final_s,
        "final_rounds": rounds,
        "final_seeds": seeds,
    }


def share_from(p: dict[str, Any]) -> str:
    """How a plan's search share was set, for its line: the spec's budget_split (nothing to say), or what the
    recipe's final training leaves."""
    return " (what final training of the recipe leaves)" if p.get("split_from", "spec") != "spec" else ""


def trial_length(p: dict[str, Any]) -> str:
    """ "up to N epochs", and why when the search's trials are shorter than train.epochs."""
    n, full = p["trial_epochs"], p.get("train_epochs", p["trial_epochs"])
    if n >= full:
        return f"up to {n} epochs"
    why = f"search.epochs: auto, for {MIN_TRIALS} trials" if p.get("trial_epochs_from") == "budget" else "search.epochs"
    return f"up to {n} epochs (train.epochs {full}, shortened by {why})"


# --------------------------------------------------------------------------- probing

PROBE_LIMIT = 4  # distinct model shapes probed; a space with more is planned from the first ones
PREVIEW_DRAWS = 16  # configurations previewed for their shapes when num_samples is left open


def probe_configs(
    spec: dict[str, Any], backend: Any, pools: Any, limit: int = PROBE_LIMIT, known: Sequence[dict[str, Any]] = ()
) -> tuple[list[dict[str, Any]], str]:
    """The trial side's probes of the distinct model shapes (``backend.probe_shape``) among the configurations
    the search would draw (previewed with search.seed), at most ``limit``; and a note when more were left out.
    ``known``: probes already made (``shape`` keys), not repeated."""
    from ._space import as_searched, preview_configs

    space = as_searched(spec["space"], spec["search"]["algorithm"])
    # num_samples left open: draw enough to meet the shapes a budget's trials would meet.
    draws = spec["search"]["num_samples"] or PREVIEW_DRAWS
    configs = preview_configs(space, draws, spec["search"]["seed"]) if space else [{}]
    shapes: dict[str, dict[str, Any]] = {}
    for cfg in configs:
        s = backend.apply_config(spec, cfg)
        if backend.infeasible(s) is None:
            shapes.setdefault(backend.probe_shape(s), s)
    chosen = list(shapes.values())[:limit] or [spec]
    note = (
        f"the space has {len(shapes)} distinct model shapes among {len(configs)} previewed configurations; "
        f"probed the first {limit}"
        if len(shapes) > limit
        else ""
    )
    done = {p["shape"]: p for p in known}
    return [done.get(backend.probe_shape(s)) or backend.probe(s, pools) for s in chosen], note
