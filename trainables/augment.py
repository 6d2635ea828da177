"""Augmentation on whole batches of tensors, on the batch's device — no per-image Python loop.

Paper 004 saw "quite a large overhead at the loading of each batch" from per-image transforms;
here one batch costs a few tensor ops. Every op draws its own per-sample Bernoulli mask, and
``p`` gates each sample as a whole (paper 004 searched that single probability).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def _mask(n: int, p: float, gate: torch.Tensor, g: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return (torch.rand(n, generator=g, device=device) < p) & gate


def augment_batch(x: torch.Tensor, cfg: dict[str, Any], g: torch.Generator | None) -> torch.Tensor:
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
        x = xp[
            torch.arange(n, device=dev)[:, None, None, None],
            torch.arange(x.shape[1], device=dev)[None, :, None, None],
            rows,
            cols,
        ]
    rot, rc = float(cfg["rotation"]), float(cfg["resized_crop"])
    if rot > 0 or rc > 0:
        x = _affine(x, cfg, gate, g)
    if int(cfg.get("randaugment", 0)) > 0:
        x = _randaugment(x, cfg, gate, g)
    cj = float(cfg.get("color_jitter", 0.0))
    if cj > 0:
        x = _color_jitter(x, cj, _mask(n, float(cfg["color_jitter_p"]), gate, g, dev), g)
    for key, dim in (("hflip", 3), ("vflip", 2)):
        p = float(cfg[key])
        if p > 0:
            m = _mask(n, p, gate, g, dev)[:, None, None, None]
            x = torch.where(m, x.flip(dim), x)
    return x


def _affine(x: torch.Tensor, cfg: dict[str, Any], gate: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
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


def _randaugment(x: torch.Tensor, cfg: dict[str, Any], gate: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    """torchvision's RandAugment on groups of ``randaugment_group`` images (each group draws its own ops).

    torchvision draws from the global RNG; it is forked and seeded from ``g`` so resumed runs repeat it.
    """
    from torchvision.transforms import v2

    ra = v2.RandAugment(num_ops=int(cfg["randaugment"]), magnitude=int(cfg["randaugment_magnitude"]))
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g, device=x.device))
    step = max(1, int(cfg["randaugment_group"]))
    u8 = x.clamp(0, 255).round().to(torch.uint8)  # RandAugment's ops are defined on 0..255 images
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = torch.cat([ra(u8[i : i + step]) for i in range(0, len(u8), step)]).float()
    return torch.where(gate.view(-1, 1, 1, 1), out, x)


def _color_jitter(x: torch.Tensor, s: float, m: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    """Brightness, contrast and saturation, one random factor each per sample (0..255 scale kept)."""
    n, dev = x.shape[0], x.device

    def factor() -> torch.Tensor:
        return (1 + (torch.rand(n, generator=g, device=dev) * 2 - 1) * s).view(n, 1, 1, 1)

    out = x * factor()
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * factor() + mean
    if x.shape[1] == 3:
        grey = 0.299 * out[:, :1] + 0.587 * out[:, 1:2] + 0.114 * out[:, 2:3]
        out = (out - grey) * factor() + grey
    return torch.where(m.view(n, 1, 1, 1), out.clamp(0, 255), x)  # unmasked samples stay bit-identical


def mix_batch(
    x: torch.Tensor, y: torch.Tensor, mixup: float, cutmix: float, g: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Mixup or CutMix (one chosen per batch when both are on): returns x, y_a, y_b and the weight of y_a.

    The loss is ``lam * loss(out, y_a) + (1 - lam) * loss(out, y_b)``.
    """
    n, dev = x.shape[0], x.device
    perm = torch.randperm(n, generator=g, device=dev)
    use_cut = cutmix > 0 and (mixup <= 0 or bool(torch.rand(1, generator=g, device=dev) < 0.5))
    alpha = cutmix if use_cut else mixup
    # Beta draw seeded from ``g``, so a resumed run mixes exactly as an uninterrupted one.
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g, device=dev))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    if use_cut:
        h, w = x.shape[-2:]
        ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy = int(torch.randint(0, h, (1,), generator=g, device=dev))
        cx = int(torch.randint(0, w, (1,), generator=g, device=dev))
        y0, y1, x0, x1 = max(cy - ch // 2, 0), min(cy + ch // 2, h), max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)  # the pasted area decides the label weight
    else:
        x = lam * x + (1 - lam) * x[perm]
    return x, y, y[perm], lam
