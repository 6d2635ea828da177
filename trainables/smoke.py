"""``--smoke``: the trial-side sections shrunk to a run of about a minute (epochs, images per class, batch and
image sizes, patch sizes), in the spec and wherever its space sets them; the orchestration shrinks its own."""

from __future__ import annotations

import copy
import math
from typing import Any

from .data import NATIVE

# A smoke run checks that a spec runs, not how well: each step's memory is capped, so that the smoke of any
# shipped spec stays within a few GB of host memory (cars-hyperband's own sizes, 32 images of up to 300 px
# through ImageNet models, peaked above 11 GB on CPU). 64 px is a multiple of every patch size the specs use
# (2 to 16; timm resamples a pretrained ViT's position embeddings) and leaves every stage of a 32x-downsampling
# CNN a feature map; Inception's stem needs at least 75 px, so Inception models get 96.
SMOKE_BATCH = 64
SMOKE_IMAGE = 64
# Files a smoke run reads per class of an image tree (data.load_max_per_class): enough for its 64 training and
# 32 validation images per class once a test split is carved out, and CIFAR-10's 50,000 training files are not
# all decoded for a run that trains on 640 of them (17 s of a 2-core CPU).
SMOKE_LOAD_PER_CLASS = 256
_SMOKE_IMAGE_AT_LEAST = {"inception": 96}  # model name part: the smallest size its layers take, rounded up
_SMOKE_CAPPED = ("train.batch_size", "train.eval_batch_size", "data.image_size")
# A ViT's smallest patch in a smoke run: at most 64 tokens (8 px at 64 px, 4 px at CIFAR's 32). Attention's memory grows with the
# square of the tokens (times batch, heads and depth; with dropout, CPU attention materialises it): vit.yaml's
# (now paper004-vit.yaml) space at patch 2 (1,024 tokens) took over 20 GB in one step (tests/test_smoke_memory.py).
SMOKE_TOKENS = 64
# Test images per class a smoke run's final models are tested on (data.test_max_per_class): with CIFAR-10's 5,000, a
# smoke ViT's seed took 7.7 s of a 2-core CPU from its last epoch to its end, mostly that pass, for an accuracy a
# smoke run does not report as the model's.
SMOKE_TEST_PER_CLASS = 100
# Seconds a smoke run's final model times its speed (final.timing_s, 1 s by default): its numbers are not reported.
SMOKE_TIMING_S = 0.1


def smoke_cap(key: str, model_name: Any) -> int:
    """The largest value a smoke run gives ``key`` (one of ``_SMOKE_CAPPED``) for this model."""
    if key != "data.image_size":
        return SMOKE_BATCH
    return max([SMOKE_IMAGE] + [v for part, v in _SMOKE_IMAGE_AT_LEAST.items() if part in str(model_name)])


def _capped_dist(dist: dict[str, list[Any]], cap: int, floor: bool = False) -> dict[str, list[Any]]:
    """A distribution with no value above ``cap`` (``floor``: below it): lists capped (duplicates dropped),
    ranges' bounds capped."""
    bound = max if floor else min
    ((kind, values),) = dist.items()
    if kind in ("grid", "choice"):
        return {kind: list(dict.fromkeys(bound(v, cap) for v in values))}
    low, high, *rest = values
    if bound(high, cap) == bound(low, cap):  # the whole range lies beyond the cap
        return {"grid": [cap]}
    return {kind: [bound(low, cap), bound(high, cap), *rest]}


def _smoke_caps(s: dict[str, Any]) -> None:
    """Cap batch and image sizes in the spec's sections and wherever its space sets them (and its options)."""
    name = s["model"].get("name")
    d, t = s["data"], s["train"]
    # A dataset's native size stays (CIFAR's 32 px, not decoded again at 64); files of unknown size are capped.
    native = NATIVE.get(d["dataset"], (None, 3))[0]
    if d["image_size"] is not None or native is None or native > smoke_cap("data.image_size", name):
        d["image_size"] = min(d["image_size"] or SMOKE_IMAGE, smoke_cap("data.image_size", name))
    for key in ("batch_size", "eval_batch_size"):
        t[key] = min(t[key], SMOKE_BATCH)
    size = d["image_size"] or native  # null: the set's native size
    # At most SMOKE_TOKENS tokens: the patch floor is a side / sqrt(SMOKE_TOKENS) (8 px at 64, 4 at CIFAR's 32),
    # where it divides the side (a patch must).
    side = math.isqrt(SMOKE_TOKENS)
    patch = size // side if size and size % side == 0 else 1
    if isinstance(s["model"].get("patch_size"), int):
        s["model"]["patch_size"] = max(s["model"]["patch_size"], patch)
    for key, dist in (s.get("space") or {}).items():
        if key in _SMOKE_CAPPED:
            s["space"][key] = _capped_dist(dist, smoke_cap(key, name))
        elif key == "model.patch_size":
            s["space"][key] = _capped_dist(dist, patch, floor=True)
        elif "." not in str(key):  # a branch: each option's own values (and its own model)
            for opt in next(iter(dist.values())):
                for k in _SMOKE_CAPPED:
                    cap = smoke_cap(k, opt.get("model.name", name))
                    if isinstance(opt.get(k), dict):
                        opt[k] = _capped_dist(opt[k], cap)
                    elif isinstance(opt.get(k), int):
                        opt[k] = min(opt[k], cap)
                if isinstance(opt.get("model.patch_size"), dict):
                    opt["model.patch_size"] = _capped_dist(opt["model.patch_size"], patch, floor=True)
                elif isinstance(opt.get("model.patch_size"), int):
                    opt["model.patch_size"] = max(opt["model.patch_size"], patch)


def smoke(spec: dict[str, Any]) -> dict[str, Any]:
    """The trial-side sections shrunk to a run of about a minute: <= 2 epochs, at most 256 files read per class of
    an image tree, 64 training, 32 validation and 100 test images per class, batches of at most 64 images of at
    most 64 px (``smoke_cap``), a short final training with a small bootstrap."""
    s = copy.deepcopy(spec)
    s["train"]["epochs"] = min(s["train"]["epochs"], 2)
    _smoke_caps(s)
    d = s["data"]
    d["max_per_class"] = min(d["max_per_class"] or 64, 64)
    d["val_max_per_class"] = min(d["val_max_per_class"] or 32, 32)
    d["test_max_per_class"] = min(d["test_max_per_class"] or SMOKE_TEST_PER_CLASS, SMOKE_TEST_PER_CLASS)
    d["load_max_per_class"] = min(d["load_max_per_class"] or SMOKE_LOAD_PER_CLASS, SMOKE_LOAD_PER_CLASS)
    if d["dataset"] == "synthetic":
        d["num_samples"] = min(d["num_samples"], 400)
    f = s["final"]
    f["bootstrap"] = min(f["bootstrap"], 200)
    f["timing_s"] = min(f["timing_s"], SMOKE_TIMING_S)
    # Final training reads the training split anew (train + val), not the search's capped pools.
    f["max_per_class"] = min(f["max_per_class"] or 64, 64)
    f["epochs"] = min(f["epochs"] or s["train"]["epochs"], 2)
    return s
