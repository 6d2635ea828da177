"""One rule for what a trial holds: its GPU share's memory cap, whether its pool fits on the GPU,
its GPU-hours, and the CPUs it asks Ray for.

``resources.gpu`` is the share of one GPU Ray reserves for a trial (0.25 = a quarter). The same
share caps the trial's device memory, bounds what its uint8 pool may take there, and weighs its
time in GPU-hours — for search trials and final trials alike. The decisions take the device facts
as plain numbers, so they are tested without a GPU; ``device_memory`` reads them from a real one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# The pool may take at most this share of the memory a trial can still allocate: the rest is for
# the model, its activations and optimizer state.
POOL_SHARE = 0.5


def memory_cap(gpu: float) -> float | None:
    """The fraction of the device's memory a trial may allocate: its share when it holds part of a GPU."""
    return float(gpu) if 0 < gpu < 1 else None


def memory_budget(gpu: float, free_bytes: float, total_bytes: float, reserved_bytes: float) -> float:
    """Bytes the trial can still allocate: what is free on the device, and under a cap what is left of it
    (``reserved_bytes``: what this process's allocator already holds, which counts against the cap)."""
    cap = memory_cap(gpu)
    if cap is None:
        return float(free_bytes)
    return max(0.0, min(float(free_bytes), cap * total_bytes - reserved_bytes))


def pool_fits(
    pool_bytes: float, gpu: float, free_bytes: float, total_bytes: float, reserved_bytes: float = 0.0
) -> bool:
    """Whether the uint8 pool goes to device memory (batches gathered there) rather than staying on the host."""
    return pool_bytes < POOL_SHARE * memory_budget(gpu, free_bytes, total_bytes, reserved_bytes)


def gpu_share(gpu: float, on_gpu: bool) -> float:
    """GPUs a trial holds: its requested share; a whole GPU when it runs on one without a request
    (outside Ray, e.g. tests or benchmarks calling ``fit`` directly); none on CPU."""
    if not on_gpu:
        return 0.0
    return float(gpu) if gpu > 0 else 1.0


def gpu_hours(seconds: float, gpu: float, on_gpu: bool = True) -> float:
    """Time weighted by the GPUs held: four trials at 0.25 for an hour cost one GPU-hour."""
    return float(seconds) * gpu_share(gpu, on_gpu) / 3600


def cpu_request(cpu: float, workers: int, streamed: bool, cluster_cpus: float | None = None) -> float:
    """CPUs a trial asks Ray for: ``resources.cpu`` plus, for a streamed pool, its decoding processes
    (``data.workers``), so concurrent trials do not oversubscribe the host. Never more than the cluster
    has (a request it cannot meet would wait forever), nor less than ``resources.cpu``."""
    want = float(cpu) + (int(workers) if streamed else 0)
    if cluster_cpus is None:
        return want
    return max(float(cpu), min(want, float(cluster_cpus)))


def trial_request(
    resources: dict[str, Any], workers: int, streamed: bool, cluster_cpus: float | None = None
) -> dict[str, float]:
    """The Ray resource request of one trial (search or final)."""
    return {"cpu": cpu_request(resources["cpu"], workers, streamed, cluster_cpus), "gpu": float(resources["gpu"])}


def device_memory(device: torch.device) -> tuple[int, int, int]:
    """(free, total, reserved by this process) bytes of a CUDA device."""
    import torch  # here, not at the top: the driver reads trial_request and gpu_hours without torch

    free, total = torch.cuda.mem_get_info(device)
    return int(free), int(total), int(torch.cuda.memory_reserved(device))


def apply_memory_cap(gpu: float) -> None:
    """Cap this process at its share of the GPU, so a fractional trial cannot take its neighbours' memory."""
    import torch

    cap = memory_cap(gpu)
    if cap is not None and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(cap)
