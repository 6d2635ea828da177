"""Search efficiency on real data: how many epochs ASHA needs to match random search.

Data: a CIFAR-10 subset with ``--cifar ROOT`` (a class-folder tree with train/, such as the shared
JPEG set; ``--per-class`` images per class are read, 20 % of them held out for validation), else
scikit-learn's digits (which saturates: every method reaches 1.0).

The same space and number of configurations under random search (every trial runs all epochs),
ASHA, Hyperband and Optuna TPE + ASHA (``--methods``; random and ASHA always run, the ratio needs
them), each repeated for ``--seeds`` seeds: seed s sets the searcher's seed (``search.seed``), the
train/validation split (``data.split_seed``) and the weights (``train.seed``), the same s for
every method. A method's epochs are counted over every reported epoch of every trial, in the
order they were reported.

Per seed: ratio = epochs ASHA spends until its best-so-far validation accuracy reaches random
search's best ÷ epochs random search spent until it reached that best itself (not its total: the
rest of random's budget bought nothing). A seed where ASHA never reaches it counts as no ratio
(worse than any). ratio = the median over seeds (none when ASHA missed in most seeds); the
per-seed ratios and their min–max are reported with it. Target: ratio <= 0.25. Also plots
best-so-far against cumulative epochs, one line per method and seed.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import emit, parser  # noqa: E402

METHODS = {
    "random": {"search": {"algorithm": "random"}, "scheduler": {"name": "fifo"}},
    "asha": {
        "search": {"algorithm": "random"},
        "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 3},
    },
    "hyperband": {"search": {"algorithm": "random"}, "scheduler": {"name": "hyperband", "reduction_factor": 3}},
    "optuna+asha": {
        "search": {"algorithm": "optuna", "max_concurrent": 2},
        "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 3},
    },
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


def reach(c: list[tuple[int, float]], target: float) -> int | None:
    """Epochs spent until the best-so-far first reaches ``target`` (None: never)."""
    return next((e for e, b in c if b >= target), None)


def seed_ratio(curves: dict[str, list[tuple[int, float]]]) -> float | None:
    """ASHA's epochs to reach random search's best ÷ random's epochs to reach it (None: ASHA never did)."""
    best = curves["random"][-1][1]
    asha = reach(curves["asha"], best)
    return None if asha is None else asha / reach(curves["random"], best)


def median_ratio(ratios: list[float | None]) -> float | None:
    """Median with a missed seed ranked worst; None when the median seed is a miss."""
    ranked = sorted(ratios, key=lambda r: float("inf") if r is None else r)
    mid = len(ranked) // 2
    if len(ranked) % 2:
        return ranked[mid]
    lo, hi = ranked[mid - 1], ranked[mid]
    return None if lo is None or hi is None else (lo + hi) / 2


def study(name: str, data: dict, n: int, epochs: int, seed: int, tmp: str, cpu: int = 1) -> list[tuple[int, float]]:
    """One method's study at one seed; its best-so-far curve (``cpu``: each trial's CPUs, the same for every method)."""
    import trainables
    from search import resolve, run_study

    parts = METHODS[name]
    spec = resolve(
        {
            "experiment": {"name": f"{name.replace('+', '-')}-{seed}", "output_dir": f"{tmp}/runs"},
            "data": {**data, "val_fraction": 0.2, "split_seed": seed},
            "model": {"name": "cnn", "conv1": 16, "conv2": 32, "conv3": 64, "hidden": 64},
            "train": {"epochs": epochs, "batch_size": 64, "schedule": "cosine", "seed": seed},
            "space": {
                "train.lr": {"loguniform": [1e-4, 1e-1]},
                "model.dropout": {"uniform": [0.0, 0.7]},
                "train.weight_decay": {"loguniform": [1e-6, 1e-1]},
            },
            "search": {"num_samples": n, "seed": seed, **parts["search"]},
            "scheduler": parts["scheduler"],
            "tracking": {"enabled": False},
            "resources": {"cpu": cpu, "gpu": 0},  # the same concurrency for every method
        },
        trainables,
    )
    return curve(run_study(spec, trainables, file=name, log=lambda *_: None).out_dir)


def main() -> None:
    p = parser(__doc__)
    # A full run's plot is BENCHMARKS.md's, beside this script wherever it is run from (a path relative to the working
    # folder failed at the end of a whole run where it had no benchmarks/); --quick's goes to the working folder.
    p.add_argument("--plot", help="the plot's file (default: benchmarks/search_efficiency.png; --quick: ./)")
    p.add_argument("--cifar", metavar="ROOT", help="CIFAR-10 class-folder tree (train/ and test/); default: digits")
    p.add_argument("--per-class", type=int, default=500, help="CIFAR-10 images read per class (default 500)")
    p.add_argument("--seeds", type=int, help="seeds 0..N-1 (default 3; --quick 1)")
    p.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated, of {', '.join(METHODS)} (default all; random and asha always run)",
    )
    args = p.parse_args()
    args.plot = args.plot or (
        "search_efficiency.png" if args.quick else str(Path(__file__).resolve().with_suffix(".png"))
    )
    unknown = set(args.methods.split(",")) - set(METHODS)
    if unknown:
        p.error(f"--methods: unknown {', '.join(sorted(unknown))}; allowed: {', '.join(METHODS)}")
    methods = [m for m in METHODS if m in {"random", "asha", *args.methods.split(",")}]
    # --quick checks the script end to end: one seed (the median over several is tested in-process)
    seeds = list(range(args.seeds or (1 if args.quick else 3)))
    import ray

    # --quick: each trial on both CPUs of a 2-core host, so one trial process a study, reused by its trials (each
    # process costs ~4 CPU-seconds to start, more than a quick trial trains); a measured run keeps 1 CPU a trial.
    n, epochs, cpu = (3, 2, 2) if args.quick else (27, 27, 1)
    data = (
        {
            "dataset": "imagefolder",
            "root": args.cifar,
            "load_max_per_class": args.per_class,
            "storage": "memory",
            "augment": {"hflip": 0.5, "pad_crop": 2},
        }
        if args.cifar
        else {"dataset": "digits"}
    )
    curves: dict[int, dict[str, list[tuple[int, float]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            curves[seed] = c = {m: study(m, data, n, epochs, seed, tmp, cpu) for m in methods}
            # As each seed ends, so that a run cut short still leaves its finished seeds in the log.
            r = seed_ratio(c)
            print(
                f"seed {seed}: ratio {'missed' if r is None else f'{r:.3f}'}; random's best {c['random'][-1][1]:.4f}; "
                + "; ".join(f"{m} {cm[-1][0]} epochs, best {cm[-1][1]:.4f}" for m, cm in c.items()),
                flush=True,
            )
        ray.shutdown()
    per_seed = {
        s: {
            "ratio": seed_ratio(c),
            "random_best": c["random"][-1][1],
            "epochs_to_reach_random_best": {m: reach(cm, c["random"][-1][1]) for m, cm in c.items()},
            "total_epochs": {m: cm[-1][0] for m, cm in c.items()},
            "best": {m: cm[-1][1] for m, cm in c.items()},
        }
        for s, c in curves.items()
    }
    ratios = [r["ratio"] for r in per_seed.values()]
    reached = [r for r in ratios if r is not None]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, m in enumerate(methods):
        for s in seeds:
            c = curves[s][m]
            ax.plot([e for e, _ in c], [b for _, b in c], color=f"C{i}", alpha=0.7, label=m if s == seeds[0] else None)
    title = f"{'CIFAR-10, ' + str(10 * args.per_class) + ' images' if args.cifar else 'digits'}: {n} configurations, {epochs} epochs max, {len(seeds)} seeds"
    ax.set(xlabel="cumulative epochs", ylabel="best val_acc so far", title=title)
    ax.legend()
    fig.savefig(args.plot, dpi=100, bbox_inches="tight")
    ratio = median_ratio(ratios)
    print(
        f"ASHA epochs to reach random's best ÷ random's epochs to its best, per seed: "
        f"{', '.join('missed' if r is None else f'{r:.3f}' for r in ratios)}; median "
        f"{'missed' if ratio is None else f'{ratio:.3f}'}"
    )
    emit(
        "search_efficiency",
        {
            "data": f"cifar10 subset, {args.per_class}/class" if args.cifar else "digits",
            "configurations": n,
            "max_epochs": epochs,
            "seeds": seeds,
            "methods": methods,
            "per_seed": per_seed,
            "total_epochs": {m: [per_seed[s]["total_epochs"][m] for s in seeds] for m in methods},
            "ratios": ratios,
            "ratio": ratio,
            "ratio_spread": {"min": min(reached), "max": max(reached)} if reached else None,
            "asha_missed_seeds": [s for s in seeds if per_seed[s]["ratio"] is None],
            "target": "<= 0.25",
            "plot": args.plot,
        },
        args.quick,
    )


if __name__ == "__main__":
    main()
