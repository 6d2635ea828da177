"""The "Luna" CNN of Stevens et al., *Deep Learning with PyTorch*, in 2-D as paper 001 adapted it.

Input BatchNorm, four blocks of conv3x3-ReLU-conv3x3-ReLU-maxpool2 (widths c, 2c, 4c, 8c), a linear
head. Paper 001 reports 115,088 parameters: that is this model at 288x288 (64 x 18 x 18 features into
the head); at the paper's stated 224x224 it has 98,704 — the paper does not say which size the
count was taken at.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._registry import Count, register_model

if TYPE_CHECKING:
    from torch import nn


def _check(*, image_size: int, **_: object) -> str | None:
    if image_size < 16:
        return f"image_size >= 16 must hold for four 2x2 pools, got image_size={image_size}"
    return None


@register_model("luna", check=_check)
def luna(*, num_classes: int, in_chans: int, image_size: int, conv_channels: Count = 8) -> nn.Module:
    """The Luna CNN in 2-D.

    Args:
        conv_channels: channels of the first of four blocks, doubled in each next one
    """
    from torch import nn  # at build time only: a spec is checked without torch

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        ]

    c = conv_channels
    side = image_size // 16
    return nn.Sequential(
        nn.BatchNorm2d(in_chans),
        *block(in_chans, c),
        *block(c, 2 * c),
        *block(2 * c, 4 * c),
        *block(4 * c, 8 * c),
        nn.Flatten(),
        nn.Linear(8 * c * side * side, num_classes),
    )
