"""Test-only: registers the model ``test_host_memory_hog`` in every process that imports ``trainables.models``.

``tests/test_host_memory.py`` puts this folder on PYTHONPATH for the ``tune-run`` it starts, so the driver
and Ray's trial workers (which inherit its environment) know the model, while the package ships no test
model. Processes that never import ``trainables.models`` (Ray's own services) import nothing more.

``model.hog: true`` makes the first training step fill host memory, 64 MB at a time, until Ray's memory
monitor kills the trial's process, as a batch too large for the machine would. As a guard, it stops
and raises once the node is 10 points past the monitor's threshold (``RAY_memory_usage_threshold``)
without being killed.
"""


import importlib.abc
import importlib.machinery
import sys
from typing import Any

CHUNK = 64 * 2**20


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "trainables.models":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            _register(module)

        spec.loader.exec_module = exec_module
        return spec


def used_fraction() -> float:
    """The node's memory in use, as Ray's monitor reckons it: 1 - MemAvailable / MemTotal."""
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) for line in f}
    return 1 - info["MemAvailable"] / info["MemTotal"]


def _fill_memory() -> None:
    import os
    import time

    import numpy as np

    limit = float(os.environ.get("RAY_memory_usage_threshold", "0.95")) + 0.10
    held = []
    while True:
        if used_fraction() > limit:
            raise RuntimeError(f"Ray's memory monitor did not kill this trial at {len(held) * 64} MB held")
        held.append(np.ones(CHUNK // 4, dtype=np.float32))  # written, so resident
        time.sleep(0.05)  # the monitor samples every RAY_memory_monitor_refresh_ms


def _register(models: Any) -> None:
    from torch import nn

    class Hog(nn.Module):
        def __init__(self, num_classes: int, features: int, hog: bool) -> None:
            super().__init__()
            self.head = nn.Linear(features, num_classes)
            self.hog = hog

        def forward(self, x: Any) -> Any:
            if self.hog and self.training:
                _fill_memory()
            return self.head(x.flatten(1))

    @models.register_model("test_host_memory_hog")
    def test_host_memory_hog(num_classes: int = 10, in_chans: int = 3, image_size: int = 32,
                             hog: bool = False) -> nn.Module:
        return Hog(num_classes, in_chans * image_size * image_size, hog)


sys.meta_path.insert(0, _RegisterAfterImport())
