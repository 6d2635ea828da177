"""Tune's search algorithms whose every checkpoint ends with a snapshot of Tune's state files
(``search/store/_tune_snapshot.py``: why, and how ``--resume`` uses it).

``tuner.pkl`` holds these classes by their import path: renaming this module or a class stops studies started
before the rename from resuming.
"""

from __future__ import annotations

import threading
from typing import Any

from optuna.samplers import NSGAIISampler
from ray.tune.search import BasicVariantGenerator, SearchGenerator

from ..store._tune_snapshot import write_snapshot


class _Snapshotting:
    """A Tune search algorithm whose every checkpoint ends with its snapshot: Tune wrote its trial list first
    (TuneController.save_to_dir), then this algorithm's own state files."""

    def save_to_dir(self, dirpath: str, session_str: str = "default", **kwargs: Any) -> Any:
        out = super().save_to_dir(dirpath, session_str=session_str, **kwargs)  # type: ignore[misc]
        write_snapshot(dirpath, session_str)
        return out


class PairedVariants(_Snapshotting, BasicVariantGenerator):
    """Grid and random search (Tune's BasicVariantGenerator) whose checkpoints end with their snapshot."""


class PairedSearch(_Snapshotting, SearchGenerator):
    """A model-based searcher (Optuna, BOHB) as Tune runs one, whose checkpoints end with their snapshot."""


class PicklableNSGAII(NSGAIISampler):
    """Optuna's NSGA-II sampler, picklable: Tune pickles the searcher with every checkpoint of its state, and
    Optuna's genetic samplers hold a thread lock, which does not pickle (a new one is made on unpickling)."""

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_thread_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()
