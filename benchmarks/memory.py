"""Memory of a study whose 4 concurrent trials read one data set ÷ one copy of that data set.

Measured through ``search.run_study``, as ``tune-run`` runs a study: the driver decodes the set,
the runner hands it to the trials through Ray's object store, and 4 trials (a small CNN on CPU,
all running at once) train on it through the real trial path: channel statistics, every training
image each epoch through the engine's batches and augmentation, validation, a report and a
checkpoint per epoch.

Memory is the proportional set size (PSS) summed over the driver and every process it started:
Ray's services, its object store and every worker. PSS splits a shared page among the processes
mapping it, so the object store's pages count once however many trials read them, and other
processes on the machine are left out. A thread samples it every 0.5 s while the study runs; a
study's figure is the median over the samples taken while all 4 trials were running (its peak,
which one batch's temporaries in one trial can move by tens of MB, is reported beside it).

Two studies are run, each in a fresh Ray runtime, identical but for the number of images (n and
n/8, same image shape, the same epochs): ratio = (median_n - median_small) / (bytes_n - bytes_small), what
each byte of data costs the study; what a study costs apart from its data (interpreters, torch, models, Ray
itself, the heap each trial grows as it trains) cancels out. It cancels only when both studies train the same
epochs: a trial's heap grows by tens of MB over its first epochs, and when the small study ran 8x the epochs
(to run as long) its 4 trials held ~245 MiB more heap than the large study's, which the difference counted
as minus data (0.30-0.39 on a 2-core AMD EPYC, where the object store's pages held the data once). The
samples also split PSS into shared-memory pages (the object store's, where the data lives) and the rest.
1.0 = one shared copy; a driver keeping its decoded copy through the study adds 1, and a trial
copying the set 1 more each. Target: ratio <= 1.2.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import emit, parser  # noqa: E402

TRIALS = 4
# Ray's process titles of a trial's actor: "ray::<class>" between calls and "ray::<class>.train" in one; the
# class is ImplicitFunc for a bare function trainable and ResourceTrainable once tune.with_resources wraps it
# (trainables/ray_adapter.py's restorable class); "ray::IDLE" is a worker with no actor.
TRIAL_TITLES = ("ray::ImplicitFunc", "ray::ResourceTrainable")
SMALL = 8  # the small study has 1/SMALL of the images (and the same epochs: its trials' heaps grow alike)
SAMPLE_S = 0.2  # between samples: the small study's trials run at once for a few seconds


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])  # the name in parentheses may hold spaces
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(pid))
    return tree


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:  # the process ended between listing and reading
        return ""


def sample() -> tuple[int, int, int]:
    """(PSS of this process and all its descendants in bytes, of it the shared-memory pages (Ray's object store),
    how many of them are running trials)."""
    tree, todo, pss, shmem, trials = _children(), [os.getpid()], 0, 0, 0
    while todo:
        pid = todo.pop()
        todo += tree.get(pid, [])
        for line in _read(f"/proc/{pid}/smaps_rollup").splitlines():
            if line.startswith("Pss:"):
                pss += int(line.split()[1]) * 1024
            elif line.startswith("Pss_Shmem:"):
                shmem += int(line.split()[1]) * 1024
        trials += _read(f"/proc/{pid}/cmdline").startswith(TRIAL_TITLES)
    return pss, shmem, trials


class Backend:
    """The real trial backend, noting the size of the set the driver decodes."""

    def __init__(self) -> None:
        import trainables

        self._trainables = trainables
        self.nbytes = 0

    def prepare(self, spec: dict[str, Any]) -> Any:
        pools = self._trainables.prepare(spec)
        self.nbytes = pools.train_x.nbytes + pools.train_y.nbytes
        return pools

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trainables, name)


def study(n: int, epochs: int, tmp: str, trials: int = TRIALS) -> dict[str, Any]:
    """Run one study of ``trials`` concurrent trials on ``n`` images; its memory while all of them ran."""
    import ray

    import trainables
    from search import resolve, run_study

    spec = resolve(
        {
            "experiment": {"name": f"mem{n}", "output_dir": f"{tmp}/runs"},
            "data": {
                "dataset": "synthetic",
                "image_size": 64,
                "num_classes": 10,
                "num_samples": n,
                "augment": {"hflip": 0.5, "pad_crop": 4},
            },
            "model": {"name": "cnn", "conv1": 4, "conv2": 4, "conv3": 4, "hidden": 8},
            # Small batches keep the trials' transient memory (the noise here) small; host memory is measured.
            "train": {"epochs": epochs, "batch_size": 64, "eval_batch_size": 256, "device": "cpu"},
            "space": {"train.lr": {"grid": [1e-3 * (i + 1) for i in range(trials)]}},
            # An equal share of the machine each, so that the trials run at once on any number of cores.
            "resources": {"cpu": (os.cpu_count() or 1) / trials, "gpu": 0},
            "tracking": {"enabled": False},
        },
        trainables,
    )
    samples: list[tuple[int, int, int]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            samples.append(sample())
            time.sleep(SAMPLE_S)

    backend = Backend()
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        run_study(spec, backend, file=f"mem{n}", log=lambda *_: None)
    finally:
        done.set()
        thread.join()
        ray.shutdown()  # the next study starts a fresh runtime: no object store pages left over
    running = [pss for pss, _, k in samples if k == trials]
    shared = [shm for _, shm, k in samples if k == trials]
    if not running:
        raise SystemExit(
            f"memory: the {trials} trials of the study on {n} images never ran at once "
            f"({len(samples)} samples); the machine may be too loaded"
        )
    return {
        "images": n,
        "dataset_bytes": backend.nbytes,
        "median_bytes": int(statistics.median(running)),
        "median_shared_bytes": int(statistics.median(shared)) if shared else 0,
        "peak_bytes": max(running),
        "samples_all_running": len(running),
    }


def main() -> None:
    args = parser(__doc__).parse_args()
    # --quick checks the script, not the figure: 2 trials a study (4 fewer trial processes to start), 4,000 images.
    n, epochs, trials = (4000, 1, 2) if args.quick else (40000, 2, TRIALS)
    with tempfile.TemporaryDirectory() as tmp:
        small = study(n // SMALL, epochs, tmp, trials)
        big = study(n, epochs, tmp, trials)
    data = big["dataset_bytes"] - small["dataset_bytes"]
    used = big["median_bytes"] - small["median_bytes"]
    shared = big["median_shared_bytes"] - small["median_shared_bytes"]
    peak_ratio = (big["peak_bytes"] - small["peak_bytes"]) / data
    mib = 2**20
    print(
        f"data set {big['dataset_bytes'] / mib:.0f} MiB vs {small['dataset_bytes'] / mib:.0f} MiB; "
        f"study with {trials} trials running: {big['median_bytes'] / mib:.0f} vs {small['median_bytes'] / mib:.0f} MiB "
        f"(median; peaks {big['peak_bytes'] / mib:.0f} vs {small['peak_bytes'] / mib:.0f}); "
        f"{used / mib:.0f} MiB for {data / mib:.0f} MiB more data, {shared / mib:.0f} MiB of it in shared memory "
        f"(Ray's object store)"
    )
    emit(
        "memory",
        {
            "trials": trials,
            "studies": [small, big],
            "dataset_bytes": data,
            "used_bytes_for_data": used,
            "ratio": used / data,
            "ratio_of_peaks": peak_ratio,
            "shared_ratio": shared / data,  # of the ratio: shared-memory pages, where one copy of the data lives
            "target": "<= 1.2",
        },
        args.quick,
    )


if __name__ == "__main__":
    main()
