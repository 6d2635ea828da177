"""The one place trainables meets Ray: a function trainable around ``engine.fit``.

It applies the trial's sampled values to the study spec, ends infeasible configurations with
their reason (a result, not a crash), reports once per epoch with a checkpoint, and resumes from
``tune.get_checkpoint()`` — which is how Hyperband/PBT pause-and-resume, PBT exploit, ``--resume``
and Tune's retry after a lost node (``resources.max_failures``) continue where a trial was.

Outcomes that running again cannot change — infeasible, diverged, out of GPU memory, a user error
(missing weights or data: ``USER_ERRORS``) — end the trial with a final result that says so, never
with an exception: Tune retries a trial that raised as it retries one whose node died.

The driver imports this module to build the trainable, and never trains: torch and the engine are imported
inside the functions a trial runs, so that a study's driver does not pay torch's import (~1.8 CPU-seconds and
a few hundred MB on a 2-core CPU) for nothing.
"""

from __future__ import annotations

import gc
import os
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import _backend
from ._backend import USER_ERRORS
from .data import Pools
from .resources import trial_request
from .sections import COST_METRICS

CKPT_FILE = "state.pt"
RESET_TIMEOUT_S = 300  # s a reused trial process waits for the previous trial to end (see reset_config)


def device_name() -> str:
    """What this trial trains on, recorded with its results."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"cpu ({platform.processor() or platform.machine()})"


def gpu_ids() -> str:
    """The GPUs Ray pinned this trial to (it sets CUDA_VISIBLE_DEVICES to them), e.g. ``"1"``; ``""`` for none.
    Logical GPUs count too (``ray start --num-gpus 2`` on a CPU machine): the record shows how trials shared them."""
    import ray

    if not ray.is_initialized():
        return ""
    return ",".join(str(i) for i in ray.get_runtime_context().get_accelerator_ids().get("GPU", []))


def device_fields(spec: dict[str, Any]) -> dict[str, str]:
    """``device``, ``gpu_ids`` and, when training fell back to CPU, a ``warning`` the driver's console prints
    once."""
    from .device import device_warning

    note = device_warning(spec["train"].get("device", "auto"))
    return {"device": device_name(), "gpu_ids": gpu_ids(), **({"warning": note} if note else {})}


def worst(mode: str) -> float:
    return float("-inf") if mode == "max" else float("inf")


def objectives(spec: dict[str, Any]) -> dict[str, str]:
    """What the study optimises, ``{metric: mode}``: ``experiment.objectives``, else its one metric."""
    exp = spec["experiment"]
    return dict(exp.get("objectives") or {exp["metric"]: exp["mode"]})


def claim_resources(spec: dict[str, Any]) -> None:
    """Hold this process to what the trial asked for: its CPU threads and its share of the GPU's memory."""
    import torch

    from .resources import apply_memory_cap

    torch.set_num_threads(max(1, int(spec["resources"]["cpu"])))
    apply_memory_cap(float(spec["resources"]["gpu"]))


def trial(
    config: dict[str, Any],
    *,
    spec: dict[str, Any],
    pools: Pools,
    flatten: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] | None = None,
    limits: Callable[[dict[str, float]], str | None] | None = None,
) -> None:
    """One search trial. ``limits``: why a model of this cost (``COST_METRICS``, measured before its first epoch)
    breaks the study's hard limits (None: it does not); such a trial is infeasible and trains nothing."""
    from ray import tune

    if flatten is not None:  # the orchestrator's view of a conditional config: {dotted key: value}
        config = flatten(config, spec["space"])
    resolved = _backend.apply_config(spec, config)
    goals = objectives(spec)
    reason = _backend.infeasible(resolved)
    if reason is not None:
        # The worst score steers model-based searchers away; schedulers skip results flagged ``infeasible``.
        tune.report({**worst_scores(goals), "infeasible": 1, "reason": reason, "epoch": 0})
        return
    claim_resources(spec)
    state = None
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        import torch

        with ckpt.as_directory() as d:
            state = torch.load(os.path.join(d, CKPT_FILE), map_location="cpu", weights_only=True)

    device = device_fields(resolved)
    reported = [False]

    def on_cost(cost: dict[str, float]) -> bool:
        broken = limits(cost) if limits is not None else None
        if broken is not None:
            reported[0] = True
            tune.report({**cost, **worst_scores(goals), "infeasible": 1, "reason": broken, "epoch": 0})
        return broken is None

    def on_epoch(metrics: dict[str, Any], get_state: Any) -> None:
        reported[0] = True
        with tempfile.TemporaryDirectory() as d:
            save_checkpoint(get_state(), os.path.join(d, CKPT_FILE))
            tune.report(
                {**scored(metrics, goals), "infeasible": 0, **device},
                checkpoint=tune.Checkpoint.from_directory(d),
            )

    measure = limits is not None or any(m in COST_METRICS for m in goals)
    try:
        failed = fit_or_oom(resolved, pools, state, on_epoch, on_cost if measure else None)
    finally:
        release_for_next_trial()
    if failed is not None:
        tune.report({**scored(failed, goals), "infeasible": 0, **device})
    elif not reported[0] and state and state.get("history"):
        # Restored from the checkpoint of a run that had already ended (the driver was killed after the trial's
        # last epoch, before Tune recorded it): its last result again, or Tune keeps an older one as the last.
        tune.report({**scored(state["history"][-1], goals), "infeasible": 0, **device})


def worst_scores(goals: dict[str, str]) -> dict[str, float]:
    """Every objective at its worst: a searcher with several objectives reads each from a trial's result."""
    return {m: worst(mode) for m, mode in goals.items()}


def release_for_next_trial() -> None:
    """A reused actor (search.reuse_actors, search trials and final seeds alike) starts its next trial in this
    process: not beside the GPU memory this one held."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def save_checkpoint(state: dict[str, Any], path: str) -> None:
    """``torch.save`` without a CRC-32 per record: computing them took 10 of the 12 s a 1 GB checkpoint (a
    ConvNeXt-B and its AdamW state) took to write on a 2-core CPU, every epoch; ``torch.load`` reads the file
    without them, and a write cut short still fails to load (the zip's directory comes last)."""
    import torch

    options = getattr(torch.serialization, "get_crc32_options", None)  # torch >= 2.6; before it, with the CRCs
    if options is None:
        torch.save(state, path)
        return
    crc = options()
    torch.serialization.set_crc32_options(False)
    try:
        torch.save(state, path)
    finally:
        torch.serialization.set_crc32_options(crc)


def scored(metrics: dict[str, Any], goals: dict[str, str]) -> dict[str, Any]:
    """A diverged, out-of-memory or user-error result carries the worst score of every objective: searchers and
    schedulers count it as a bad result (unlike an infeasible one, it enters their statistics); never NaN, which
    they cannot rank."""
    if metrics.get("diverged") or metrics.get("oom") or metrics.get("error"):
        return {**metrics, **worst_scores(goals)}
    return metrics


def oom_reason(spec: dict[str, Any]) -> str:
    return _backend.oom_reason(spec, host=False)


def user_error(epoch: int, exc: Exception) -> dict[str, Any]:
    """The result that ends a trial on a user error (status ``error`` with the message): not retried."""
    return {"epoch": epoch, "error": 1, "reason": f"{type(exc).__name__}: {exc}"}


def fit_or_oom(
    spec: dict[str, Any],
    pools: Pools,
    state: dict[str, Any] | None,
    on_epoch: Callable[[dict[str, Any], Any], None],
    on_cost: Callable[[dict[str, float]], bool] | None = None,
) -> dict[str, Any] | None:
    """Train; None when training ended on its own (or ``on_cost`` refused it: ``engine.fit``), else the ``oom``
    or user-``error`` result that ends the trial (a result the study records, not a crash Tune would retry)."""
    import torch

    from .engine import fit

    done = [int(state["epoch"]) if state else 0]

    def counted(metrics: dict[str, Any], get_state: Any) -> None:
        done[0] = int(metrics["epoch"])
        on_epoch(metrics, get_state)

    try:
        fit(spec, pools, state=state, on_epoch=counted, on_cost=on_cost)
    except torch.OutOfMemoryError:
        pass  # handled outside the except block: its traceback holds the tensors that filled the memory
    except USER_ERRORS as exc:  # missing weights or data: the same again on any node
        return user_error(done[0], exc)
    else:
        return None
    return {"epoch": done[0], "oom": 1, "reason": oom_reason(spec)}


def _trainable(fn: Any, spec: dict[str, Any], pools: Pools, **params: Any) -> Any:
    """``fn`` with its constants in the object store (``pools`` once, shared by every trial) and the trial's
    resource request (a streamed pool's loader processes counted in its CPUs)."""
    import ray
    from ray import tune

    cluster = ray.cluster_resources().get("CPU") if ray.is_initialized() else None
    request = trial_request(spec["resources"], int(spec["data"].get("workers", 0)), pools.streamed, cluster)
    return tune.with_resources(_restorable(tune.with_parameters(fn, spec=spec, pools=pools, **params)), request)


def _restorable(fn: Any) -> Any:
    """``fn`` as a Tune trainable class that resumes from the newest checkpoint its trial has in storage when the
    one Tune's experiment state names is gone.

    Tune deletes a trial's superseded checkpoint (``num_to_keep``) as soon as the next one is reported, but
    uploads the experiment state that stops naming it later and asynchronously: a driver killed in between
    (SIGKILL, a lost head) leaves storage naming a deleted checkpoint, and ``--resume`` would end that trial
    as an error. Its newer checkpoint is there, with the result Tune recorded for it in ``result.json``.
    """
    from ray.tune.trainable.function_trainable import wrap_function

    base = wrap_function(fn)

    class Restorable(base):  # type: ignore[misc, valid-type]
        def restore(self, checkpoint_path: Any) -> Any:
            return super().restore(_existing_checkpoint(checkpoint_path))

        def reset_config(self, new_config: dict[str, Any]) -> bool:
            # A reused actor (search.reuse_actors) first waits for the stopped trial's thread to end: its loader
            # processes closed, its model collected. Ray waits 2 s by default, less than that takes on a busy
            # 2-core machine, and a failed reset ends the next trial in error.
            os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", str(RESET_TIMEOUT_S))
            return bool(super().reset_config(new_config))

    Restorable.__name__ = Restorable._name = base._name  # Tune names trials and restores by the trainable's name
    return Restorable


def _existing_checkpoint(result: Any) -> Any:
    """``result`` (Tune's ``_TrainingResult``), or when its checkpoint no longer exists whole, the newest whole
    checkpoint in the same trial folder with the metrics Tune reported with it. Whole: it holds its state file —
    a trial killed with its driver (SIGKILL) while uploading its next checkpoint leaves that one without it."""
    import json

    from pyarrow.fs import FileSelector, FileType
    from ray import tune

    ckpt = getattr(result, "checkpoint", None)
    if ckpt is None:
        return result
    fs = ckpt.filesystem

    def whole(path: str) -> bool:  # a checkpoint whose upload a SIGKILL cut short may lack its state file
        return bool(fs.get_file_info(f"{path.rstrip('/')}/{CKPT_FILE}").type == FileType.File)

    if whole(ckpt.path):
        return result
    trial_dir = os.path.dirname(ckpt.path.rstrip("/"))
    found = sorted(
        i.base_name
        for i in fs.get_file_info(FileSelector(trial_dir, allow_not_found=True))
        if i.type == FileType.Directory
        and i.base_name.startswith("checkpoint_")
        and whole(f"{trial_dir}/{i.base_name}")
    )
    if not found:
        return result  # nothing to continue from: Tune's own error says so
    try:
        with fs.open_input_stream(f"{trial_dir}/result.json") as f:
            lines = f.read().decode().splitlines()
    except OSError:
        lines = []
    metrics = None
    for line in lines:  # uploaded with the experiment state, so it may lack that result too
        try:
            row = json.loads(line)
        except ValueError:  # a line cut short by the killed driver
            continue
        if row.get("checkpoint_dir_name") == found[-1]:
            metrics = row
    if metrics is None:  # every report checkpoints (once per epoch): the iteration grew with the index
        gap = _index(found[-1]) - _index(os.path.basename(ckpt.path.rstrip("/")))
        metrics = {**result.metrics, "training_iteration": result.metrics.get("training_iteration", 0) + gap}
    return type(result)(checkpoint=tune.Checkpoint(f"{trial_dir}/{found[-1]}", fs), metrics=metrics)


def _index(checkpoint_dir: str) -> int:
    """Tune's checkpoint number: ``checkpoint_000002`` -> 2."""
    return int(checkpoint_dir.rpartition("_")[2])


def make_trainable(
    spec: dict[str, Any],
    pools: Pools,
    flatten: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] | None = None,
    limits: Callable[[dict[str, float]], str | None] | None = None,
) -> Any:
    return _trainable(trial, spec, pools, flatten=flatten, limits=limits)


def final_trial(
    config: dict[str, Any], *, spec: dict[str, Any], pools: Pools, out_dir: str | None, ends_by: float | None
) -> None:
    """One final model (one seed): per-epoch results while training, then the test metrics.

    The model folder goes to ``out_dir/<seed>``; without an ``out_dir`` (results in remote storage, which
    this node may not share) it is the last result's checkpoint, which Ray uploads to the run's storage.
    """
    from ray import tune

    from .final import OutOfTime, train_final

    claim_resources(spec)
    seed = int(config["seed"])
    device = device_fields(spec)

    epoch = [0]

    def on_epoch(metrics: dict[str, Any], get_state: Any) -> None:
        epoch[0] = int(metrics.get("epoch", epoch[0]))
        tune.report({**metrics, **device})

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(out_dir or tmp) / str(seed)
        try:
            m = train_final(spec, pools, seed, model_dir, on_epoch=on_epoch, ends_by=ends_by)
        except (*USER_ERRORS, FloatingPointError) as exc:  # missing weights or data, a diverged seed: not retried
            tune.report({**user_error(epoch[0], exc), **device})
            return
        except OutOfTime as exc:  # the budget's deadline left it too little: no model, and not a failure either
            tune.report({"epoch": 0, "out_of_time": 1, "reason": str(exc), **device})
            return
        finally:
            release_for_next_trial()
        test = {f"test_{k}": v for k, v in m["test"].items() if isinstance(v, (int, float)) and v is not None}
        tune.report(
            {**m["history"][-1], **test, **{f"cost_{k}": v for k, v in m["cost"].items()}, **device},
            checkpoint=None if out_dir else tune.Checkpoint.from_directory(str(model_dir)),
        )


def make_final_trainable(spec: dict[str, Any], pools: Pools, out_dir: str | None, ends_by: float | None = None) -> Any:
    return _trainable(final_trial, spec, pools, out_dir=out_dir, ends_by=ends_by)
