"""A fast CIFAR-scale CNN after airbench94 (Jordan, 2024: 94 % on CIFAR-10 in under 10 epochs), written here
from the paper's description: a frozen patch-whitening stem computed from the training images, then three
conv-pool-BN-GELU groups, a global max-pool and a scaled linear head.

What makes it fast to train, each in one place below: the stem is fixed (PCA whitening of 2x2 patches: the first
layer starts where training would take it); every conv starts half identity (Dirac), so the net begins close to
a shallow one; batch norm with a short memory (its statistics follow the fast-moving weights), its scales fixed
and its shifts trained at a high rate (``train.norm_lr_scale``); the head's output is scaled down (1/9), which
keeps the logits calm at a large learning rate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._registry import register_model

if TYPE_CHECKING:
    from collections.abc import Iterable

    import torch
    from torch import nn

PATCH = 2  # the whitening stem's patch side: 2x2 patches of C channels, 4C directions, each with both signs
WHITEN_EPS = 5e-4  # added to each eigenvalue: the noisiest directions are not blown up


def _check(
    *, image_size: int, width1: int, width2: int, width3: int, bn_momentum: float, scaling: float, **_: object
) -> str | None:
    # The stem's 2x2 valid conv takes a pixel, then three 2x2 max-pools halve the side: 16 px leave 1 x 1.
    if image_size < 16:
        return f"image_size >= 16 must hold for the stem and three 2x2 pools, got image_size={image_size}"
    if min(width1, width2, width3) < 1:
        return f"widths must be >= 1, got width1={width1}, width2={width2}, width3={width3}"
    if not 0.0 < bn_momentum <= 1.0:
        return f"0 < bn_momentum <= 1 must hold, got bn_momentum={bn_momentum}"
    if scaling <= 0:
        return f"scaling > 0 must hold, got scaling={scaling}"
    return None


@register_model("fast_cnn", check=_check)
def fast_cnn(
    *,
    num_classes: int,
    in_chans: int,
    image_size: int,
    width1: int = 64,  # airbench94's widths: 64 / 256 / 256 (narrower trades accuracy for images per second)
    width2: int = 256,
    width3: int = 256,
    bn_momentum: float = 0.4,  # PyTorch's convention (weight of the new batch): airbench's 0.6 of the old
    scaling: float = 1 / 9,  # the head's output scale
) -> nn.Module:
    import torch  # at build time only: a spec is checked without torch
    from torch import nn

    def norm(width: int) -> nn.BatchNorm2d:
        bn = nn.BatchNorm2d(width, momentum=bn_momentum, eps=1e-12)
        bn.weight.requires_grad_(False)  # scale fixed at 1, shift trained (fast with train.norm_lr_scale)
        return bn

    class ConvGroup(nn.Sequential):
        def __init__(self, cin: int, cout: int) -> None:
            super().__init__(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.MaxPool2d(2),
                norm(cout),
                nn.GELU(),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                norm(cout),
                nn.GELU(),
            )

    class FastCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            stem = 2 * in_chans * PATCH * PATCH
            self.whiten = nn.Conv2d(in_chans, stem, PATCH, padding=0, bias=True)
            self.whiten.weight.requires_grad_(False)  # set from the data (init_from_data), then fixed
            self.body = nn.Sequential(
                nn.GELU(), ConvGroup(stem, width1), ConvGroup(width1, width2), ConvGroup(width2, width3)
            )
            self.pool = nn.AdaptiveMaxPool2d(1)
            self.head = nn.Linear(width3, num_classes, bias=False)
            for m in self.body.modules():
                if isinstance(m, nn.Conv2d):  # half the filters pass their input through
                    w = m.weight.data
                    nn.init.dirac_(w[: w.size(1)])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.pool(self.body(self.whiten(x))).flatten(1)
            return self.head(x) * scaling

        @torch.no_grad()
        def init_from_data(self, batches: Iterable[torch.Tensor]) -> None:
            """The stem's filters from batches of normalised training images (N, C, H, W): the eigenvectors of
            the 2x2 patch covariance, each scaled by 1 / sqrt(eigenvalue), with both signs (GELU follows).
            Sums batch by batch: all patches of 5,000 images at once would be ~0.5 GB in float64 at 32 px."""
            c, k = in_chans, in_chans * PATCH * PATCH
            total, outer, n = torch.zeros(k, dtype=torch.float64), torch.zeros(k, k, dtype=torch.float64), 0
            for chunk in batches:
                patches = chunk.float().unfold(2, PATCH, 1).unfold(3, PATCH, 1)  # N, C, H', W', P, P
                rows = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, k).double().cpu()  # (C, P, P) per row
                total += rows.sum(0)
                outer += rows.T @ rows
                n += len(rows)
            mean = total / n
            cov = (outer - n * torch.outer(mean, mean)) / max(n - 1, 1)
            eigval, eigvec = torch.linalg.eigh(cov)
            scaled = eigvec.T / (eigval.clamp_min(0) + WHITEN_EPS).sqrt()[:, None]
            filters = scaled.reshape(-1, c, PATCH, PATCH).float()  # rows are in a conv weight's (C, P, P) order
            self.whiten.weight.copy_(torch.cat([filters, -filters]).to(self.whiten.weight))

    return FastCNN()
