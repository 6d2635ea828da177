"""Tune's record of a study, restored from one checkpoint after a driver killed between the uploads of its files.

At each experiment checkpoint Ray Tune (2.60) writes its trial list (``experiment_state-<session>.json``) and then
its searcher's state (``basic-variant-state-…``; ``search_gen_state-…`` and ``searcher-state-…``) into a local
staging folder, and uploads that folder to the study's storage file by file. A driver killed between two of those
uploads leaves storage with a searcher from one checkpoint and a trial list from another: a searcher ahead of the
list had already handed out a trial the list does not hold, which ``--resume`` then never runs (a grid point lost,
seen on S3 with a driver killed right after a trial ended); one behind it hands out a trial id the list holds.

So each checkpoint also writes a snapshot of those files (``study-state-<session>.json``, ``write_snapshot``; the
search algorithms in ``search/run/_tune_state.py`` do it right after Tune's own files). Object stores put it whole
or not at all, and Tune's local storage writes each file whole (``_tune_fs``); one cut short anyway is not used.
Before a study resumes, ``restore_snapshot`` takes the newest whole snapshot: it puts back its files where storage
holds others and removes the state files of later checkpoints whose snapshot never arrived (Tune restores from the
newest name). The study resumes from that checkpoint; its trials continue from their newest checkpoints.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
from pathlib import Path

from . import _storage as storage

SNAPSHOT = "study-state-"  # + session + ".json"
STATE = "experiment_state-"  # Tune's trial list; the other prefixes are its searchers' state files
STATE_FILES = (STATE, "basic-variant-state-", "search_gen_state-", "searcher-state-")
SNAPSHOT_LIMIT = 1 << 30  # bytes: Tune's state of a study with tens of thousands of trials fits


def session_of(name: str) -> str | None:
    """The session (Tune's start time of a run, ``YYYY-MM-DD_HH-MM-SS``: names sort by it) of a state file or
    snapshot; None for other files."""
    for prefix in (*STATE_FILES, SNAPSHOT):
        if name.startswith(prefix) and "." in name:
            return name[len(prefix) :].rsplit(".", 1)[0]
    return None


def write_snapshot(staging: str, session: str) -> None:
    """One file in ``staging`` holding this checkpoint's state files (those of ``session``), byte for byte. Written
    beside the folder and renamed into it: an upload of the folder in progress never lists it half-made."""
    files = {
        name: base64.b64encode(Path(staging, name).read_bytes()).decode()
        for name in sorted(os.listdir(staging))
        if name.startswith(STATE_FILES) and session_of(name) == session
    }
    if STATE + session + ".json" not in files:  # a searcher saved outside a Tune checkpoint has nothing to pair
        return
    fd, tmp = tempfile.mkstemp(dir=Path(staging).parent, prefix=".study-state-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"files": files}, f)
        os.replace(tmp, Path(staging, f"{SNAPSHOT}{session}.json"))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def restore_snapshot(folder: str) -> list[str]:
    """Tune's state files in ``folder`` (local or a URI) as the newest whole snapshot holds them; returns the names
    put back or removed ([] when storage agrees with it, or holds no snapshot: a study from before them)."""
    names = [n for n, is_dir in storage.entries(folder).items() if not is_dir]
    for snapshot in sorted((n for n in names if n.startswith(SNAPSHOT)), reverse=True):
        files = _files(storage.join(folder, snapshot))
        if files is not None:
            break
    else:
        return []
    session = session_of(snapshot)
    changed = []
    for name in names:  # a later checkpoint's files, its snapshot cut short or never uploaded
        later = session_of(name)
        if name.startswith(STATE_FILES) and later is not None and session is not None and later > session:
            storage.remove(storage.join(folder, name))
            changed.append(name)
    for name, data in files.items():
        target = storage.join(folder, name)
        if name not in names or _read(target) != data:
            storage.write_bytes(target, data)
            changed.append(name)
    return changed


def _files(location: str) -> dict[str, bytes] | None:
    """A snapshot's files, or None when it is not whole (cut short on a file system that writes in place)."""
    try:
        return {
            name: base64.b64decode(text, validate=True) for name, text in json.loads(_read(location))["files"].items()
        }
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        return None


def _read(location: str) -> bytes:
    if storage.is_uri(location):
        return storage.read_bytes(location, "Ray Tune state file", SNAPSHOT_LIMIT)
    return Path(location).read_bytes()
