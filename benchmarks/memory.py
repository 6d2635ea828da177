"""Memory of 4 concurrent trials reading one data set ÷ one copy of that data set.

The driver puts the uint8 pools in Ray's object store once (as ``tune.with_parameters`` does for
every study); each of 4 concurrent workers maps them zero-copy and reads every byte, in batches,
as training does. Memory is the machine's used memory (MemTotal - MemAvailable) while the workers
hold the data, minus the same figure with the workers started and idle, so their interpreter and
torch imports are not counted. Target: ratio <= 1.2.
"""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import emit, parser  # noqa: E402

WORKERS = 4


def used_bytes() -> int:
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            info[key] = int(value.split()[0]) * 1024
    return info["MemTotal"] - info["MemAvailable"]


def main() -> None:
    args = parser(__doc__).parse_args()
    import ray

    import trainables
    from search import resolve

    n = 8000 if args.quick else 40000
    spec = resolve({"experiment": {"name": "mem"}, "model": {"name": "cnn"},
                    "data": {"dataset": "synthetic", "image_size": 64, "num_classes": 10, "num_samples": n}},
                   trainables)
    ray.init(num_cpus=WORKERS, include_dashboard=False)

    @ray.remote(num_cpus=1)
    class Trial:
        def __init__(self) -> None:
            import torch

            import trainables  # noqa: F401  (torch and the rest imported before the baseline is taken)

            int(torch.zeros(64, 3, 64, 64, dtype=torch.uint8).sum())  # torch's per-process scratch, too

        def ready(self) -> bool:
            return True

        def read(self, pools_ref: list) -> int:
            from trainables.engine import as_tensor

            self.pools = ray.get(pools_ref[0])
            self.x = as_tensor(self.pools.train_x)  # zero-copy over the shared pages, held until released
            total = 0
            for i in range(0, len(self.x), 64):  # batches, as training reads them
                total += int(self.x[i:i + 64].sum())
            return total

    trials = [Trial.remote() for _ in range(WORKERS)]
    ray.get([t.ready.remote() for t in trials])
    pools = trainables.prepare(spec)
    size = pools.train_x.nbytes
    gc.collect()
    time.sleep(1)
    # Baseline: idle workers and the driver holding its one decoded copy.
    base = used_bytes()
    ref = ray.put(pools)
    del pools
    gc.collect()  # the driver's copy goes; the object store's copy is the one every trial shares
    sums = ray.get([t.read.remote([ref]) for t in trials])
    time.sleep(1)
    held = used_bytes() - base + size
    ray.shutdown()
    assert len(set(sums)) == 1  # every worker read the same bytes
    emit("memory", {"workers": WORKERS, "dataset_bytes": size, "used_bytes_for_data": held,
                    "ratio": held / size, "target": "<= 1.2"}, args.quick)


if __name__ == "__main__":
    main()
