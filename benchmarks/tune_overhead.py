"""Scheduling overhead: N trials of one second of work each on the local CPUs; wall time ÷ ideal.

The trials go through the service's own study runner (searcher, scheduler, MLflow callback,
exports), with a stub trial that busy-waits one second and reports once. Ideal = N x 1 s ÷
concurrent trials. Target: ratio <= 1.15 (Ray's own bookkeeping benchmark: 1.14 on 16 CPUs).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import emit, parser  # noqa: E402

WORK_S = 1.0


def one_second(config: dict) -> None:
    from ray import tune

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < WORK_S:  # CPU work, not sleep: it occupies the core it was given
        pass
    tune.report({"val_acc": float(config["train.lr"]), "epoch": 1})


class StubBackend:
    """The trial side with its data and training replaced by one second of arithmetic; the rest of the
    contract (tags, GPU-hours, metric names, ...) is the real one."""

    def __getattr__(self, name: str) -> object:
        import trainables

        return getattr(trainables, name)

    def prepare(self, spec: dict) -> None:
        return None

    def describe(self, pools: object, data: dict | None = None) -> str:
        return "none (one second of arithmetic per trial)"

    def dataset_info(self, spec: dict, pools: object) -> None:
        return None  # no data set to record

    def skipped_images(self, pools: object) -> list:
        return []  # no files read

    def node_paths(self, spec: dict, pools: object) -> list:
        return []  # no files read on the nodes

    def make_trainable(self, spec: dict, pools: object, flatten: object = None, limits: object = None) -> object:
        from ray import tune

        return tune.with_resources(one_second, {"cpu": 1})


def main() -> None:
    args = parser(__doc__).parse_args()
    import ray

    import trainables
    from search import resolve, run_study

    n = 10 if args.quick else 100
    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        spec = resolve(
            {
                "experiment": {"name": "overhead", "output_dir": f"{tmp}/runs"},
                "data": {"dataset": "synthetic"},
                "model": {"name": "cnn"},
                "train": {"epochs": 1},
                "space": {"train.lr": {"uniform": [0.001, 1.0]}},  # the stub ignores it; an lr of 0 is no lr
                "search": {"num_samples": n, "reuse_actors": True},
                "tracking": {"mlflow_uri": f"sqlite:///{tmp}/mlflow.db"},
            },
            trainables,
        )
        # Started outside the timed region; "local": a fresh runtime, as tune-run starts one, not one that
        # `ray start` left on this host (Ray's default joins it: the CI run's cluster tests start such clusters).
        ray.init(address="local", num_cpus=cpus, include_dashboard=False)
        t0 = time.perf_counter()
        res = run_study(spec, StubBackend(), file="overhead", log=lambda *_: None)
        wall = time.perf_counter() - t0
        ray.shutdown()
    ideal = n * WORK_S / cpus
    assert len(res.rows) == n
    emit(
        "tune_overhead",
        {"trials": n, "cpus": cpus, "wall_s": wall, "ideal_s": ideal, "ratio": wall / ideal, "target": "<= 1.15"},
        args.quick,
    )


if __name__ == "__main__":
    main()
