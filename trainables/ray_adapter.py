"""The one place trainables meets Ray: a function trainable around ``engine.fit``.

It applies the trial's sampled values to the study spec, ends infeasible configurations with
their reason (a result, not a crash), reports once per epoch with a checkpoint, and resumes from
``tune.get_checkpoint()`` — which is how Hyperband/PBT pause-and-resume, PBT exploit and
``--resume`` continue where a trial was.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import torch

from . import _backend
from .data import Pools
from .engine import fit

CKPT_FILE = "state.pt"


def worst(mode: str) -> float:
    return float("-inf") if mode == "max" else float("inf")


def trial(config: dict[str, Any], *, spec: dict[str, Any], pools: Pools) -> None:
    from ray import tune

    resolved = _backend.apply_config(spec, config)
    metric, mode = spec["experiment"]["metric"], spec["experiment"]["mode"]
    reason = _backend.infeasible(resolved)
    if reason is not None:
        # The worst score keeps schedulers and model-based searchers consistent; ``infeasible`` marks it.
        tune.report({metric: worst(mode), "infeasible": 1, "reason": reason, "epoch": 0})
        return
    torch.set_num_threads(max(1, int(spec["resources"]["cpu"])))
    gpu = float(spec["resources"]["gpu"])
    if torch.cuda.is_available() and 0 < gpu < 1:
        # A fractional trial may not take its neighbours' memory.
        torch.cuda.set_per_process_memory_fraction(gpu)
    state = None
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = torch.load(os.path.join(d, CKPT_FILE), map_location="cpu", weights_only=True)

    def on_epoch(metrics: dict[str, float], get_state: Any) -> None:
        with tempfile.TemporaryDirectory() as d:
            torch.save(get_state(), os.path.join(d, CKPT_FILE))
            tune.report({**metrics, "infeasible": 0}, checkpoint=tune.Checkpoint.from_directory(d))

    fit(resolved, pools, state=state, on_epoch=on_epoch)


def make_trainable(spec: dict[str, Any], pools: Pools) -> Any:
    """The Tune trainable: ``pools`` go into the object store once and are shared by every trial."""
    from ray import tune

    res = spec["resources"]
    fn = tune.with_parameters(trial, spec=spec, pools=pools)
    return tune.with_resources(fn, {"cpu": res["cpu"], "gpu": res["gpu"]})
