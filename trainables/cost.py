"""Model cost on the device that trained: parameters, FLOPs per image, throughput and latency."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn


def flops_per_image(model: nn.Module, in_chans: int, size: int, device: torch.device) -> int:
    """Forward FLOPs for one image (torch.utils.flop_counter; a multiply-add counts as 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    x = torch.zeros(1, in_chans, size, size, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


@torch.no_grad()
def _timed(model: nn.Module, x: torch.Tensor, autocast: bool, min_iters: int, min_seconds: float) -> float:
    """Seconds per forward pass, after warm-up, over at least ``min_iters`` passes and ``min_seconds``."""
    dev = x.device
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
        for _ in range(3 if dev.type == "cuda" else 1):  # warm-up: kernels selected, caches filled
            model(x)
        sync()
        n, t0 = 0, time.perf_counter()
        while n < min_iters or time.perf_counter() - t0 < min_seconds:
            model(x)
            n += 1
        sync()
    return (time.perf_counter() - t0) / n


def trial_cost(model: nn.Module, in_chans: int, size: int, device: torch.device, autocast: bool) -> dict[str, float]:
    """``sections.COST_METRICS`` of a trial's model as it predicts (``model``: with train.tta=flip, its mirror-averaged
    predictor), by ``measure_cost`` with the final models' latency timing (a shorter one was noisier, and a trial's
    latency is an objective); the batch throughput, which no objective uses, is not timed. The model's train or
    eval mode is kept."""
    was_training = model.training
    try:
        c = measure_cost(model, in_chans, size, device, autocast, throughput=False)
    finally:
        model.train(was_training)
    return {"params": int(c["params"]), "flops": int(c["flops_per_image"]), "latency_ms": float(c["latency_ms"])}


def final_timing_s(spec: dict[str, Any]) -> float:
    """final.timing_s: seconds each of a final model's speed timings runs at least (``measure_cost``'s ``seconds``)."""
    return float((spec.get("final") or {}).get("timing_s", 1.0))


def speed_timing_s(spec: dict[str, Any]) -> float:
    """Seconds a final model's ``measure_cost`` times its speed: two timings (throughput, latency) of
    final.timing_s each (their warm-up passes aside)."""
    return 2 * final_timing_s(spec)


def measure_cost(
    model: nn.Module,
    in_chans: int,
    size: int,
    device: torch.device,
    autocast: bool,
    batch: int = 256,
    seconds: float = 1.0,
    throughput: bool = True,
) -> dict[str, Any]:
    """The columns of paper 002's Table 5.5 and paper 000's Table 1 (``throughput=False``: without the batch's
    images/s, which takes as long again to time); each timing runs at least ``seconds`` (``timing_s``)."""
    model.eval()
    flops = flops_per_image(model, in_chans, size, device)
    if device.type != "cuda":
        batch = min(batch, 16)  # a CPU's images/s barely grows past 16; 256 ViT-B images take minutes
    timed: dict[str, Any] = {}
    if throughput:
        t_batch = _timed(model, torch.zeros(batch, in_chans, size, size, device=device), autocast, 2, seconds)
        timed = {"throughput_images_per_s": batch / t_batch, "throughput_batch": batch}
    t_one = _timed(model, torch.zeros(1, in_chans, size, size, device=device), autocast, 5, seconds)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "flops_per_image": flops,
        "macs_per_image": flops // 2,
        **timed,
        "latency_ms": t_one * 1000,
        "timing_s": seconds,
    }
