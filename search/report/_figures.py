"""The report's figures: learning curves, accuracy against latency, accuracy against the training fraction,
confusion matrices side by side, and the data-efficiency curve of a fraction study (PNG bytes; matplotlib, Agg)."""

from __future__ import annotations

import io
from typing import Any

from ..store._export import SCORED
from ._sources import axis


def fraction_plot(df: Any) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = df[df["status"].isin(SCORED)]
    fig, ax = plt.subplots(figsize=(6, 4))
    for model, g in ok.groupby("model"):
        st = g.groupby("fraction")["value"].agg(["mean", "min", "max"]).reset_index()
        ax.plot(st["fraction"], st["mean"], marker="o", label=f"{model} (mean over seeds)")
        ax.fill_between(st["fraction"], st["min"], st["max"], alpha=0.25)  # the spread over seeds
    ax.set(
        xscale="log",
        xlabel="training fraction",
        ylabel=f"best {ok['metric'].iloc[0]}",
        title="Data efficiency (band: min–max over seeds)",
    )
    ax.legend()
    data = png(fig)
    plt.close(fig)
    return data


def png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def plots(studies: list[dict[str, Any]]) -> dict[str, bytes]:
    """The report's figures by file name: learning curves, accuracy against latency, accuracy against the
    training fraction (when the studies vary it), confusion matrices side by side (when recorded)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, bytes] = {}
    for name, draw in (
        ("curves.png", curves),
        ("pareto.png", pareto),
        ("fraction.png", fraction),
        ("confusion.png", confusion),
    ):
        fig = draw(plt, studies)
        if fig is not None:
            out[name] = png(fig)
            plt.close(fig)
    return out


def curves(plt: Any, studies: list[dict[str, Any]]) -> Any:
    """Accuracy per epoch, mean over seeds."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 4))
    for s in studies:
        hists = [h for h in s.get("history", {}).values() if h]
        if hists:
            n = min(len(h) for h in hists)
            # Final runs on train+val hold nothing out: they have train_acc only, and are labelled so.
            key = "val_acc" if all("val_acc" in e for h in hists for e in h[:n]) else "train_acc"
            ax.plot(
                range(1, n + 1),
                np.mean([[e[key] for e in h[:n]] for h in hists], axis=0),
                marker="o" if n <= 30 else None,
                label=f"{s['experiment']} ({key})",
            )  # one epoch shows too
    ax.set(xlabel="epoch", ylabel="accuracy (mean over seeds)", title="Learning curves")
    if ax.lines:  # no history recorded: no legend (matplotlib would warn on stderr)
        ax.legend()
    return fig


def pareto(plt: Any, studies: list[dict[str, Any]]) -> Any:
    """Test accuracy against batch-1 latency, with the front no faster model is as accurate as."""
    pts = [
        (s["summary"].get("cost", {}).get("latency_ms"), s["summary"]["accuracy"]["mean"], s["experiment"])
        for s in studies
        if s["summary"].get("accuracy", {}).get("mean") is not None
        and s["summary"].get("cost", {}).get("latency_ms") is not None
    ]
    fig, ax = plt.subplots(figsize=(6, 4))
    for lat, acc, name in pts:
        ax.scatter(lat, acc)
        ax.annotate(name, (lat, acc))
    front, best = [], -1.0
    for lat, acc, _ in sorted(pts):
        if acc > best:
            front.append((lat, acc))
            best = acc
    if front:
        ax.step(*zip(*front), where="post", linestyle="--", label="Pareto front")
        ax.legend()
    ax.set(xlabel="latency, ms (batch 1)", ylabel="test accuracy", title="Accuracy against latency")
    return fig


def fraction(plt: Any, studies: list[dict[str, Any]]) -> Any:
    """Accuracy against the training fraction, per model; None unless the studies vary the fraction."""
    fractions = {axis(s, "fraction")[1] for s in studies}
    if len(fractions) <= 1 or None in fractions:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for model in sorted({s["model"] for s in studies}):
        by_fraction = sorted(  # by fraction alone: two studies at one fraction tie, and dicts do not order
            (
                (axis(s, "fraction")[1], s["summary"]["accuracy"])
                for s in studies
                if s["model"] == model and s["summary"].get("accuracy", {}).get("mean") is not None
            ),
            key=lambda p: p[0],
        )
        x = [p[0] for p in by_fraction]
        y = [p[1]["mean"] for p in by_fraction]
        err = [(p[1]["ci_high"] - p[1]["ci_low"]) / 2 if p[1].get("ci_low") is not None else 0 for p in by_fraction]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=model)
    ax.set(xscale="log", xlabel="training fraction", ylabel="test accuracy", title="Data efficiency")
    ax.legend()
    return fig


def confusion(plt: Any, studies: list[dict[str, Any]]) -> Any:
    """Each study's first seed's confusion matrix (rows normalised); None when none was recorded."""
    import numpy as np

    with_cm = [s for s in studies if s.get("confusion_matrix")]
    if not with_cm:
        return None
    fig, axes = plt.subplots(1, len(with_cm), figsize=(4 * len(with_cm), 4), squeeze=False)
    for ax, s in zip(axes[0], with_cm):
        cm = np.asarray(s["confusion_matrix"], dtype=float)
        ax.imshow(cm / cm.sum(1, keepdims=True).clip(min=1), vmin=0, vmax=1, cmap="Blues")
        ax.set_title(s["experiment"])
    return fig
