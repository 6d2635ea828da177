"""``tune-run SPEC --estimate``: the throughput probe alone, and what the study costs and what fits its budget.

Nothing is written and no Ray runtime starts: the data are loaded in memory, each distinct model shape the
search would draw is probed for a few batches on this device, and the plan is printed.
"""

from __future__ import annotations

import os
from typing import Any

from .._contract import TrialSide
from ..spec._budget import (
    Budget,
    concurrency,
    final_seconds,
    parse_budget,
    plan,
    probe_configs,
    probed_cpus,
    share_from,
    trial_length,
)
from ..spec._sizes import choose_size, recipe_name, size_line
from ..spec._space import as_searched, grid_points


def estimate(spec: dict[str, Any], backend: TrialSide, out: Any = print) -> None:
    pools = backend.prepare(spec)
    budget = parse_budget(spec["search"]["budget"], "<spec>") if spec["search"]["budget"] else None
    taken, size, record = None, "", None
    if budget:
        taken, record = choose_size(spec, backend, pools, budget, lambda probe: _at_once(spec, [probe])[1])
        size = size_line(record, spec)
    probes, note = probe_configs(spec, backend, pools, known=[taken] if taken else [])
    cpus, parallel = _at_once(spec, probes)
    out(
        f"estimate of {spec['experiment']['name']!r} on {probes[0]['device']}: {parallel} trial(s) at once "
        f"(each holds {cpus:g} CPUs: resources.cpu={spec['resources']['cpu']:g} and the data's decoding workers; "
        f"resources.gpu={spec['resources']['gpu']:g})"
    )
    if budget and size:  # what the probes below measure
        out(f"budget {budget.text}: {size}")
    for p in probes:
        out(
            f"  {p['model']} at batch {p['batch_size']}, {p['image_size']} px, {p.get('arithmetic', 'fp32')}: "
            f"{p['train_images_per_s']:,.0f} "
            f"images/s training, {p['eval_images_per_s']:,.0f} images/s evaluating; an epoch "
            f"{p['epoch_s']:.2f} s ({p['train_images']:,} train + {p['val_images']:,} val images), a final "
            f"epoch {p['final_epoch_s']:.2f} s  [{p['shape']}]"
        )
    if note:
        out(f"  note: {note}")
    search, final = spec["search"], spec["final"]
    grid = grid_points(as_searched(spec["space"], search["algorithm"]))
    epoch_s = sum(p["epoch_s"] for p in probes) / len(probes)
    epochs = int(spec["scheduler"]["max_t"])
    if search["num_samples"] is not None:
        trials = grid * search["num_samples"]
        out(
            f"study as written: {trials} trials x up to {epochs} epochs = {trials * epochs} epochs, about "
            f"{trials * epochs * epoch_s / parallel:,.0f} s of training ({parallel} at once)"
        )
    else:
        out(f"study as written: {grid} grid point(s) x num_samples sized from search.budget")
    if final["after_search"]:
        seeds = len(final["seeds"])
        f_epochs = backend.final_epochs(spec)
        out(
            f"  + final training: {seeds} seeds x {f_epochs} epochs, about "
            f"{final_seconds(spec, probes, parallel, f_epochs):,.0f} s with each round's test evaluation"
            + (
                " (final.epochs sized from search.budget at run time)"
                if search["budget"] and not final["epochs"]
                else ""
            )
        )
    if not budget:
        out("budget: none given (search.budget or --budget 30m|2h|1.5gpu-h|400epochs shows what fits)")
        return
    p = plan(spec, budget, probes, grid, parallel, backend.gpu_hours, search["num_samples"])
    _fits(budget, p, out, recipe_name(record))


def _at_once(spec: dict[str, Any], probes: list[dict[str, Any]]) -> tuple[float, int]:
    """(CPUs a trial holds, trials at once on this machine) for the configurations ``probes`` measured."""
    cpus = probed_cpus(probes) or float(spec["resources"]["cpu"])
    return cpus, concurrency(spec, os.cpu_count() or 1, probes[0].get("gpus", 0), cpus)


def _fits(b: Budget, p: dict[str, Any], out: Any, recipe: str) -> None:
    if p["search"] == "skipped":
        out(f"budget {b.text}: no search: {p['skipped_because']}; the whole budget trains {recipe}")
    else:
        _search_fits(b, p, out)
    if "final_epochs" in p:
        out(
            f"  final {b.show(p['planned']['final'])}: {p['final_epochs']} epochs x {p['final_seeds']} seeds "
            f"(from the {p['final_epochs_from']}{'; train.epochs stretched: no search' if p.get('final_stretched') else ''})"
        )


def _search_fits(b: Budget, p: dict[str, Any], out: Any) -> None:
    out(
        f"budget {b.text}: search {b.show(p['planned']['search'])}{share_from(p)} fits {p['trials_that_fit']} trials of "
        f"{trial_length(p)} ({p['trial_epochs_expected']:g} on average under the scheduler); planned {p['trials']} (num_samples={p['num_samples']}, from the "
        f"{p['num_samples_from']})"
        + (
            " — more than fit: the budget's stopper ends the search when its share is spent"
            if p["trials"] > p["trials_that_fit"]
            else ""
        )
    )
