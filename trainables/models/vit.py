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

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_model


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.head_dim, self.dropout = heads, head_dim, dropout
        self.qkv = nn.Linear(dim, 3 * heads * head_dim)
        self.proj = nn.Linear(heads * head_dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, -1)))


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop a residual branch for whole samples, rescaling the kept ones."""
    if rate == 0.0 or not training:
        return x
    keep = x.new_empty(x.shape[0], *([1] * (x.dim() - 1))).bernoulli_(1 - rate)
    return x * keep / (1 - rate)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, mlp_dim: int, dropout: float, act: type[nn.Module],
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.drop_path = drop_path
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, head_dim, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), act(), nn.Dropout(dropout),
                                 nn.Linear(mlp_dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + drop_path(self.attn(self.norm1(x)), self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


def conv_tokenizer(in_chans: int, dim: int, patch_size: int) -> nn.Sequential:
    """log2(patch_size) conv3x3-ReLU-maxpool stages: the same token grid as patches of ``patch_size``."""
    stages, c = [], in_chans
    for i in range(patch_size.bit_length() - 1):
        out = dim if i == patch_size.bit_length() - 2 else dim // 2
        stages += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        c = out
    return nn.Sequential(*stages)


class ViT(nn.Module):
    def __init__(self, *, num_classes: int, in_chans: int, image_size: int, patch_size: int, embed_dim: int,
                 depth: int, num_heads: int, head_dim: int, mlp_dim: int, dropout: float, head_hidden: int,
                 activation: str, head_layers: int = 1, tokenizer: str = "patch", pool: str = "cls",
                 drop_path: float = 0.0) -> None:
        super().__init__()
        act = {"gelu": nn.GELU, "relu": nn.ReLU}[activation]
        n_patches = (image_size // patch_size) ** 2
        if tokenizer == "conv":
            self.patch_embed: nn.Module = conv_tokenizer(in_chans, embed_dim, patch_size)
        else:  # a stride-p convolution is the linear projection of flattened p x p patches
            self.patch_embed = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        self.pool = pool
        if pool == "cls":
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        else:  # sequence pooling: one score per token, softmax over tokens
            self.attn_pool = nn.Linear(embed_dim, 1)
        self.pos_embed = nn.Parameter(torch.randn(1, n_patches + (pool == "cls"), embed_dim) * 0.02)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, head_dim, mlp_dim, dropout, act,
                                            drop_path * i / max(1, depth - 1)) for i in range(depth)])
        self.norm = nn.LayerNorm(embed_dim)
        if head_hidden > 0:  # paper 004's "MLP head"; paper 000's n_hidden is its number of hidden layers
            layers: list[nn.Module] = []
            for i in range(max(1, head_layers)):
                layers += [nn.Linear(embed_dim if i == 0 else head_hidden, head_hidden), act(), nn.Dropout(dropout)]
            self.head = nn.Sequential(*layers, nn.Linear(head_hidden, num_classes))
        else:
            self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        if self.pool == "cls":
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.norm(self.blocks(self.drop(x + self.pos_embed)))
        if self.pool == "cls":
            return self.head(x[:, 0])
        weights = torch.softmax(self.attn_pool(x), dim=1)  # (b, n, 1)
        return self.head((weights * x).sum(dim=1))


def _check(*, image_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int, head_dim: int,
           mlp_dim: int, dropout: float, activation: str, tokenizer: str = "patch", pool: str = "cls",
           drop_path: float = 0.0, **_: object) -> str | None:
    if patch_size < 1 or image_size % patch_size:
        return f"patch_size must divide image_size, got patch_size={patch_size}, image_size={image_size}"
    if tokenizer not in ("patch", "conv"):
        return f"tokenizer must be one of patch, conv, got {tokenizer!r}"
    if tokenizer == "conv" and (patch_size < 2 or patch_size & (patch_size - 1)):
        return f"tokenizer=conv halves the side per stage: patch_size must be a power of 2 >= 2, got {patch_size}"
    if pool not in ("cls", "seq"):
        return f"pool must be one of cls, seq, got {pool!r}"
    if not 0.0 <= drop_path < 1.0:
        return f"0 <= drop_path < 1 must hold, got drop_path={drop_path}"
    if head_dim == 0 and embed_dim % num_heads:
        return (f"embed_dim must be divisible by num_heads (or set head_dim), "
                f"got embed_dim={embed_dim}, num_heads={num_heads}")
    if min(embed_dim, depth, num_heads, mlp_dim) < 1:
        return (f"embed_dim, depth, num_heads, mlp_dim must be >= 1, got {embed_dim}, {depth}, "
                f"{num_heads}, {mlp_dim}")
    if not 0.0 <= dropout < 1.0:
        return f"0 <= dropout < 1 must hold, got dropout={dropout}"
    if activation not in ("gelu", "relu"):
        return f"activation must be one of gelu, relu, got {activation!r}"
    return None


@register_model("vit", check=_check)
def vit(*, num_classes: int, in_chans: int, image_size: int, patch_size: int = 4, embed_dim: int = 256,
        depth: int = 6, num_heads: int = 8, head_dim: int = 0, mlp_dim: int = 512, dropout: float = 0.1,
        head_hidden: int = 0, activation: str = "gelu", head_layers: int = 1, tokenizer: str = "patch",
        pool: str = "cls", drop_path: float = 0.0) -> nn.Module:
    """``head_dim=0`` means embed_dim // num_heads; ``head_hidden=0`` means a linear head, else
    ``head_layers`` hidden layers of width ``head_hidden``; ``tokenizer``, ``pool``, ``drop_path``: see
    the module's docstring."""
    return ViT(num_classes=num_classes, in_chans=in_chans, image_size=image_size, patch_size=patch_size,
               embed_dim=embed_dim, depth=depth, num_heads=num_heads,
               head_dim=head_dim or embed_dim // num_heads, mlp_dim=mlp_dim, dropout=dropout,
               head_hidden=head_hidden, activation=activation, head_layers=head_layers, tokenizer=tokenizer,
               pool=pool, drop_path=drop_path)
