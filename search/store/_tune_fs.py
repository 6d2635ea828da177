"""Tune's storage on a local (or shared, mounted) path, with every file it writes appearing whole.

Ray Tune (2.60) uploads its experiment state (``experiment_state-*.json``, the searcher's state, ``tuner.pkl``)
and each trial's checkpoint through ``pyarrow.fs.copy_files``, which writes the destination in place: a disk that
fills up during one of those writes leaves a file cut short, and a cut experiment state makes Tune's restore
start a different study. Given this file system as ``storage_filesystem``, Tune writes each file to a temporary
name in the same folder and renames it over the old one once it is complete (``os.replace``, atomic on POSIX),
so a full disk leaves the previous state and the last complete checkpoint, which ``--resume`` continues from.
Everything else is pyarrow's own ``LocalFileSystem``. (Object stores need none of this: a PUT is whole.)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from ._atomic import UMASK


class _WholeFile:
    """A writable file that becomes ``path`` on close, and only if every write succeeded."""

    def __init__(self, path: str) -> None:
        self.path = path
        fd, self.tmp = tempfile.mkstemp(
            dir=os.path.dirname(path) or ".", prefix=f".{os.path.basename(path)}.", suffix=".tmp"
        )
        os.fchmod(fd, 0o666 & ~UMASK)  # as a plain open() would make it
        self.file = os.fdopen(fd, "wb")
        self.failed = False
        self.closed = False

    def write(self, data: Any) -> int:
        try:
            return self.file.write(data)
        except BaseException:
            self._discard()
            raise

    def flush(self) -> None:
        if not self.failed:
            self.file.flush()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self.file.tell()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.failed:
            return
        try:
            self.file.flush()
            os.fsync(self.file.fileno())  # on disk before the rename: a crash leaves the old file
            self.file.close()
            os.replace(self.tmp, self.path)
        except BaseException:
            self._discard()
            raise

    def _discard(self) -> None:
        self.failed = True
        with contextlib.suppress(OSError):  # cleaning up must not hide why the write failed
            self.file.close()
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)


class WholeFileHandler(pafs.FileSystemHandler):
    """pyarrow's LocalFileSystem, except that output streams write a temporary file renamed on close."""

    def __init__(self) -> None:
        self.fs = pafs.LocalFileSystem()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WholeFileHandler)

    def __reduce__(self) -> tuple[Any, ...]:  # trial processes get it pickled with Tune's storage context
        return (WholeFileHandler, ())

    def get_type_name(self) -> str:
        return "whole-file-local"

    def normalize_path(self, path: str) -> str:
        return self.fs.normalize_path(path)

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return self.fs.get_file_info(paths)

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return self.fs.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        self.fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self.fs.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise OSError("refusing to delete the contents of / through Tune's storage")

    def delete_file(self, path: str) -> None:
        self.fs.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self.fs.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        with self.fs.open_input_stream(src) as f, self.open_output_stream(dest, None) as out:
            while chunk := f.read(1 << 24):
                out.write(chunk)

    def open_input_stream(self, path: str) -> Any:
        return self.fs.open_input_stream(path)

    def open_input_file(self, path: str) -> Any:
        return self.fs.open_input_file(path)

    def open_output_stream(self, path: str, metadata: Any) -> Any:
        return pa.PythonFile(_WholeFile(path), mode="w")

    def open_append_stream(self, path: str, metadata: Any) -> Any:
        return self.fs.open_append_stream(path)


def whole_file_fs() -> pafs.FileSystem:
    return pafs.PyFileSystem(WholeFileHandler())
