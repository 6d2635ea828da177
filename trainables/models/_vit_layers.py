"""The Vision Transformer's layers (torch); ``vit.py`` registers the model and checks its arguments without
importing them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v with dropout on the weights: the fused kernel on accelerators, the plain
    product on the CPU, where torch's fused kernel trains the 4-block CIFAR ViT 2.0x slower in bf16 (its backward
    took half of each step; 426 against 855 images/s, 2-core Xeon with AMX, torch 2.14, 2026-12-07)."""
    if q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
    weights = ((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
    return F.dropout(weights, dropout) @ v if dropout else weights @ v


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
        out = attention(q, k, v, self.dropout if self.training else 0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, -1)))


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop a residual branch for whole samples, rescaling the kept ones."""
    if rate == 0.0 or not training:
        return x
    keep = x.new_empty(x.shape[0], *([1] * (x.dim() - 1))).bernoulli_(1 - rate)
    return x * keep / (1 - rate)


class Block(nn.Module):
    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int,
        mlp_dim: int,
        dropout: float,
        act: type[nn.Module],
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.drop_path = drop_path
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, head_dim, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_dim), act(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim), nn.Dropout(dropout)
        )

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
    def __init__(
        self,
        *,
        num_classes: int,
        in_chans: int,
        image_size: int,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        head_dim: int,
        mlp_dim: int,
        dropout: float,
        head_hidden: int,
        activation: str,
        head_layers: int = 1,
        tokenizer: str = "patch",
        pool: str = "cls",
        drop_path: float = 0.0,
    ) -> None:
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
        self.blocks = nn.Sequential(
            *[
                Block(embed_dim, num_heads, head_dim, mlp_dim, dropout, act, drop_path * i / max(1, depth - 1))
                for i in range(depth)
            ]
        )
        self.norm = nn.LayerNorm(embed_dim)
        if head_hidden > 0:  # paper 004's "MLP head"; paper 000's n_hidden is its number of hidden layers
            layers: list[nn.Module] = []
            for i in range(max(1, head_layers)):
                layers += [nn.Linear(embed_dim if i == 0 else head_hidden, head_hidden), act(), nn.Dropout(dropout)]
            self.head: nn.Module = nn.Sequential(*layers, nn.Linear(head_hidden, num_classes))
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
