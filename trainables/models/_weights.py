"""Resolve ``pretrained`` (false | true | path) to a local weight file, never to a silent random start."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class WeightsNotFound(FileNotFoundError):
    """Pretrained weights were asked for and are not on this machine."""


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load weights from a .safetensors file or a plain state_dict, refusing pickled code."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsNotFound(f"model.pretrained: weight file {str(p)!r} does not exist")
    import torch

    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))
    state = torch.load(p, map_location="cpu", weights_only=True)
    # Common wrappers: {"state_dict": ...}, {"model": ...}
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state
