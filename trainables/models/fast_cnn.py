"""A fast CIFAR-scale CNN after airbench94 (Jordan, 2024: 94 % on CIFAR-10 in under 10 epochs), written here
from the paper's description: a frozen patch-whitening stem computed from the training images, then three
conv-pool-BN-GELU groups, a global max-pool and a scaled linear head.

What makes it fast to train (the modules are in ``_fast_cnn_layers.py``): the stem is fixed (PCA whitening of 2x2
patches: the first layer starts where training would take it); every conv's first filters start as identities
(Dirac), so the net begins close to a shallow one; batch norm with a short memory (its statistics follow the
fast-moving weights), its scales fixed and its shifts trained at a high rate (``train.norm_lr_scale``, which the
spec sets: its default is 1); the head's output is scaled down (1/9), which keeps the logits calm at a large
learning rate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from ._registry import Count, register_model

if TYPE_CHECKING:
    from torch import nn

Momentum = Annotated[float, Field(gt=0, le=1)]  # batch norm's: the weight of the new batch, above 0
Positive = Annotated[float, Field(gt=0)]


def _check(*, image_size: int, **_: object) -> str | None:
    # The stem's 2x2 valid conv takes a pixel, then three 2x2 max-pools halve the side: 16 px leave 1 x 1.
    if image_size < 16:
        return f"image_size >= 16 must hold for the stem and three 2x2 pools, got image_size={image_size}"
    return None


@register_model("fast_cnn", check=_check)
def fast_cnn(
    *,
    num_classes: int,
    in_chans: int,
    image_size: int,
    width1: Count = 64,  # airbench94's widths: 64 / 256 / 256 (narrower trades accuracy for images per second)
    width2: Count = 256,
    width3: Count = 256,
    bn_momentum: Momentum = 0.4,  # PyTorch's convention (weight of the new batch): airbench's 0.6 of the old
    scaling: Positive = 1 / 9,  # the head's output scale
) -> nn.Module:
    """airbench94's network.

    Args:
        width1: channels of the first block (airbench94: 64; narrower trades accuracy for images per second)
        width2: channels of the second block (airbench94: 256)
        width3: channels of the third block (airbench94: 256)
        bn_momentum: batch norm's momentum, PyTorch's convention (the weight of the new batch; airbench's 0.6 of the
            old is 0.4)
        scaling: the head's output scale (airbench94: 1/9)
    """
    from ._fast_cnn_layers import FastCNN  # at build time only: a spec is checked without torch

    return FastCNN(num_classes, in_chans, (width1, width2, width3), bn_momentum, scaling)
