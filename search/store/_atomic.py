"""Result files written whole or not at all, and what a full disk looks like.

Every file the driver writes (``study.json``, ``trials.csv``, ``best.yaml``, ``spec.yaml``, the final
``metrics.json``, comparison reports) goes through ``write_atomic``: a temporary file in the same folder, then
``os.replace``. A disk that fills up mid-write leaves the previous version or no file, never a truncated one.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import tempfile
from pathlib import Path

EXIT_FAULT = 1  # the exit status of a command its storage stopped: a fault of the machine (2 is for bad input)

# Errors that mean "the output storage cannot take more", whatever the write: a full disk, a quota, a
# file-size limit (RLIMIT_FSIZE, or the file system's own).
FULL = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (file system or ulimit -f limit)",
}
# The same, as they read in an error's text (a trial's error file, a pyarrow message).
_FULL_TEXT = (
    "[errno 28]",
    "[errno 27]",
    "[errno 122]",
    "no space left on device",
    "disk quota exceeded",
    "file too large",
)


UMASK = os.umask(0)
os.umask(UMASK)  # read once: umask has no getter


class StorageFull(Exception):
    """A result could not be written: ``path`` is on storage that is full (or over a size limit)."""

    def __init__(self, path: str | Path, reason: str, started: bool = True) -> None:
        super().__init__(f"{path}: {reason}")
        # started: False when it stopped a study before Tune ran (no study to --resume: run it again)
        self.path, self.reason, self.started = str(path), reason, started


def full_reason(exc: BaseException) -> str | None:
    """What ``exc`` says about the storage when it is a full-disk error (None otherwise)."""
    if isinstance(exc, OSError) and exc.errno in FULL:
        return FULL[exc.errno]
    return text_reason(str(exc))


def text_reason(text: str) -> str | None:
    """The full-disk reason an error's text names (a trial's error, read back from its file), or None."""
    low = text.lower()
    if not any(s in low for s in _FULL_TEXT):
        return None
    return next((r for e, r in FULL.items() if f"[errno {e}]" in low or r.split(" (")[0] in low), FULL[errno.ENOSPC])


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` whole, or leave what was there; a full disk is ``StorageFull(path)``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~UMASK)  # mkstemp's 0600 would hide results from the rest of a team's cluster
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename: a crash leaves the old file, not an empty new one
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):  # cleaning up must not hide why the write failed
            os.unlink(tmp)
        reason = full_reason(exc) if isinstance(exc, OSError) else None
        if reason:
            raise StorageFull(path, reason) from None
        raise


def probe_full(folder: str | Path) -> str | None:
    """Why ``folder`` cannot take a small file (its storage is full), or None when it can (or is not local)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    try:
        write_atomic(folder / ".space-probe", b"\0" * 65536)
    except StorageFull as full:
        return full.reason
    except OSError:
        return None
    with contextlib.suppress(OSError):  # cleaning up must not hide why the write failed
        os.unlink(folder / ".space-probe")
    return None


class HideFullDiskLogs(logging.Filter):
    """Drops Ray's log records about writes that failed on a full disk (each with a traceback, every sync
    period): the study ends with one line that says so, naming the file."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and full_reason(exc):
            return False
        return text_reason(record.getMessage()) is None


class HideSnapshotRaceLogs(logging.Filter):
    """Drops Ray's error that uploading a snapshot of Tune's state found a file gone: Tune's searcher writes
    its state as a ``-tmp-`` file and renames it while the previous snapshot's upload lists the folder (a
    race inside Tune). Nothing is lost: each snapshot uploads the whole state again, and the last one runs
    after the searcher's last save."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (
            isinstance(exc, FileNotFoundError)
            and "-tmp-" in str(exc)
            and record.getMessage().startswith("Saving experiment state to storage")
        )
