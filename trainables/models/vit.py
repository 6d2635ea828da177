"""Vision Transformer trained from scratch (papers 003 and 004).

Pre-norm encoder blocks, a class token, learned position embeddings, and a final LayerNorm
before the head. With paper 003's CIFAR-10 settings (patch 4, embed 256, MLP 512, 8 heads,
6 layers) it has exactly 3,195,146 parameters, which pins the layout: biased qkv/proj/MLP
layers and a linear patch embedding. ``head_dim`` decouples the attention width from the
embedding (paper 004's best model: embed 32, 20 heads of 16).

For small data from scratch (RECIPES.md: Compact Convolutional Transformers, Hassani et al. 2021) three
options, all off by default so the papers' models keep their layout: ``tokenizer="conv"`` (a 3x3
conv-ReLU-maxpool stem per halving instead of linear patches), ``pool="seq"`` (attention-weighted
mean of the tokens instead of a class token) and ``drop_path`` (stochastic depth, rising linearly
with depth to this rate).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from ._registry import Count, Rate, Whole, register_model

if TYPE_CHECKING:
    from torch import nn


def _check(
    *, image_size: int, patch_size: int, embed_dim: int, num_heads: int, head_dim: int, tokenizer: str, **_: object
) -> str | None:
    """The rules across keys (each key's own range and values are its type's, in ``vit``'s signature)."""
    if image_size % patch_size:
        return f"patch_size must divide image_size, got patch_size={patch_size}, image_size={image_size}"
    if tokenizer == "conv" and (patch_size < 2 or patch_size & (patch_size - 1)):
        return f"tokenizer=conv halves the side per stage: patch_size must be a power of 2 >= 2, got {patch_size}"
    if head_dim == 0 and embed_dim % num_heads:
        return (
            f"embed_dim must be divisible by num_heads (or set head_dim), "
            f"got embed_dim={embed_dim}, num_heads={num_heads}"
        )
    return None


@register_model("vit", check=_check)
def vit(
    *,
    num_classes: int,
    in_chans: int,
    image_size: int,
    patch_size: Count = 4,
    embed_dim: Count = 256,
    depth: Count = 6,
    num_heads: Count = 8,
    head_dim: Whole = 0,
    mlp_dim: Count = 512,
    dropout: Rate = 0.1,
    head_hidden: Whole = 0,
    activation: Literal["gelu", "relu"] = "gelu",
    head_layers: Count = 1,
    tokenizer: Literal["patch", "conv"] = "patch",
    pool: Literal["cls", "seq"] = "cls",
    drop_path: Rate = 0.0,
) -> nn.Module:
    """A ViT; ``tokenizer``, ``pool`` and ``drop_path``: see the module's docstring.

    Args:
        patch_size: side of a patch in pixels (tokenizer: patch), or the stem's output stride (conv)
        embed_dim: width of the tokens
        depth: encoder blocks
        num_heads: attention heads per block
        head_dim: width of one attention head; 0 = embed_dim // num_heads
        mlp_dim: hidden width of each block's MLP
        dropout: dropout in the blocks, in [0, 1)
        head_hidden: width of the classifier head's hidden layers; 0 = a linear head
        activation: gelu or relu, in the MLPs
        head_layers: hidden layers of the classifier head (with head_hidden > 0)
        tokenizer: patch (linear patches) or conv (a conv-ReLU-maxpool stem per halving)
        pool: cls (a class token) or seq (attention-weighted mean of the tokens)
        drop_path: stochastic depth's rate at the last block, rising linearly from 0
    """
    from ._vit_layers import ViT

    return ViT(
        num_classes=num_classes,
        in_chans=in_chans,
        image_size=image_size,
        patch_size=patch_size,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        head_dim=head_dim or embed_dim // num_heads,
        mlp_dim=mlp_dim,
        dropout=dropout,
        head_hidden=head_hidden,
        activation=activation,
        head_layers=head_layers,
        tokenizer=tokenizer,
        pool=pool,
        drop_path=drop_path,
    )
