"""Memory of 4 concurrent trials reading one data set ÷ one copy of that data set.

The driver puts the uint8 pools in Ray's object store once (as ``tune.with_parameters`` does for
every study); each of 4 concurrent workers maps them zero-copy and reads every image through the
engine's own ``channel_stats`` and ``Batcher`` (gather, convert, augment, normalise), then releases
freed heap pages as the engine does at the end of every epoch, as a trial does.

Memory is the machine's anonymous plus shared pages (``AnonPages + Shmem`` in /proc/meminfo: every
process's private memory, and the object store's /dev/shm, each page counted once; page cache is
left out because it comes and goes with other processes). The baseline is taken with the driver
holding its decoded copy and the workers warmed up: each has already run the same batch loop on a
small private array of the same image shape, so its interpreter, torch and the allocator's arenas
— a trial's working memory, not the data — are not counted. Target: ratio <= 1.2.
"""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import emit, parser  # noqa: E402

WORKERS = 4
BATCH = 256
AUGMENT = {"hflip": 0.5, "pad_crop": 4}


def resident_bytes() -> int:
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            info[key] = int(value.split()[0]) * 1024
    return info["AnonPages"] + info["Shmem"]


def main() -> None:
    args = parser(__doc__).parse_args()
    import numpy as np
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

            torch.set_num_threads(1)  # one CPU each, as the study's resources.cpu would give

        def read(self, x: np.ndarray, y: np.ndarray) -> float:
            """Every image through the engine's statistics and batch path; the pixels are held until released."""
            import torch

            from trainables.augment import AUGMENT_DEFAULTS
            from trainables.engine import Batcher, as_tensor, channel_stats, release_host_memory

            self.x, self.y = as_tensor(x), as_tensor(y)  # zero-copy over the shared pages
            idx = np.arange(len(x))
            mean, std = channel_stats(self.x, idx)
            batcher = Batcher(self.x, self.y, x.shape[-1], mean, std, torch.device("cpu"), channels_last=False)
            g = torch.Generator().manual_seed(0)
            perm = torch.randperm(len(idx), generator=g)
            total = 0.0
            for i in range(0, len(perm), BATCH):
                xb, _ = batcher(perm[i:i + BATCH], {**AUGMENT_DEFAULTS, **AUGMENT}, g)
                total += float(xb.mean())
            del xb
            release_host_memory()  # as the engine does at the end of every epoch
            return round(total, 3)

        def read_shared(self, pools_ref: list) -> float:
            self.pools = ray.get(pools_ref[0])
            return self.read(self.pools.train_x, self.pools.train_y)

        def private_rss(self) -> int:
            with open("/proc/self/smaps_rollup") as f:
                return sum(int(line.split()[1]) * 1024 for line in f if line.startswith("Private_Dirty"))

    pools = trainables.prepare(spec)
    size = pools.train_x.nbytes
    trials = [Trial.remote() for _ in range(WORKERS)]
    # Warm-up: the same loop on a private set of 2,048 images of the same shape (8 MB at 64 px).
    small = np.ascontiguousarray(pools.train_x[:2048])
    ray.get([t.read.remote(small, pools.train_y[:2048]) for t in trials])
    del small
    gc.collect()
    time.sleep(1)
    base = resident_bytes()
    private0 = ray.get([t.private_rss.remote() for t in trials])
    ref = ray.put(pools)
    del pools
    gc.collect()  # the driver's copy goes; the object store's copy is the one every trial shares
    sums = ray.get([t.read_shared.remote([ref]) for t in trials])
    time.sleep(1)
    held = resident_bytes() - base + size
    private = [b - a for a, b in zip(private0, ray.get([t.private_rss.remote() for t in trials]))]
    ray.shutdown()
    assert len(set(sums)) == 1, sums  # every worker read the same bytes, in the same order
    print(f"data set {size / 2**20:.0f} MiB; {WORKERS} workers holding it: {held / 2**20:.0f} MiB; "
          f"private growth per worker: {', '.join(f'{p / 2**20:.0f}' for p in private)} MiB")
    emit("memory", {"workers": WORKERS, "dataset_bytes": size, "used_bytes_for_data": held,
                    "private_bytes_per_worker": private, "ratio": held / size, "target": "<= 1.2"}, args.quick)


if __name__ == "__main__":
    main()
