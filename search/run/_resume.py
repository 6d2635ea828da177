"""Whether a study may be resumed: the spec it started with, and Tune's own record of it whole."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ..spec._files import read_json, read_text
from ..spec._keys import spec_differences
from ..spec._schema import SpecError
from ..store import _storage as storage
from ..store._paths import STUDY_FILE
from ..store._tune_snapshot import restore_snapshot


def check_resumable(file: str, state_file: str, spec: dict[str, Any], log: Callable[[str], None] = print) -> None:
    """A study resumes with the spec it started with: any change from the file or --set is refused, named."""
    if not storage.is_file(state_file):
        raise SpecError(
            file, "--resume", f"no study to resume at {storage.parent(state_file)} (it has no {STUDY_FILE})"
        )
    stored = read_json(state_file, "study file")
    # Studies recorded before spec_given kept only the spec fitted to the cluster.
    before = stored.get("spec_given") or stored.get("spec")
    if not isinstance(before, dict):
        raise SpecError(str(state_file), "spec", "missing: not a study written by tune-run, cannot resume it")
    now = json.loads(json.dumps(spec, default=str))  # as study.json holds it
    diffs = spec_differences(before, now)
    if diffs and now != stored.get("spec"):  # the study's own spec.yaml (fitted to the cluster) resumes too
        shown = ", ".join(diffs[:5]) + (f" and {len(diffs) - 5} more" if len(diffs) > 5 else "")
        raise SpecError(
            file,
            "--resume",
            f"a study resumes with the spec it started with ({state_file}); "
            f"these keys differ: {shown}. Drop the changes to resume, or start a "
            f"new study (--set experiment.name=…)",
        )
    # Tune's trial list and searcher as one checkpoint left them, not two (a driver killed mid-upload), first:
    # that also replaces a trial list cut short where a whole snapshot holds it.
    put_back = restore_snapshot(storage.parent(state_file))
    if put_back:
        log(
            f"resume: Ray Tune's state is its last whole checkpoint's (the run was stopped while uploading "
            f"a later one): {', '.join(put_back)}"
        )
    _check_tune_state(file, storage.parent(state_file))


def _check_tune_state(file: str, folder: str) -> None:
    """Tune's own record of the study must be whole: Tune (Ray 2.60) rewrites it in place, so a disk that filled
    up during a write could leave it cut short (studies written before ``tune_storage``, or written by Tune
    directly), and Tune would then silently start a new study instead."""
    names = sorted(
        n
        for n, is_dir in storage.entries(folder).items()
        if not is_dir and n.startswith("experiment_state-") and n.endswith(".json")
    )
    if not names:
        return
    newest = storage.join(folder, names[-1])  # what Tune restores from (its names sort by time)
    try:
        json.loads(read_text(newest, "Ray Tune state file"))
    except ValueError as exc:  # JSONDecodeError; read_text's own problems are SpecErrors already
        raise SpecError(
            newest,
            "",
            f"Ray Tune's record of the study is cut short ({exc}; written while the disk "
            f"was full?), so it cannot be resumed; start the study again with "
            f"tune-run {file} --overwrite",
        ) from None
