"""fast_cnn's modules (``fast_cnn.py`` registers the builder). At module level, not inside the builder: a final
model is pickled into MLflow (``export.py``), and pickle finds a class by its module and name."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

PATCH = 2  # the whitening stem's patch side: 2x2 patches of C channels, 4C directions, each with both signs
WHITEN_EPS = 5e-4  # added to each eigenvalue: the noisiest directions are not blown up
WHITEN_PIXELS = 2**22  # pixels per chunk of the covariance's sums: 4 M (4,096 images at 32 px, 83 at 224 px)


def norm(width: int, momentum: float) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(width, momentum=momentum, eps=1e-12)
    bn.weight.requires_grad_(False)  # scale fixed at 1, shift trained (fast with train.norm_lr_scale)
    return bn


class ConvGroup(nn.Sequential):
    """conv, 2x2 max-pool, BN, GELU, conv, BN, GELU: the pool early, so the second conv runs at half the side."""

    def __init__(self, cin: int, cout: int, momentum: float) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.MaxPool2d(2),
            norm(cout, momentum),
            nn.GELU(),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            norm(cout, momentum),
            nn.GELU(),
        )


class FastCNN(nn.Module):
    def __init__(
        self, num_classes: int, in_chans: int, widths: tuple[int, int, int], bn_momentum: float, scaling: float
    ) -> None:
        super().__init__()
        stem = 2 * in_chans * PATCH * PATCH
        self.scaling = scaling
        self.whiten = nn.Conv2d(in_chans, stem, PATCH, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)  # set from the data (init_from_data), then fixed
        w1, w2, w3 = widths
        self.body = nn.Sequential(
            nn.GELU(),
            ConvGroup(stem, w1, bn_momentum),
            ConvGroup(w1, w2, bn_momentum),
            ConvGroup(w2, w3, bn_momentum),
        )
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(w3, num_classes, bias=False)
        for m in self.body.modules():
            if isinstance(m, nn.Conv2d):  # the first min(in, out) filters pass their input channel through
                w = m.weight.data
                nn.init.dirac_(w[: w.size(1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.body(self.whiten(x))).flatten(1)) * self.scaling

    @torch.no_grad()
    def init_from_data(self, batches: Iterable[torch.Tensor]) -> None:
        """The stem's filters from batches of normalised training images (N, C, H, W): the eigenvectors of the 2x2
        patch covariance, each scaled by 1 / sqrt(eigenvalue), with both signs (GELU follows). Sums on the images'
        device, a chunk of pixels at a time (all patches of 5,000 images at once: ~0.5 GB in float64 at 32 px)."""
        c = self.whiten.in_channels
        k = c * PATCH * PATCH
        total = outer = None
        n = 0
        for batch in batches:
            for chunk in batch.split(max(1, WHITEN_PIXELS // (batch.shape[-1] * batch.shape[-2]))):
                patches = chunk.float().unfold(2, PATCH, 1).unfold(3, PATCH, 1)  # N, C, H', W', P, P
                rows = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, k).double()  # a conv weight's (C, P, P)
                s, o = rows.sum(0), rows.T @ rows
                total, outer = (s, o) if total is None else (total + s, outer + o)
                n += len(rows)
        if total is None or outer is None:
            return
        mean = (total / n).cpu()
        cov = (outer.cpu() - n * torch.outer(mean, mean)) / max(n - 1, 1)
        eigval, eigvec = torch.linalg.eigh(cov)
        scaled = eigvec.T / (eigval.clamp_min(0) + WHITEN_EPS).sqrt()[:, None]
        filters = scaled.reshape(-1, c, PATCH, PATCH).float()
        self.whiten.weight.copy_(torch.cat([filters, -filters]).to(self.whiten.weight))
