"""Paper 000's CNN (coins vs other artefacts): two conv-ReLU-maxpool pairs, then a two-layer MLP.

Argument names follow the paper's search space (out_channels_1, kernel_size_conv, ...). The paper
fixes the second convolution at kernel 3, stride 2; ``padding_conv`` applies to both ("valid
padding" in both at the selected value 0). With the selected values at 256x256 and one output
logit it has 849,331 parameters, as the paper reports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._registry import Count, Whole, register_model

if TYPE_CHECKING:
    from torch import nn

CONV2_KERNEL, CONV2_STRIDE = 3, 2  # fixed in the paper's architecture description


def _sides(
    image_size: int,
    out_channels_1: int,
    out_channels_2: int,
    kernel_size_conv: int,
    padding_conv: int,
    stride_conv: int,
    kernel_size_pool: int,
    stride_pool: int,
) -> list[int]:
    """Feature-map side after conv1, pool1, conv2, pool2."""

    def conv(s: int, k: int, st: int, p: int) -> int:
        return (s + 2 * p - k) // st + 1

    s1 = conv(image_size, kernel_size_conv, stride_conv, padding_conv)
    s2 = conv(s1, kernel_size_pool, stride_pool, 0)
    s3 = conv(s2, CONV2_KERNEL, CONV2_STRIDE, padding_conv)
    s4 = conv(s3, kernel_size_pool, stride_pool, 0)
    return [s1, s2, s3, s4]


def _check(
    *,
    image_size: int,
    out_channels_1: int,
    out_channels_2: int,
    kernel_size_conv: int,
    padding_conv: int,
    stride_conv: int,
    kernel_size_pool: int,
    stride_pool: int,
    **_: object,
) -> str | None:
    sides = _sides(
        image_size,
        out_channels_1,
        out_channels_2,
        kernel_size_conv,
        padding_conv,
        stride_conv,
        kernel_size_pool,
        stride_pool,
    )
    if min(sides) < 1:
        return (
            f"feature maps vanish: sides after conv1, pool1, conv2, pool2 would be {sides} at image_size={image_size}"
        )
    return None


@register_model("coins_cnn", check=_check)
def coins_cnn(
    *,
    num_classes: int,
    in_chans: int,
    image_size: int,
    out_channels_1: Count = 20,
    out_channels_2: Count = 10,
    kernel_size_conv: Count = 5,
    padding_conv: Whole = 0,
    stride_conv: Count = 1,
    kernel_size_pool: Count = 4,
    stride_pool: Count = 3,
    fnn_out_features: Count = 500,
) -> nn.Module:
    """Paper 000's CNN.

    Args:
        out_channels_1: channels of the first conv
        out_channels_2: channels of the second conv
        kernel_size_conv: side of both conv kernels
        padding_conv: zero padding of both convs, in pixels
        stride_conv: stride of both convs
        kernel_size_pool: side of both max-pools
        stride_pool: stride of both max-pools
        fnn_out_features: width of the MLP's hidden layer
    """
    from torch import nn  # at build time only: a spec is checked without torch

    side = _sides(
        image_size,
        out_channels_1,
        out_channels_2,
        kernel_size_conv,
        padding_conv,
        stride_conv,
        kernel_size_pool,
        stride_pool,
    )[-1]
    return nn.Sequential(
        nn.Conv2d(in_chans, out_channels_1, kernel_size_conv, stride=stride_conv, padding=padding_conv),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size_pool, stride=stride_pool),
        nn.Conv2d(out_channels_1, out_channels_2, CONV2_KERNEL, stride=CONV2_STRIDE, padding=padding_conv),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size_pool, stride=stride_pool),
        nn.Flatten(),
        nn.Linear(out_channels_2 * side * side, fnn_out_features),
        nn.ReLU(inplace=True),
        nn.Linear(fnn_out_features, num_classes),
    )
