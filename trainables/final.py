"""Final training of one seed on the full training data, test evaluation, artifacts; and re-evaluation.

A final model folder holds everything needed to rebuild and re-check it:
``model.safetensors``, ``spec.yaml`` (the resolved spec, seed included), ``meta.json``
(classes, normalisation, image size), ``metrics.json``, ``per_class.csv`` and plots; and
``predictions.npz``, what a paired comparison of models on the same test images needs (``tune-compare``).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import hashlib
import json
import os
import platform
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .batches import predictor
from .cost import final_timing_s, measure_cost
from .data import Pools, Splits, make_splits, relabel, whole_splits
from .datasets import load_pools
from .engine import FitResult, fit, predict_split
from .folders import load_folder, split_folder
from .images import ImageFiles
from .metrics import bootstrap_interval, classification_metrics, predict_labels, softmax
from .model_folder import load_model, read_meta, save_model
from .recipe import too_late
from .resources import gpu_hours
from .sections import ENDS_BY, SCHEDULE_BASE, TIME_LIMIT, final_epochs, schedule_length, settings_only, shortened


class OutOfTime(Exception):
    """A final seed that could start only after too much of its share of a wall-clock budget had passed
    (``recipe.too_late``): not trained, and not one of the final models."""


def final_spec(spec: dict[str, Any], seed: int, ends_by: float | None = None) -> dict[str, Any]:
    """The spec a final model trains with: all training data (up to the final cap), the final epochs, ``seed``;
    under a wall-clock budget, its training ends by ``ends_by`` (seconds since the epoch)."""
    s = copy.deepcopy(spec)
    f = s.get("final") or {}
    s["train"]["seed"] = int(seed)
    # Fewer final epochs than the recipe's (a budget's), or more (a budget's stretch: final.max_stretch): the same
    # schedule's shape, warm-up and milestones scaled with it.
    epochs = final_epochs(spec)
    s = shortened(s, epochs)
    if epochs > int(spec["train"]["epochs"]):
        s["train"].update(schedule_length(spec["train"], epochs))
    s["train"]["epochs"] = epochs
    s["train"].pop("_data_rungs", None)  # a search's data fidelity: final models train on all their data
    if f.get("time_limit_s"):  # a wall-clock budget's share for this seed: the run re-plans to end within it
        s["train"][TIME_LIMIT] = float(f["time_limit_s"])
        # final.fill_time_limit: and to use it, back towards the recipe's length when faster than planned
        base = spec["train"] if f.get("fill_time_limit") else s["train"]
        s["train"][SCHEDULE_BASE] = schedule_length(base, int(base["epochs"]))
    if ends_by:
        s["train"][ENDS_BY] = float(ends_by)
    s["data"]["train_fraction"] = float(f.get("train_fraction") or 1.0)
    s["data"]["max_per_class"] = f.get("max_per_class")
    return s


def _device_name(dev: torch.device) -> str:
    return (
        torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})"
    )


def tune_threshold(res: FitResult, pools: Pools) -> float:
    """The P(positive) cut-off with the best validation accuracy (paper 000 searched it)."""
    from .metrics import softmax

    logits, labels = predict_split(res, pools, "val")
    p1 = softmax(logits.astype(np.float64))[:, 1]
    grid = np.round(np.linspace(0.05, 0.95, 91), 4)
    accs = [float(((p1 >= t).astype(int) == labels).mean()) for t in grid]
    return float(grid[int(np.argmax(accs))])


def evaluate(
    res: FitResult, pools: Pools, split: str, topk: int, n_boot: int, seed: int, threshold: float | None = None
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    logits, labels = predict_split(res, pools, split)
    m = classification_metrics(logits, labels, pools.classes, topk=topk, threshold=threshold)
    if n_boot > 0 and len(labels):
        pred = predict_labels(logits, threshold)
        lo, hi = bootstrap_interval(labels, pred, lambda y, p: float((y == p).mean()), n_boot=n_boot, seed=seed)
        m["accuracy_bootstrap_ci"] = [lo, hi]
    m["split"] = split
    return m, logits, labels


def training_record(f: dict[str, Any], res: FitResult, limit: float | None) -> dict[str, Any]:
    """How the final model was trained: on what, for how many epochs and why (``limit``: the time limit it ran
    under, its share or what was left to its study's deadline), and what stopping and the plateau schedule could
    watch (train+val holds nothing out, so no early stopping, no val_* metrics)."""
    return {
        "train_on": f.get("train_on", "train+val"),
        "validation": len(res.splits.val) > 0,
        "epochs": len(res.history),
        "epochs_from": "final.epochs" if f.get("epochs") else "train.epochs",
        "epochs_planned": res.planned_epochs,
        # Shortened (or, with final.fill_time_limit, lengthened) between epochs to end within final.time_limit_s,
        # the schedule ending with it.
        "time_limit_s": limit,
        "time_limit_s_planned": f.get("time_limit_s"),  # its share; less when its study's deadline came first
        "replanned_to_time_limit": bool(limit) and len(res.history) != res.planned_epochs,
        "early_stopping": res.early_stopping,
        "schedule_monitor": res.monitor,
        **res.arithmetic,  # bf16 or fp32, channels_last or not, and the timings that chose it
    }


def decision_threshold(f: dict[str, Any], t: dict[str, Any], res: FitResult, pools: Pools) -> float | None:
    """A binary model's threshold on P(positive class): final.threshold, else the (searched) train.threshold, as in
    paper 000; ``tune``: the one with the best validation accuracy. None for more than two classes."""
    threshold = f.get("threshold")
    if threshold is None:
        threshold = float(t.get("threshold", 0.5))
    if pools.num_classes != 2:
        return None
    return tune_threshold(res, pools) if threshold == "tune" else threshold


def final_cost(res: FitResult, in_chans: int, gpu: float, timing_s: float) -> dict[str, Any]:
    """metrics.json's cost: what one prediction costs as the model predicts (with train.tta, every view's pass:
    FLOPs and latency, each speed timed for ``timing_s``: final.timing_s), and what training it took."""
    net = predictor(res.model, res.tta)
    return {
        **measure_cost(net, in_chans, res.image_size, res.device, res.autocast, seconds=timing_s),
        "train_seconds": res.train_seconds,
        "gpu_hours": gpu_hours(res.train_seconds, gpu, res.device.type == "cuda"),
    }


def train_final(
    spec: dict[str, Any],
    pools: Pools,
    seed: int,
    out_dir: Path,
    on_epoch: Callable[..., None] | None = None,
    ends_by: float | None = None,
) -> dict[str, Any]:
    """Train one final model, evaluate it on the test split, write its folder; returns metrics.json's content
    (``ends_by``: a wall-clock budget's deadline for its training, seconds since the epoch)."""
    s = final_spec(spec, seed, ends_by)
    f = spec.get("final") or {}

    late = too_late(s["train"])
    if late:
        raise OutOfTime(f"final seed {seed}: {late}")

    def with_length(metrics: dict[str, Any], get_state: Callable[[], Any]) -> None:
        """Each epoch with the run's length as (re-)planned so far: the console's "epoch 3/10"."""
        assert on_epoch is not None
        on_epoch({**metrics, "epochs_total": int(s["train"]["epochs"])}, get_state)

    res = fit(
        s, pools, on_epoch=with_length if on_epoch else None, merge_val=f.get("train_on", "train+val") == "train+val"
    )
    if res.history and res.history[-1].get("diverged"):  # NaN weights: no model, no numbers to average
        raise FloatingPointError(
            f"final seed {seed}: {res.history[-1].get('reason', 'training diverged')}; "
            f"lower train.lr or set train.grad_clip"
        )
    threshold = decision_threshold(f, s["train"], res, pools)
    test, logits, labels = evaluate(
        res, pools, "test", int(f.get("topk", 5)), int(f.get("bootstrap", 1000)), seed, threshold
    )
    test["skipped_images"] = pools.test_skipped  # unreadable test files left out (data.on_bad_image: skip)
    gpu = float((spec.get("resources") or {}).get("gpu", 0))
    metrics = {
        "seed": int(seed),
        "test": test,
        "cost": final_cost(res, pools.in_chans, gpu, final_timing_s(spec)),
        "device": _device_name(res.device),
        "torch": torch.__version__,
        "train_images": int(len(res.splits.train)),
        "training": training_record(f, res, s["train"].get(TIME_LIMIT)),
        "history": res.history,
    }
    # The model folder's spec holds settings only: the plan's moment and the limits it set for this run are in
    # metrics.json's training record (time_limit_s, epochs_planned).
    s = settings_only(s)
    with whole_folder(out_dir) as folder:
        save_model(res, pools, s, folder, threshold)
        save_predictions(
            folder / "predictions.npz", logits, labels, threshold, test_digest(pools, res.splits), pools.classes
        )
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
        write_per_class(folder / "per_class.csv", test)
        plots(folder, test, logits, labels, res.history)
    return metrics


@contextlib.contextmanager
def whole_folder(out_dir: Path) -> Iterator[Path]:
    """A seed's folder appears whole or not at all: its files (model, meta.json, metrics.json, … which only make
    sense together) are written in a hidden sibling, flushed to disk, and renamed to ``out_dir`` at the end. A
    full disk or a crash leaves the previous folder (or none) and no partial one."""
    staging = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)  # what an earlier crash left
    staging.mkdir(parents=True)
    try:
        yield staging
        for file in (f for f in staging.rglob("*") if f.is_file()):  # a full disk may only say so on flushing
            with open(file, "rb+") as fh:
                os.fsync(fh.fileno())
        if out_dir.exists():  # retrained (--overwrite): the old model goes only once the new one is complete
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
            os.replace(staging, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def test_digest(pools: Pools, splits: Splits) -> str:
    """What identifies the test images, in the order predictions list them: the classes, the labels, and
    the files' paths (streamed) or the decoded pixels (in memory). Two models' predictions pair image by
    image only when their digests agree."""
    from_train = splits.test_from_train
    x, y = pools.pool(from_train)
    idx = splits.test
    h = hashlib.sha256(json.dumps(pools.classes).encode())
    h.update(np.asarray(y)[idx].astype(np.int64).tobytes())
    if isinstance(x, ImageFiles):
        h.update("\n".join(x.paths[i] for i in idx).encode())
    else:
        for i in range(0, len(idx), 1024):  # in chunks: no second copy of a large test set
            h.update(np.ascontiguousarray(x[idx[i : i + 1024]]).tobytes())
    return h.hexdigest()[:16]


def save_predictions(
    path: Path, logits: np.ndarray, labels: np.ndarray, threshold: float | None, digest: str, classes: list[str]
) -> None:
    """Per test image: true label, predicted label (at ``threshold``) and class probabilities, with the test
    set's digest and the class names; plain arrays (``np.load(..., allow_pickle=False)`` reads them)."""
    np.savez_compressed(
        path,
        labels=labels.astype(np.int64),
        pred=predict_labels(logits, threshold).astype(np.int64),
        probs=softmax(logits.astype(np.float64)).astype(np.float32),
        test_digest=np.str_(digest),
        classes=np.asarray(classes, dtype=str),
    )


def eval_set(model_dir: Path, data: dict[str, Any], split: str, new_root: bool) -> tuple[Pools, Splits]:
    """The images a saved model is re-checked on, labelled in the model's class order.

    A new ``data.root`` that holds ``<split>/`` class folders, or is one plain class tree, is all of
    ``split``: every image, decoded at the model's size, without the training data. Otherwise the
    spec's dataset and its splits, as in training.
    """
    meta = read_meta(model_dir)
    folder = split_folder(data["root"], split) if new_root and data.get("root") else None
    if folder is None:
        pools = load_pools(data)
        return relabel(pools, meta["classes"], "data"), make_splits(pools, data)
    pools = load_folder(folder, int(meta["image_size"]), int(meta["in_chans"]), data)
    return relabel(pools, meta["classes"], f"data.root: {folder}"), whole_splits(pools)


def reevaluate(
    model_dir: Path,
    pools: Pools,
    data: dict[str, Any],
    split: str = "test",
    splits: Splits | None = None,
    tta: str | None = None,
) -> dict[str, Any]:
    """Metrics of a saved final model on ``split`` of ``pools`` (any dataset with the same classes);
    ``splits`` default to the spec's (``data``); ``tta`` (train.tta) to the views it was tested with."""
    model, spec, meta = load_model(model_dir)
    pools = relabel(pools, meta["classes"], "data")
    device = next(model.parameters()).device
    splits = splits or make_splits(pools, data)
    res = FitResult(
        model,
        [],
        splits,
        meta["mean"],
        meta["std"],
        meta["image_size"],
        device,
        False,  # evaluated in fp32 whatever trained it (predict_split)
        tta=tta or str(spec["train"].get("tta", "none")),
    )
    f = spec.get("final") or {}
    out, _, _ = evaluate(
        res,
        pools,
        split,
        int(f.get("topk", 5)),
        int(f.get("bootstrap", 1000)),
        int(spec["train"]["seed"]),
        meta.get("threshold"),
    )
    skipped = skipped_in(pools, split)
    out["skipped_images"], out["skipped_first"] = len(skipped), skipped[:SKIPPED_SHOWN]
    return out


SKIPPED_SHOWN = 5  # unreadable files tune-eval names (it counts them all)


def skipped_in(pools: Pools, split: str) -> list[str]:
    """The unreadable files left out of the set ``split`` is drawn from: the test folder's for a test split
    that has its own folder, else those of the pool the split is carved from."""
    n_train = len(pools.skipped) - pools.test_skipped
    if split == "test" and pools.test_x is not None:
        return pools.skipped[n_train:]
    return pools.skipped[:n_train]


def write_per_class(path: Path, test: dict[str, Any]) -> None:
    cm = np.asarray(test["confusion_matrix"])
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["class", "support", "accuracy", "precision"])
        for i, c in enumerate(test["classes"]):
            col = cm[:, i].sum()
            w.writerow([c, int(cm[i].sum()), test["per_class_accuracy"][c], cm[i, i] / col if col else None])


def plots(
    out_dir: Path, test: dict[str, Any], logits: np.ndarray, labels: np.ndarray, history: list[dict[str, float]]
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

    from .metrics import softmax

    classes = test["classes"]
    fig, ax = plt.subplots(figsize=(max(4, len(classes) * 0.5), max(4, len(classes) * 0.5)))
    ConfusionMatrixDisplay(np.asarray(test["confusion_matrix"]), display_labels=classes).plot(
        ax=ax, colorbar=False, include_values=len(classes) <= 20, xticks_rotation="vertical"
    )
    fig.tight_layout()
    fig.savefig(out_dir / "confusion.png", dpi=100)
    plt.close(fig)
    probs = softmax(logits.astype(np.float64))
    fig, ax = plt.subplots(figsize=(5, 5))
    for i, c in enumerate(classes[:20]):  # one-vs-rest curves; beyond 20 classes the plot is unreadable
        if 0 < (labels == i).sum() < len(labels):
            RocCurveDisplay.from_predictions(labels == i, probs[:, i], name=c, ax=ax, plot_chance_level=i == 0)
    fig.tight_layout()
    fig.savefig(out_dir / "roc.png", dpi=100)
    plt.close(fig)
    if history:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        ep = [h["epoch"] for h in history]
        for ax, keys in ((axes[0], ("train_loss", "val_loss")), (axes[1], ("train_acc", "val_acc"))):
            for key in keys:  # what the run measured: train+val final runs have no val_* metrics
                if all(key in h for h in history):
                    ax.plot(ep, [h[key] for h in history], label=key)
        for a in axes:
            a.set_xlabel("epoch")
            a.legend()
        fig.tight_layout()
        fig.savefig(out_dir / "curves.png", dpi=100)
        plt.close(fig)
