"""Test-set metrics (scikit-learn) and a bootstrap interval over test images."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predict_labels(logits: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Arg-max classes; for two classes with a ``threshold``, the second when its probability reaches it."""
    if threshold is not None and logits.shape[1] == 2:
        return (softmax(logits.astype(np.float64))[:, 1] >= threshold).astype(np.int64)
    return logits.argmax(axis=1)


# Selection metrics every validation epoch reports beside val_loss and val_acc (``engine.METRICS``);
# val_auc only on binary tasks, where it ranks P(class 1) (``engine.BINARY_METRICS``).
def selection_metrics(labels: np.ndarray, pred: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Macro F1, MCC, balanced accuracy and, for two classes, AUC-ROC of one validation pass (scikit-learn).

    ``pred`` are the decided classes (at the binary threshold), ``probs`` the class probabilities (N x k).
    """
    import warnings

    from sklearn import metrics as skm

    k = probs.shape[1]
    if not len(labels):  # no validation images: nothing to score (NaN, as val_loss then is)
        return dict.fromkeys(
            ("val_f1_macro", "val_mcc", "val_balanced_acc") + (("val_auc",) if k == 2 else ()), math.nan
        )
    with warnings.catch_warnings():  # a class the model never predicts (early epochs) is a score, not a warning
        warnings.simplefilter("ignore")
        out = {
            "val_f1_macro": float(skm.f1_score(labels, pred, labels=list(range(k)), average="macro", zero_division=0)),
            "val_mcc": float(skm.matthews_corrcoef(labels, pred)),
            "val_balanced_acc": float(skm.balanced_accuracy_score(labels, pred)),
        }
    if k == 2:  # undefined with one class in the labels: NaN, which the schedulers score as the worst
        out["val_auc"] = float(skm.roc_auc_score(labels, probs[:, 1])) if len(np.unique(labels)) == 2 else math.nan
    return out


def classification_metrics(
    logits: np.ndarray, labels: np.ndarray, classes: list[str], topk: int = 5, threshold: float | None = None
) -> dict[str, Any]:
    """Accuracy, per-class accuracy, macro P/R/F1, MCC, top-k, AUC-ROC (binary or one-vs-rest), confusion.

    ``threshold``: see ``predict_labels``.
    """
    from sklearn import metrics as skm

    k = len(classes)
    probs = softmax(logits.astype(np.float64))
    pred = predict_labels(logits, threshold)
    labels_all = list(range(k))
    cm = skm.confusion_matrix(labels, pred, labels=labels_all)
    p, r, f1, _ = skm.precision_recall_fscore_support(labels, pred, labels=labels_all, average="macro", zero_division=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(cm.sum(1) > 0, np.diag(cm) / cm.sum(1), np.nan)
    out: dict[str, Any] = {
        "n": int(len(labels)),
        "accuracy": float(skm.accuracy_score(labels, pred)),
        "precision_macro": float(p),
        "recall_macro": float(r),
        "f1_macro": float(f1),
        "mcc": float(skm.matthews_corrcoef(labels, pred)),
        "per_class_accuracy": {c: (None if math.isnan(v) else float(v)) for c, v in zip(classes, per_class)},
        "confusion_matrix": cm.tolist(),
        "classes": list(classes),
        "threshold": threshold,
    }
    pc, rc, _, _ = skm.precision_recall_fscore_support(labels, pred, labels=labels_all, average=None, zero_division=0)
    out["per_class_precision"] = {c: float(v) for c, v in zip(classes, pc)}
    out["per_class_recall"] = {c: float(v) for c, v in zip(classes, rc)}
    if k == 2:  # binary tasks report the positive class (class 1: data.positive_class), as paper 000's Table 1
        bp, br, bf, _ = skm.precision_recall_fscore_support(
            labels, pred, labels=labels_all, average="binary", pos_label=1, zero_division=0
        )
        out.update(positive_class=classes[1], precision=float(bp), recall=float(br), f1=float(bf))
    if 1 < topk < k:
        out[f"top{topk}_accuracy"] = float(skm.top_k_accuracy_score(labels, probs, k=topk, labels=labels_all))
    try:
        if k == 2:
            out["auc_roc"] = float(skm.roc_auc_score(labels, probs[:, 1]))
        else:
            out["auc_roc"] = float(skm.roc_auc_score(labels, probs, multi_class="ovr", labels=labels_all))
    except ValueError:  # a class absent from the test labels: AUC is undefined
        out["auc_roc"] = None
    return out


def bootstrap_interval(
    labels: np.ndarray,
    pred: np.ndarray,
    stat: Callable[[np.ndarray, np.ndarray], float],
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat(labels, pred)`` over resampled test images."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    vals = np.empty(n_boot)
    for i in range(n_boot):
        idx = rng.integers(0, n, n)
        vals[i] = stat(labels[idx], pred[idx])
    lo, hi = np.quantile(vals, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)
