"""Vision Transformer trained from scratch (papers 003 and 004).

Pre-norm encoder blocks, a class token, learned position embeddings, and a final LayerNorm
before the head. With paper 003's CIFAR-10 settings (patch 4, embed 256, MLP 512, 8 heads,
6 layers) it has exactly 3,195,146 parameters, which pins the layout: biased qkv/proj/MLP
layers and a linear patch embedding. ``head_dim`` decouples the attention width from the
embedding (paper 004's best model: embed 32, 20 heads of 16).
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


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, mlp_dim: int, dropout: float, act: type[nn.Module]) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, head_dim, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), act(), nn.Dropout(dropout),
                                 nn.Linear(mlp_dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(self, *, num_classes: int, in_chans: int, image_size: int, patch_size: int, embed_dim: int,
                 depth: int, num_heads: int, head_dim: int, mlp_dim: int, dropout: float, head_hidden: int,
                 activation: str, head_layers: int = 1) -> None:
        super().__init__()
        act = {"gelu": nn.GELU, "relu": nn.ReLU}[activation]
        n_patches = (image_size // patch_size) ** 2
        # A stride-p convolution is the linear projection of flattened p x p patches.
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.randn(1, n_patches + 1, embed_dim) * 0.02)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, head_dim, mlp_dim, dropout, act)
                                      for _ in range(depth)])
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
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(self.drop(x)))
        return self.head(x[:, 0])


def _check(*, image_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int, head_dim: int,
           mlp_dim: int, dropout: float, activation: str, **_: object) -> str | None:
    if patch_size < 1 or image_size % patch_size:
        return f"patch_size must divide image_size, got patch_size={patch_size}, image_size={image_size}"
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
        head_hidden: int = 0, activation: str = "gelu", head_layers: int = 1) -> nn.Module:
    """``head_dim=0`` means embed_dim // num_heads; ``head_hidden=0`` means a linear head, else
    ``head_layers`` hidden layers of width ``head_hidden``."""
    return ViT(num_classes=num_classes, in_chans=in_chans, image_size=image_size, patch_size=patch_size,
               embed_dim=embed_dim, depth=depth, num_heads=num_heads,
               head_dim=head_dim or embed_dim // num_heads, mlp_dim=mlp_dim, dropout=dropout,
               head_hidden=head_hidden, activation=activation, head_layers=head_layers)
