"""Datasets as uint8 NCHW arrays, decoded once, plus deterministic stratified splits.

A dataset is loaded once (by the driver) into ``Pools``: a train pool and, where the dataset has
one, a test pool. Every split a trial needs — test carved from the train pool when there is no
test pool, validation, the search-time training fraction, per-class caps — is a set of indices
into those arrays, computed from ``split_seed`` alone, so concurrent trials share one copy of the
pixels and the test images are the same for every trial and every seed.

Loading them is ``datasets`` (the registry and the built-in sets), reading sets from disk ``folders``, and
one image file ``images``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .images import ImageFiles


class DataError(ValueError):
    """The data section points at data that is not there or not in a known layout."""


@dataclass
class Pools:
    """Pixels (uint8, N x C x H x W; ``ImageFiles`` when streamed) and integer labels; ``test_*`` is None
    when the set has no test split."""

    name: str
    classes: list[str]
    train_x: np.ndarray | ImageFiles
    train_y: np.ndarray
    test_x: np.ndarray | ImageFiles | None = None
    test_y: np.ndarray | None = None
    skipped: list[str] = field(default_factory=list)  # unreadable files left out (data.on_bad_image: skip)
    test_skipped: int = 0  # how many of ``skipped`` were test files

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[2])

    @property
    def streamed(self) -> bool:
        return isinstance(self.train_x, ImageFiles)

    def pool(self, from_train: bool) -> tuple[np.ndarray | ImageFiles, np.ndarray]:
        """(pixels, labels) of the pool a split's indices point into: the train pool, or the test split's own."""
        if from_train:
            return self.train_x, self.train_y
        if self.test_x is None or self.test_y is None:
            raise ValueError(f"{self.name} has no test split of its own: its test images come from the train pool")
        return self.test_x, self.test_y


@dataclass
class Splits:
    """Indices into a ``Pools``; ``test_from_train`` says which pool ``test`` indexes."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    test_from_train: bool


def relabel(pools: Pools, classes: list[str], where: str) -> Pools:
    """``pools`` with its labels in the order of ``classes`` (a model's); DataError naming the classes that differ."""
    if pools.classes == classes:
        return pools
    extra = sorted(set(pools.classes) - set(classes))
    missing = sorted(set(classes) - set(pools.classes))
    if extra or missing:
        raise DataError(
            f"{where}: classes do not match the model's: not in the model {extra}, missing {missing} "
            f"(the model knows {classes})"
        )
    order = np.asarray([classes.index(c) for c in pools.classes], np.int64)
    return Pools(
        pools.name,
        list(classes),
        pools.train_x,
        order[pools.train_y],
        pools.test_x,
        None if pools.test_y is None else order[pools.test_y],
        pools.skipped,
        pools.test_skipped,
    )


# --------------------------------------------------------------------------- splits


def whole_splits(pools: Pools) -> Splits:
    every = np.arange(len(pools.train_y))
    return Splits(every, every, every, True)


def stratified_take(
    labels: np.ndarray, fraction: float, rng: np.random.Generator, cap: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices per class into (taken, rest): ``round(fraction * n_c)`` of each class, at most ``cap``.

    Every class with at least two members keeps at least one on each side, so small classes are
    neither dropped from a split nor left with nothing to train on.
    """
    taken, rest = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        k = int(round(fraction * len(idx)))
        if 0 < fraction < 1 and len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        if cap is not None:
            k = min(k, cap)
        taken.append(idx[:k])
        rest.append(idx[k:])
    return np.sort(np.concatenate(taken)), np.sort(np.concatenate(rest))


def make_splits(pools: Pools, data: dict[str, Any]) -> Splits:
    """Deterministic, stratified splits from ``split_seed``.

    Each step draws from its own seeded stream, so the test split does not move when
    ``val_fraction`` or ``train_fraction`` change, and validation does not move with
    ``train_fraction``.
    """
    seed = int(data["split_seed"])
    y = pools.train_y
    pool_idx = np.arange(len(y))
    if pools.test_x is None or pools.test_y is None:
        test, pool_idx = stratified_take(y, float(data["test_fraction"]), np.random.default_rng([seed, 0]))
        test_from_train, test_y = True, y[test]
    else:
        test, test_from_train, test_y = np.arange(len(pools.test_y)), False, pools.test_y
    test_cap = data.get("test_max_per_class")
    if test_cap is not None:  # of the test split as drawn: what is left out of it does not join the pool
        keep, _ = stratified_take(test_y, 1.0, np.random.default_rng([seed, 4]), cap=int(test_cap))
        test = test[keep]
    val_rel, train_rel = stratified_take(
        y[pool_idx], float(data["val_fraction"]), np.random.default_rng([seed, 1]), cap=data.get("val_max_per_class")
    )
    val, train = pool_idx[val_rel], pool_idx[train_rel]
    frac, cap = float(data["train_fraction"]), data.get("max_per_class")
    if frac < 1.0 or cap is not None:
        keep, _ = stratified_take(y[train], frac, np.random.default_rng([seed, 2]), cap=cap)
        train = train[keep]
    return Splits(train, val, test, test_from_train)


def fidelity_subset(train: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The first ``fraction`` of one seeded order of the training split: each rung's images include the
    previous rung's (growing data, not a new draw), and the order does not depend on the trial."""
    if fraction >= 1.0:
        return train
    order = np.random.default_rng([seed, 3]).permutation(len(train))
    return np.sort(train[order[: max(1, math.ceil(fraction * len(train)))]])


# Keys the driver reads once, to load and split the set for every trial (``load_pools``, ``make_splits``):
# a trial's own value would be ignored, or would move the validation/test split between trials.
NOT_SEARCHABLE: dict[str, str] = {
    "dataset": "the driver loads one dataset for all trials; run one study per dataset",
    "root": "the driver loads the data once for all trials; run one study per data.root",
    "download": "the driver loads the data once for all trials",
    "load_max_per_class": "the driver reads the files once for all trials, before any split",
    "on_bad_image": "the driver reads the files once for all trials",
    "positive_class": "the driver orders the classes once for all trials (and metrics name the positive one)",
    "storage": "the driver decides once whether the set is held in memory or streamed",
    "max_memory_gb": "the driver decides once whether the set is held in memory or streamed",
    "split_seed": "it would move the test and validation split between trials (scores not comparable, "
    "test images trained on)",
    "val_fraction": "it would move the validation split between trials (scores not comparable)",
    "test_fraction": "it would move the test split between trials (test images trained on)",
    "test_max_per_class": "it would move the test split between trials",
    "num_classes": "the driver generates the synthetic set once for all trials",
    "num_samples": "the driver generates the synthetic set once for all trials",
}


# (side, channels) when no image_size is given; imagefolder reads it from its first image.
NATIVE = {"digits": (8, 1), "cifar10": (32, 3), "cifar100": (32, 3), "synthetic": (16, 3), "imagefolder": (None, 3)}
