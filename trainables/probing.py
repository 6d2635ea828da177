"""A short measured throughput probe: a few training and evaluation batches of one configuration on this
device, through the engine's own step, and what an epoch of it costs in seconds.

The orchestration sizes compute budgets from it (``search.budget``, ``tune-run --estimate``): it knows
images per second and seconds per epoch, never the model.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import torch

from ._backend import model_args
from .batches import predict
from .cost import speed_timing_s
from .data import Pools, make_splits
from .device import resolve_device
from .engine import setup, train_epoch
from .final import final_spec
from .resources import trial_request
from .sections import model_kwargs

WARMUP_BATCHES = 2  # kernel selection, allocator growth, first-touch of the pool: kept out of the timing
TIMED_BATCHES = 5
TIMED_EVAL_BATCHES = 3


def probe_shape(spec: dict[str, Any]) -> str:
    """What makes two configurations cost differently per image: the model with its whole-number and named
    arguments (widths, depths, patch sizes), freezing, the input size and the batch size. Float arguments are
    rates (dropout, drop path) that leave the arithmetic as it is, as do learning rates and the like."""
    t, m = spec["train"], spec["model"]
    args = {k: v for k, v in model_kwargs(m).items() if not isinstance(v, float)}
    return json.dumps(
        {
            "model": m.get("name"),
            "args": args,
            "freeze": m.get("freeze", "none"),
            "image_size": model_args(spec)["image_size"],
            "batch_size": t["batch_size"],
        },
        sort_keys=True,
        default=str,
    )


def _timed(fn: Any, device: torch.device) -> float:
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def probe(spec: dict[str, Any], pools: Pools) -> dict[str, Any]:
    """Images/s of training and evaluation at the spec's batch and image size on this device, with the
    threads a trial gets (``resources.cpu``), and the seconds of one search epoch and one final epoch."""
    device = resolve_device(spec["train"]["device"])
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(spec["resources"]["cpu"])))  # as claim_resources does in a trial
    run = setup(spec, pools, device)
    try:
        train_epoch(run, 0, first=True, max_batches=WARMUP_BATCHES)
        stats = train_epoch(run, 1, first=False, max_batches=TIMED_BATCHES)
        eval_bs = int(spec["train"]["eval_batch_size"])
        val = run.splits.val if len(run.splits.val) else run.splits.train
        sample = val[: eval_bs * TIMED_EVAL_BATCHES]
        tta = str(spec["train"].get("tta", "none"))  # flip: two passes per image
        predict(run.model, run.batcher, sample[:eval_bs], eval_bs, run.autocast, tta)  # warm-up
        eval_s = _timed(lambda: predict(run.model, run.batcher, sample, eval_bs, run.autocast, tta), device)
        test_ips = len(sample) / max(eval_s, 1e-9)
        if run.autocast:  # a final model's test split is predicted in fp32 (predict_split): timed as such
            one = sample[:eval_bs]
            predict(run.model, run.batcher, one[:2], eval_bs, False, tta)  # warm-up of the fp32 kernels
            test_ips = len(one) / max(
                _timed(lambda: predict(run.model, run.batcher, one, eval_bs, False, tta), device), 1e-9
            )
        n_train, n_val, n_test, size = len(run.splits.train), len(run.splits.val), len(run.splits.test), int(run.size)
        arithmetic = run.arithmetic.name
    finally:
        run.batcher.close()
        torch.set_num_threads(threads)
        run = None  # type: ignore[assignment]  # the model freed before the cache is emptied
        if device.type == "cuda":  # the driver probes, then trials need the GPU's memory
            torch.cuda.empty_cache()
    train_ips, eval_ips = stats.images_per_s, len(sample) / max(eval_s, 1e-9)
    return {
        "shape": probe_shape(spec),
        "model": str(spec["model"].get("name")),
        "device": str(device),
        "gpus": torch.cuda.device_count(),
        "batch_size": int(spec["train"]["batch_size"]),
        "image_size": size,
        "arithmetic": arithmetic,  # what this node's trials will compute in (chosen first here, for the recipe's
        # full length: timed and cached when that repays it, and the study's shorter trials read the cache)
        "train_images_per_s": train_ips,
        "eval_images_per_s": eval_ips,
        "train_images": n_train,
        "val_images": n_val,
        "epoch_s": n_train / train_ips + n_val / eval_ips,
        "val_s": n_val / eval_ips,  # of epoch_s: validation, on the whole validation set whatever the fidelity
        "test_s": n_test / test_ips,  # a final model's test evaluation (in fp32), after its training
        "speed_s": speed_timing_s(spec),  # then its speed timed (cost.measure_cost)
        # CPUs a trial of it asks Ray for (a streamed set's decoding workers included): how many run at once
        "trial_cpus": trial_request(spec["resources"], int(spec["data"].get("workers", 0)), pools.streamed)["cpu"],
        "final_epoch_s": float(final_epoch_images(spec, pools) @ np.array([1 / train_ips, 1 / eval_ips])),
    }


def final_epoch_images(spec: dict[str, Any], pools: Pools) -> np.ndarray:
    """(images trained, images validated) in one epoch of final training (train + validation merged, or
    train with validation kept out)."""
    fs = final_spec(spec, 0)
    splits = make_splits(pools, fs["data"])
    merged = (spec.get("final") or {}).get("train_on", "train+val") == "train+val"
    return np.array(
        [len(splits.train) + (len(splits.val) if merged else 0), 0 if merged else len(splits.val)], dtype=float
    )
