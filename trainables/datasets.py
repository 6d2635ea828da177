"""The dataset registry (``data.dataset`` names a loader; ``load_pools`` runs it) and the built-in sets:
digits and synthetic in memory, CIFAR and class-per-folder trees from disk (``folders``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .data import DataError, Pools
from .folders import cifar, folder_tree

_LOADERS: dict[str, Callable[[dict[str, Any]], Pools]] = {}


def register_dataset(name: str) -> Callable[[Callable[[dict[str, Any]], Pools]], Callable[[dict[str, Any]], Pools]]:
    def wrap(fn: Callable[[dict[str, Any]], Pools]) -> Callable[[dict[str, Any]], Pools]:
        _LOADERS[name] = fn
        return fn

    return wrap


def list_datasets() -> list[str]:
    return sorted(_LOADERS)


def load_pools(data: dict[str, Any]) -> Pools:
    """Load the dataset named by ``data["dataset"]`` (a resolved data section)."""
    name = data["dataset"]
    if name not in _LOADERS:
        raise DataError(f"data.dataset: unknown dataset {name!r}; allowed: {', '.join(list_datasets())}")
    return with_positive_class(_LOADERS[name](data), data.get("positive_class"))


def with_positive_class(pools: Pools, positive: str | None) -> Pools:
    """A binary task's classes ordered so ``positive`` is class 1 — the class that thresholds (P(class 1)),
    AUC and the positive-class precision/recall/F1 refer to — with both pools' labels remapped alike.
    None keeps the sorted order: the second class is positive."""
    if positive is None:
        return pools
    if positive not in pools.classes:
        raise DataError(f"data.positive_class: {positive!r} is not a class; classes: {', '.join(pools.classes)}")
    if pools.num_classes != 2:
        raise DataError(f"data.positive_class: binary tasks only (2 classes), got {pools.num_classes} classes")
    if pools.classes[1] == positive:
        return pools
    return Pools(
        pools.name,
        pools.classes[::-1],
        pools.train_x,
        1 - pools.train_y,
        pools.test_x,
        None if pools.test_y is None else 1 - pools.test_y,
        pools.skipped,
        pools.test_skipped,
    )


@register_dataset("digits")
def _digits(data: dict[str, Any]) -> Pools:
    from sklearn.datasets import load_digits

    d = load_digits()
    # 8x8 grey levels 0..16 -> 0..255; shipped with scikit-learn, so it works offline.
    x = np.clip(d.images * 16, 0, 255).astype(np.uint8)[:, None]
    return Pools("digits", [str(c) for c in d.target_names], x, d.target.astype(np.int64))


@register_dataset("synthetic")
def _synthetic(data: dict[str, Any]) -> Pools:
    """Class-conditional noisy patterns: learnable, any size, no files. Content is fixed (seed 0)."""
    rng = np.random.default_rng(0)
    k, n, s = int(data["num_classes"]), int(data["num_samples"]), int(data["image_size"] or 16)
    protos = rng.uniform(0, 255, size=(k, 3, 4, 4))
    protos = protos.repeat(-(-s // 4), axis=2).repeat(-(-s // 4), axis=3)[:, :, :s, :s]
    y = np.arange(n) % k
    x = protos[y] + rng.normal(0, 60, size=(n, 3, s, s))
    return Pools("synthetic", [f"class{i}" for i in range(k)], np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64))


@register_dataset("cifar10")
def _cifar10(data: dict[str, Any]) -> Pools:
    return cifar(data, "cifar10")


@register_dataset("cifar100")
def _cifar100(data: dict[str, Any]) -> Pools:
    return cifar(data, "cifar100")


@register_dataset("imagefolder")
def _imagefolder(data: dict[str, Any]) -> Pools:
    if not data.get("root"):
        raise DataError(
            "data.root: imagefolder needs a root folder (class-per-folder, optionally under train/ and test/)"
        )
    return folder_tree(data, "imagefolder")
