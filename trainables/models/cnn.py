"""Paper 004's small CNN: three conv-BN-ReLU-maxpool blocks, then a two-layer MLP."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._registry import Count, Rate, register_model

if TYPE_CHECKING:
    from torch import nn


def _check(*, image_size: int, kernel_size: int, **_: object) -> str | None:
    # Three 2x2 max-pools halve the side three times; below 8 px the last block has nothing to pool.
    if image_size < 8:
        return f"image_size >= 8 must hold for three 2x2 pools, got image_size={image_size}"
    if kernel_size % 2 != 1:
        return f"kernel_size must be odd (same padding), got kernel_size={kernel_size}"
    return None


@register_model("cnn", check=_check)
def cnn(
    *,
    num_classes: int,
    in_chans: int,
    image_size: int,
    conv1: Count = 32,
    conv2: Count = 64,
    conv3: Count = 128,
    hidden: Count = 256,
    dropout: Rate = 0.5,
    kernel_size: Count = 3,
) -> nn.Module:
    """Paper 004's small CNN.

    Args:
        conv1: channels of the first conv block
        conv2: channels of the second conv block
        conv3: channels of the third conv block
        hidden: width of the MLP's hidden layer
        dropout: dropout before the MLP's last layer, in [0, 1)
        kernel_size: side of every conv kernel (odd: same padding)
    """
    from torch import nn  # at build time only: a spec is checked without torch

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [
            nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        ]

    side = image_size // 8
    return nn.Sequential(
        *block(in_chans, conv1),
        *block(conv1, conv2),
        *block(conv2, conv3),
        nn.Flatten(),
        nn.Linear(conv3 * side * side, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )
