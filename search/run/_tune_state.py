"""Tune's record of a study restored as one consistent snapshot, after a driver killed mid-upload.

At each experiment checkpoint Tune (2.60) writes its trial list (``experiment_state-<session>.json``) and then its
searcher's state (``basic-variant-state-…``; ``search_gen_state-…`` and ``searcher-state-…``) into a local staging
folder, and uploads that folder to the study's storage file by file. A driver killed between two of those uploads
leaves storage with a searcher from one checkpoint and a trial list from another: a searcher ahead of the list had
already handed out a trial the list does not hold, which ``--resume`` then never runs (a grid point lost); one
behind it hands out a trial id the list already holds. Seen on S3 with a driver killed right after a trial ended.

So the search algorithms ``build_searcher`` makes (``PairedVariants``, ``PairedSearch``) also write, in the same checkpoint and right after those files, one
snapshot of them all (``study-state-<session>.json``: a single object, which an upload writes whole or not at
all). Before Tune restores a study, ``restore_snapshot`` puts the snapshot's files back where storage holds others:
the study resumes from one checkpoint — the newest whole one; trials continue from their newest checkpoints.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

from ray.tune.search import BasicVariantGenerator, SearchGenerator

from ..store import _storage as storage
from ..store._atomic import write_atomic

SNAPSHOT = "study-state-{}.json"
STATE = "experiment_state-"  # Tune's trial list; the other prefixes are its searchers' state files
STATE_FILES = (STATE, "basic-variant-state-", "search_gen_state-", "searcher-state-")
SNAPSHOT_LIMIT = 1 << 30  # bytes: Tune's state of a study with tens of thousands of trials fits


def write_snapshot(staging: str, session: str) -> None:
    """One file in ``staging`` holding this checkpoint's state files (those of ``session``), byte for byte."""
    files = {}
    for name in sorted(os.listdir(staging)):
        if name.startswith(STATE_FILES) and Path(name).stem.endswith(session):
            files[name] = base64.b64encode(Path(staging, name).read_bytes()).decode()
    if STATE + session + ".json" in files:  # a searcher saved outside a Tune checkpoint has nothing to pair
        write_atomic(Path(staging, SNAPSHOT.format(session)), json.dumps({"files": files}))


def restore_snapshot(folder: str) -> list[str]:
    """Put back the state files of the study in ``folder`` (local or a URI) that differ from the snapshot of
    the session Tune restores (its newest trial list); returns their names."""
    names = [n for n, is_dir in storage.entries(folder).items() if not is_dir]
    lists = sorted(n for n in names if n.startswith(STATE) and n.endswith(".json"))
    if not lists:
        return []
    snapshot = SNAPSHOT.format(lists[-1].removeprefix(STATE).removesuffix(".json"))
    if snapshot not in names:  # a study written before snapshots, or killed before its session's first one
        return []
    files: dict[str, Any] = json.loads(_read(storage.join(folder, snapshot)))["files"]
    put_back = []
    for name, text in files.items():
        data = base64.b64decode(text)
        target = storage.join(folder, name)
        if name not in names or _read(target) != data:
            storage.write_bytes(target, data)
            put_back.append(name)
    return put_back


def _read(location: str) -> bytes:
    if storage.is_uri(location):
        return storage.read_bytes(location, "Ray Tune state file", SNAPSHOT_LIMIT)
    return Path(location).read_bytes()


class PairedVariants(BasicVariantGenerator):
    """Grid and random search (Tune's BasicVariantGenerator) whose checkpoints end with their snapshot."""

    def save_to_dir(self, dirpath: str, session_str: str = "default", **kwargs: Any) -> Any:
        out = super().save_to_dir(dirpath, session_str=session_str, **kwargs)
        write_snapshot(dirpath, session_str)
        return out


class PairedSearch(SearchGenerator):
    """A model-based searcher (Optuna, BOHB) as Tune wraps it, whose checkpoints end with their snapshot."""

    def save_to_dir(self, dirpath: str, session_str: str = "default", **kwargs: Any) -> Any:
        out = super().save_to_dir(dirpath, session_str=session_str, **kwargs)
        write_snapshot(dirpath, session_str)
        return out
