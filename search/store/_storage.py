"""Where a command's files live: a local folder (a shared filesystem such as NFS is one) or a URI
(``s3://bucket/prefix``, ``gs://bucket/prefix``).

URIs are reached through ``pyarrow.fs``, as Ray Tune reaches its own ``storage_path``, so both see the
same objects with the same settings: S3 reads the standard environment (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``), never a spec.

A command that writes to a URI works in a local staging folder and uploads each file once it is
complete (``Folder.publish``), so the remote only ever holds whole files; a command that reads one
downloads what it needs (``local_copy``) and goes on as with a local folder.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..spec._schema import SpecError
from ._atomic import write_atomic

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# Query parameters of pyarrow's S3 URIs that carry secrets: they belong in the environment.
_SECRET_PARAMS = ("access_key", "secret_key", "session_token")


def is_uri(location: str | Path) -> bool:
    return isinstance(location, str) and bool(_URI.match(location))


def join(location: str | Path, *parts: str) -> str:
    """``location/part/…``: a URI stays a URI, a local path a local path."""
    if is_uri(location):
        return "/".join([str(location).rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(location, *parts))


def parent(location: str | Path) -> str:
    if is_uri(location):
        head, _, _ = str(location).rstrip("/").rpartition("/")
        return head
    return str(Path(location).parent)


def name(location: str | Path) -> str:
    return str(location).rstrip("/").rpartition("/")[2] if is_uri(location) else Path(location).name


GCS_EMULATOR = "STORAGE_EMULATOR_HOST"  # Google's client libraries' variable for a GCS-compatible endpoint


def _fs(uri: str) -> tuple[Any, str]:
    """pyarrow's file system for ``uri`` and the path in it. ``gs://`` with ``STORAGE_EMULATOR_HOST`` set
    (``http://host:port``, as Google's client libraries read it) goes to that endpoint without credentials:
    pyarrow's own GCS client does not read the variable."""
    import pyarrow.fs

    emulator = os.environ.get(GCS_EMULATOR)
    if uri.startswith("gs://") and emulator:
        parts = urlsplit(emulator if "://" in emulator else f"http://{emulator}")
        fs = pyarrow.fs.GcsFileSystem(anonymous=True, endpoint_override=parts.netloc, scheme=parts.scheme)
        return fs, uri[len("gs://") :].rstrip("/")
    return pyarrow.fs.FileSystem.from_uri(uri)


def tune_storage(location: str) -> tuple[str, Any]:
    """``(storage_path, storage_filesystem)`` for Ray Tune at ``location``: Tune resolves URIs itself
    (``None``), except a GCS endpoint from ``STORAGE_EMULATOR_HOST``, which needs this module's file system
    and the path in it. Local paths: ``(location, None)`` (the caller picks the local file system)."""
    if location.startswith("gs://") and os.environ.get(GCS_EMULATOR):
        fs, path = _fs(location)
        return path, fs
    return location, None


def _error(exc: BaseException) -> str:
    """pyarrow's message in one line, without the AWS SDK's repetitions."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def check(uri: str) -> str | None:
    """Why ``uri`` cannot hold a study (None when it can): credentials in the URI, an unknown scheme, an
    unreachable endpoint, refused credentials or a missing bucket. Local paths: None (checked as written)."""
    if not is_uri(uri):
        return None
    if _has_secrets(uri):
        return (
            f"{redact(uri)}: credentials do not belong in a spec or on the command line; set them in the "
            f"environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
        )
    try:
        fs, path = _fs(uri)
        bucket = path.split("/", 1)[0]
        from pyarrow.fs import FileType

        if fs.get_file_info(bucket).type == FileType.NotFound:
            return f"{uri}: the bucket {bucket!r} does not exist (create it first)"
        _entries(uri)  # listing is what every command does first: a refused one fails here
    except (OSError, ValueError, NotImplementedError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        return f"{uri}: cannot be used: {_error(exc)}{_endpoint_hint(uri)}"
    return None


def _endpoint_hint(uri: str) -> str:
    if uri.startswith("s3://"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return f" (endpoint {endpoint}, from AWS_ENDPOINT_URL)" if endpoint else " (endpoint: AWS's default)"
    if uri.startswith("gs://") and os.environ.get(GCS_EMULATOR):
        return f" (endpoint {os.environ[GCS_EMULATOR]}, from {GCS_EMULATOR})"
    return ""


def _has_secrets(uri: str) -> bool:
    parts = urlsplit(uri)
    return bool(parts.username or parts.password or any(k in parse_qs(parts.query) for k in _SECRET_PARAMS))


def redact(uri: str) -> str:
    """``uri`` without a user name, password or secret query values: what may be printed."""
    if not _has_secrets(uri):
        return uri
    parts = urlsplit(uri)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2], query="").geturl()


def _entries(uri: str) -> dict[str, bool]:
    from pyarrow.fs import FileSelector, FileType

    fs, path = _fs(uri)
    infos = fs.get_file_info(FileSelector(path, recursive=False, allow_not_found=True))
    return {Path(i.path).name: i.type == FileType.Directory for i in infos}


def entries(location: str | Path) -> dict[str, bool]:
    """What a folder holds, ``{name: is a folder}``; {} when it does not exist."""
    if is_uri(location):
        return _wrapped(location, "list", lambda: _entries(str(location)))
    folder = Path(location)
    if not folder.is_dir():
        return {}
    return {e.name: e.is_dir() for e in os.scandir(folder)}


def is_file(location: str | Path) -> bool:
    if not is_uri(location):
        return Path(location).is_file()
    from pyarrow.fs import FileType

    def info() -> bool:
        fs, path = _fs(str(location))
        return fs.get_file_info(path).type == FileType.File

    return _wrapped(location, "read", info)


def read_bytes(uri: str, kind: str, limit: int) -> bytes:
    """The file at ``uri`` (at most ``limit`` bytes, else one line saying so), for ``_files``."""
    from pyarrow.fs import FileType

    def read() -> bytes:
        fs, path = _fs(uri)
        info = fs.get_file_info(path)
        if info.type == FileType.Directory:
            raise SpecError(uri, "", f"is a directory, not a {kind}")
        if info.type != FileType.File:
            raise SpecError(uri, "", f"no such {kind}")
        if info.size is not None and info.size > limit:
            raise SpecError(uri, "", f"is {info.size:,} bytes; a {kind} is at most {limit:,}")
        with fs.open_input_stream(path) as f:
            return f.read()

    return _wrapped(uri, "read", read)


def remove(location: str | Path) -> None:
    """Delete a file, or a folder and everything in it."""
    if not is_uri(location):
        if Path(location).is_dir():
            shutil.rmtree(location)
        else:
            Path(location).unlink()
        return

    def delete() -> None:
        from pyarrow.fs import FileType

        fs, path = _fs(str(location))
        if fs.get_file_info(path).type == FileType.File:
            fs.delete_file(path)
        else:
            fs.delete_dir(path)

    _wrapped(location, "delete", delete)


def write_bytes(location: str | Path, data: bytes) -> None:
    """Replace the file at ``location`` with ``data``, whole: a local file through a temporary one renamed
    over it, an object in one PUT."""
    if not is_uri(location):
        write_atomic(location, data)
        return

    def put() -> None:
        fs, path = _fs(str(location))
        with fs.open_output_stream(path) as f:
            f.write(data)

    _wrapped(location, "write", put)


def upload(local: Path, uri: str) -> None:
    """Copy a finished file or folder to ``uri`` (replacing what is there)."""
    import pyarrow.fs

    def put() -> None:
        fs, path = _fs(uri)  # this module's file system for the URI (a GCS emulator's too), not pyarrow's guess
        pyarrow.fs.copy_files(
            str(local), path, source_filesystem=pyarrow.fs.LocalFileSystem(), destination_filesystem=fs
        )

    _wrapped(uri, "write", put)


def download(uri: str, dest: Path, keep: Callable[[str], bool] = lambda rel: True) -> Path:
    """Copy the file or folder at ``uri`` to ``dest``; of a folder only the files whose relative path
    ``keep`` accepts (a study's results, not Tune's checkpoints). Returns ``dest``."""
    from pyarrow.fs import FileSelector, FileType

    def fetch() -> None:
        fs, path = _fs(uri)
        top = fs.get_file_info(path)
        if top.type == FileType.File:
            files = [(top.path, dest)]
        elif top.type == FileType.Directory:
            infos = fs.get_file_info(FileSelector(path, recursive=True))
            files = [
                (i.path, dest / rel)
                for i in infos
                if i.type == FileType.File
                for rel in [os.path.relpath(i.path, path)]
                if keep(rel)
            ]
            dest.mkdir(parents=True, exist_ok=True)
        else:
            return
        for src, target in files:
            target.parent.mkdir(parents=True, exist_ok=True)
            with fs.open_input_stream(src) as f, open(target, "wb") as out:
                shutil.copyfileobj(f, out)

    _wrapped(uri, "read", fetch)
    return dest


def _wrapped(location: str | Path, what: str, op: Callable[[], Any]) -> Any:
    try:
        return op()
    except (OSError, ValueError) as exc:
        # A storage failure is the user's setting (endpoint, credentials, bucket): one line, exit 2.
        raise SpecError(
            redact(str(location)), "", f"cannot {what}: {_error(exc)}{_endpoint_hint(str(location))}"
        ) from None


_STAGING: list[Path] = []


def _remove_staging() -> None:
    for p in _STAGING:
        shutil.rmtree(p, ignore_errors=True)


def staging(prefix: str = "tune-run-") -> Path:
    """A fresh local folder for this process's copies of remote files, removed when it exits."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if not _STAGING:
        atexit.register(_remove_staging)
    _STAGING.append(path)
    return path


_COPIES: dict[str, str] = {}  # downloaded copy (local path) -> the URI it holds


def local_copy(location: str | Path, keep: Callable[[str], bool] = lambda rel: True) -> Path:
    """A local path holding what ``location`` holds: the path itself, or a downloaded copy of a URI."""
    if not is_uri(location):
        return Path(location)
    copy = download(str(location), staging() / name(location), keep)
    for local in {str(copy), str(copy.resolve())}:
        _COPIES[local] = redact(str(location))
    return copy


def as_given(text: str) -> str:
    """``text`` (a message naming files) with each path inside a downloaded copy named by its URI: a user
    gave the URI and never sees the temporary copy."""
    for local, uri in sorted(_COPIES.items(), key=lambda kv: -len(kv[0])):  # a resolved path may be longer
        text = text.replace(local, uri)  # each copy is in its own fresh temporary folder: no other path shares it
    return text


@dataclass(frozen=True)
class Folder:
    """A folder a command writes. Files are written in ``local``; with ``remote`` (a URI) each one is
    uploaded there by ``publish`` once it is complete."""

    local: Path
    remote: str | None = None

    @property
    def location(self) -> str:
        """Where the files are for a user: the URI, or the local folder."""
        return self.remote or str(self.local)

    def publish(self, *names: str) -> None:
        """Upload the finished files or folders ``names`` (relative to the folder); local: nothing to do."""
        if self.remote is None:
            return
        for n in names:
            if (self.local / n).exists():
                upload(self.local / n, join(self.remote, n))


def folder(location: str | Path) -> Folder:
    """The folder to write ``location`` through: itself when local, else a staging folder for the URI."""
    if not is_uri(location):
        return Folder(Path(location))
    local = staging() / name(location)
    local.mkdir()
    return Folder(local, str(location))
