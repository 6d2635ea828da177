"""Where a trial computes: the device, host-memory trimming, and the random streams (seeding, and saving and
restoring them with a checkpoint). With what arithmetic (bf16, channels_last) is ``arithmetic``'s choice.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def resolve_device(want: str = "auto") -> torch.device:
    if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def device_warning(want: str = "auto") -> str | None:
    """Why a trial that may use a GPU trains on CPU, or None. Reported with the trial's results (the
    study's console prints it once), not warned in every trial process."""
    if want == "auto" and not torch.cuda.is_available():
        return "no GPU visible to the trials: training on CPU"
    return None


_LIBC: Any = None


def release_host_memory() -> None:
    """Hand freed heap pages back to the OS (glibc only; elsewhere a no-op).

    glibc raises its mmap threshold after large frees, so past batches' temporaries stay resident
    in the heap (100-150 MB per trial measured at batch 256, 64 px); trimming once per epoch keeps a
    trial's resident memory at its live tensors, and concurrent trials at about one data copy.
    """
    global _LIBC
    if _LIBC is None:
        import ctypes
        import sys

        try:
            _LIBC = ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else False
            _LIBC.malloc_trim  # noqa: B018  (musl has no malloc_trim)
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def rng_state() -> dict[str, Any]:
    """Every global random stream training may draw from — torch (dropout, stochastic depth), CUDA,
    numpy, python — in a form ``torch.load(weights_only=True)`` reads back. Batch order and augmentation
    use their own per-epoch generators; these streams are what a resumed run must continue."""
    _, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)  # the tuple form (MT19937)
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {
            "version": int(version),
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Put back the streams ``rng_state`` recorded."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        for i, s in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)
