"""Where a final model looks: Grad-CAM overlays for N test images (pytorch-grad-cam).

CNNs: Grad-CAM on the last convolution. Vision Transformers (timm's and ours: ``blocks``;
torchvision's: ``encoder.layers``): Grad-CAM on the last block's token map, the usual
attention-map view (paper 001 compared both kinds of maps with defect masks). Models with neither
(e.g. Swin) fall back to the last convolution, which is their patch embedding: coarse, and said so.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .batches import Batcher, as_tensor, pixels, take
from .data import Pools, Splits, make_splits
from .metrics import predict_labels
from .recipe import two_logits


def _token_layer(model: nn.Module) -> nn.Module | None:
    """The first norm of the last transformer block, or None for models that are not ViTs."""
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.Sequential) and len(blocks) and isinstance(getattr(blocks[-1], "norm1", None), nn.Module):
        return blocks[-1].norm1  # type: ignore[return-value]  # checked just above
    layers = getattr(getattr(model, "encoder", None), "layers", None)
    if isinstance(layers, nn.Sequential) and len(layers) and isinstance(getattr(layers[-1], "ln_1", None), nn.Module):
        return layers[-1].ln_1  # type: ignore[return-value]  # checked just above
    return None


def _tokens_to_map(t: torch.Tensor) -> torch.Tensor:
    """(B, N, C) tokens -> (B, C, h, w), dropping class/register tokens in front of the square patch grid."""
    side = math.isqrt(t.shape[1])
    grid = t[:, t.shape[1] - side * side :, :]
    return grid.reshape(t.shape[0], side, side, t.shape[2]).permute(0, 3, 1, 2)


def target_layer(model: nn.Module) -> tuple[nn.Module, str]:
    tok = _token_layer(model)
    if tok is not None:
        return tok, "vit-tokens"
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has neither convolutions nor transformer blocks to explain")
    return convs[-1], "last-conv"


def _overlay(model: Any, cam: Any, xb: torch.Tensor, pixels01: torch.Tensor, thr: float | None) -> tuple[int, Any]:
    """(predicted class, the class map over the image) of one normalised image ``xb`` (``pixels01``: the same in
    0..1, as shown)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image
    from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget, ClassifierOutputTarget

    with torch.no_grad():
        logits = model(xb).float()
    one_logit = logits.shape[1] == 1
    # The rule the test metrics use; a one-logit head always decides on P(class 1).
    cut = 0.5 if thr is None and one_logit else thr
    pred = int(predict_labels(two_logits(logits).cpu().numpy(), cut)[0])
    target = BinaryClassifierOutputTarget(pred) if one_logit else ClassifierOutputTarget(pred)
    heat = cam(input_tensor=xb, targets=[target])[0]
    img = pixels01[0].permute(1, 2, 0).clamp(0, 1).cpu().numpy()
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return pred, show_cam_on_image(img.astype(np.float32), heat, use_rgb=True)


def explain(
    model_dir: Path,
    pools: Pools,
    data: dict[str, Any],
    n: int,
    split: str = "test",
    out_dir: Path | None = None,
    splits: Splits | None = None,
) -> Path:
    """Write ``n`` overlays of ``split`` images (true / predicted class in the name) and index.csv."""
    from PIL import Image
    from pytorch_grad_cam import GradCAM

    from .model_folder import load_model

    model, spec, meta = load_model(model_dir)
    model.eval()
    device = next(model.parameters()).device
    splits = splits or make_splits(pools, data)
    idx = getattr(splits, split)[:n]
    from_train = split != "test" or splits.test_from_train
    px, py = pools.pool(from_train)
    x, y = pixels(px), as_tensor(py)
    size = int(meta["image_size"])
    batcher = Batcher(x, y, size, meta["mean"], meta["std"], device, False)
    raw = Batcher(x, y, size, [0.0] * pools.in_chans, [1 / 255] * pools.in_chans, device, False)  # 0..1 pixels
    layer, kind = target_layer(model)
    out_dir = out_dir or model_dir / "explain"
    out_dir.mkdir(parents=True, exist_ok=True)
    thr = meta.get("threshold")
    rows = []
    with GradCAM(
        model=model, target_layers=[layer], reshape_transform=_tokens_to_map if kind == "vit-tokens" else None
    ) as cam:
        for i, j in enumerate(idx):
            u8 = take(x, torch.as_tensor([j]))  # read once (a file decode when streamed), shown twice
            pred, overlay = _overlay(model, cam, batcher.finish(u8), raw.finish(u8), thr)
            true = pools.classes[int(y[j])]
            name = f"{i:03d}_true-{true}_pred-{pools.classes[pred]}.png"
            Image.fromarray(overlay).save(out_dir / name)
            rows.append(
                {
                    "file": name,
                    "index": int(j),
                    "true": true,
                    "pred": pools.classes[pred],
                    "map": kind,
                    "layer": type(layer).__name__,
                }
            )
    with open(out_dir / "index.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["file"])
        w.writeheader()
        w.writerows(rows)
    return out_dir
