"""A final model in the form a model registry takes: the network on CPU and an example input batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .final import load_model


def exportable(model_dir: Path) -> tuple[torch.nn.Module, np.ndarray]:
    """The model of ``model_dir`` (eval mode, CPU) and one normalised float32 input (1 x C x H x W) that
    fixes its input signature; the model returns one logit per class (one for a BCE head)."""
    model, _, meta = load_model(Path(model_dir), torch.device("cpu"))
    size = int(meta["image_size"])
    return model.eval(), np.zeros((1, int(meta["in_chans"]), size, size), dtype=np.float32)
