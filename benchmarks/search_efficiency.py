"""Search efficiency on real data: how many epochs ASHA needs to match random search.

Data: a CIFAR-10 subset with ``--cifar ROOT`` (a class-folder tree with train/, such as the shared
JPEG set; ``--per-class`` images per class are read, 20 % of them held out for validation), else
scikit-learn's digits (which saturates: every method reaches 1.0).

The same space, seeds and number of configurations under random search (every trial runs all
epochs), ASHA, Hyperband and Optuna TPE + ASHA. ratio = epochs ASHA spends (trials in the order
they report) until its best-so-far validation accuracy reaches random search's best, ÷ random
search's total epochs. Target: ratio <= 0.25. Also plots best-so-far against cumulative epochs.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import emit, parser  # noqa: E402

METHODS = {
    "random": {"search": {"algorithm": "random"}, "scheduler": {"name": "fifo"}},
    "asha": {"search": {"algorithm": "random"}, "scheduler": {"name": "asha", "grace_period": 1,
                                                              "reduction_factor": 3}},
    "hyperband": {"search": {"algorithm": "random"}, "scheduler": {"name": "hyperband", "reduction_factor": 3}},
    "optuna+asha": {"search": {"algorithm": "optuna", "max_concurrent": 2},
                    "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 3}},
}


def curve(out_dir: Path, metric: str = "val_acc") -> list[tuple[int, float]]:
    """(cumulative epochs, best-so-far) over every reported epoch of every trial, in time order."""
    import pandas as pd

    frames = [pd.read_csv(p) for p in out_dir.glob("trial_*/progress.csv")]
    df = pd.concat(frames).sort_values("timestamp", kind="stable")
    best, out = -1.0, []
    for i, v in enumerate(df[metric], start=1):
        best = max(best, float(v))
        out.append((i, best))
    return out


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--plot", default="benchmarks/search_efficiency.png")
    p.add_argument("--cifar", metavar="ROOT", help="CIFAR-10 class-folder tree (train/ and test/); default: digits")
    p.add_argument("--per-class", type=int, default=500, help="CIFAR-10 images read per class (default 500)")
    args = p.parse_args()
    import ray

    import trainables
    from search import resolve, run_study

    n, epochs = (6, 4) if args.quick else (27, 27)
    data = ({"dataset": "imagefolder", "root": args.cifar, "load_max_per_class": args.per_class, "storage": "memory",
             "augment": {"hflip": 0.5, "pad_crop": 2}} if args.cifar else {"dataset": "digits"})
    curves = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, parts in METHODS.items():
            spec = resolve({
                "experiment": {"name": name.replace("+", "-"), "output_dir": f"{tmp}/runs"},
                "data": {**data, "val_fraction": 0.2, "split_seed": 0},
                "model": {"name": "cnn", "conv1": 16, "conv2": 32, "conv3": 64, "hidden": 64},
                "train": {"epochs": epochs, "batch_size": 64, "schedule": "cosine"},
                "space": {"train.lr": {"loguniform": [1e-4, 1e-1]}, "model.dropout": {"uniform": [0.0, 0.7]},
                          "train.weight_decay": {"loguniform": [1e-6, 1e-1]}},
                "search": {"num_samples": n, "seed": 0, **parts["search"]},
                "scheduler": parts["scheduler"],
                "tracking": {"enabled": False},
                "resources": {"cpu": 1, "gpu": 0},  # the same concurrency for every method
            }, trainables)
            res = run_study(spec, trainables, file=name, log=lambda *_: None)
            curves[name] = curve(res.out_dir)
        ray.shutdown()
    random_total, random_best = curves["random"][-1]
    reach = {m: next((e for e, b in c if b >= random_best), None) for m, c in curves.items()}
    asha_epochs = reach["asha"] if reach["asha"] is not None else curves["asha"][-1][0]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for m, c in curves.items():
        ax.plot([e for e, _ in c], [b for _, b in c], label=m)
    title = f"{'CIFAR-10, ' + str(10 * args.per_class) + ' images' if args.cifar else 'digits'}: {n} configurations, {epochs} epochs max"
    ax.set(xlabel="cumulative epochs", ylabel="best val_acc so far", title=title)
    ax.legend()
    fig.savefig(args.plot, dpi=100, bbox_inches="tight")
    emit("search_efficiency", {
        "data": f"cifar10 subset, {args.per_class}/class" if args.cifar else "digits", "configurations": n, "max_epochs": epochs, "random_best": random_best, "random_total_epochs": random_total,
        "epochs_to_reach_random_best": reach, "total_epochs": {m: c[-1][0] for m, c in curves.items()},
        "best": {m: c[-1][1] for m, c in curves.items()}, "asha_reached": reach["asha"] is not None,
        "ratio": asha_epochs / random_total, "target": "<= 0.25", "plot": args.plot}, args.quick)


if __name__ == "__main__":
    main()
