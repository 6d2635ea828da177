"""Augmentation on whole batches of tensors, on the batch's device — no per-image Python loop.

Paper 004 saw "quite a large overhead at the loading of each batch" from per-image transforms;
here one batch costs a few tensor ops. Every op draws its own per-sample Bernoulli mask, and
``p`` gates each sample as a whole (paper 004 searched that single probability).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

# Keys of ``data.augment`` with their defaults (units and meaning in the comment).
AUGMENT_DEFAULTS: dict[str, Any] = {
    "p": 1.0,                # probability that a sample is augmented at all
    "hflip": 0.0,            # probability of a horizontal flip
    "vflip": 0.0,            # probability of a vertical flip
    "pad_crop": 0,           # pixels of zero padding before a random crop back to size; 0 = off
    "pad_crop_p": 1.0,       # probability of the pad+crop
    "rotation": 0.0,         # max rotation in degrees (uniform in [-r, r]); 0 = off
    "rotation_p": 1.0,       # probability of the rotation
    "resized_crop": 0.0,     # min area fraction of a random resized crop (e.g. 0.08); 0 = off
    "resized_crop_p": 1.0,   # probability of the resized crop
}


def _mask(n: int, p: float, gate: torch.Tensor, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return (torch.rand(n, generator=g, device=device) < p) & gate


def augment_batch(x: torch.Tensor, cfg: dict[str, Any], g: torch.Generator) -> torch.Tensor:
    """Augment a float batch ``x`` (N, C, H, W); ``g`` lives on ``x.device``."""
    n, _, h, w = x.shape
    dev = x.device
    gate = torch.rand(n, generator=g, device=dev) < float(cfg["p"])
    if not gate.any():
        return x
    pad = int(cfg["pad_crop"])
    if pad > 0:
        m = _mask(n, float(cfg["pad_crop_p"]), gate, g, dev)
        xp = F.pad(x, (pad, pad, pad, pad))
        off = torch.randint(0, 2 * pad + 1, (2, n), generator=g, device=dev)
        off = torch.where(m, off, torch.full_like(off, pad))  # unmasked: the centre crop = identity
        rows = (off[0][:, None] + torch.arange(h, device=dev))[:, None, :, None]
        cols = (off[1][:, None] + torch.arange(w, device=dev))[:, None, None, :]
        x = xp[torch.arange(n, device=dev)[:, None, None, None], torch.arange(x.shape[1], device=dev)[None, :, None, None],
               rows, cols]
    rot, rc = float(cfg["rotation"]), float(cfg["resized_crop"])
    if rot > 0 or rc > 0:
        x = _affine(x, cfg, gate, g)
    for key, dim in (("hflip", 3), ("vflip", 2)):
        p = float(cfg[key])
        if p > 0:
            m = _mask(n, p, gate, g, dev)[:, None, None, None]
            x = torch.where(m, x.flip(dim), x)
    return x


def _affine(x: torch.Tensor, cfg: dict[str, Any], gate: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Rotation and random resized crop folded into one affine warp per sample (one grid_sample)."""
    n, dev = x.shape[0], x.device
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    rot = float(cfg["rotation"])
    if rot > 0:
        m = _mask(n, float(cfg["rotation_p"]), gate, g, dev)
        ang = (torch.rand(n, generator=g, device=dev) * 2 - 1) * math.radians(rot) * m
        c, s = torch.cos(ang), torch.sin(ang)
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = c, -s, s, c
    rc = float(cfg["resized_crop"])
    if rc > 0:
        m = _mask(n, float(cfg["resized_crop_p"]), gate, g, dev)
        area = rc + (1 - rc) * torch.rand(n, generator=g, device=dev)
        logr = (torch.rand(n, generator=g, device=dev) * 2 - 1) * math.log(4 / 3)  # aspect in [3/4, 4/3]
        sx = torch.sqrt(area * torch.exp(logr)).clamp(max=1.0)
        sy = torch.sqrt(area / torch.exp(logr)).clamp(max=1.0)
        sx, sy = torch.where(m, sx, 1.0), torch.where(m, sy, 1.0)
        tx = (torch.rand(n, generator=g, device=dev) * 2 - 1) * (1 - sx)
        ty = (torch.rand(n, generator=g, device=dev) * 2 - 1) * (1 - sy)
        theta[:, 0, :2] *= sx[:, None]
        theta[:, 1, :2] *= sy[:, None]
        theta[:, 0, 2], theta[:, 1, 2] = tx, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
