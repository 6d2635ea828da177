"""Real servers for the storage and tracking tests, started once per test session: an S3 API (moto's
server mode), PostgreSQL (Debian's binaries, as an unprivileged user) and an MLflow tracking server on
both. Import the fixtures into a test module: ``from tests.servers import s3, mlflow_server``.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

BUCKET = "bucket"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3:
    endpoint: str
    env: dict[str, str]  # the process environment with the standard AWS settings of this server

    def client(self):  # noqa: ANN201
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


@pytest.fixture(scope="session")
def s3() -> Iterator[S3]:
    """A local S3 API with the bucket ``bucket``; ``env`` is what a user exports to reach it."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS" and not k.startswith("AWS_")},
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    store = S3(endpoint, env)
    store.client().create_bucket(Bucket=BUCKET)
    yield store
    server.stop()


def postgres_bin() -> Path:
    """Debian's PostgreSQL binaries; their absence fails (CI installs them), never skips."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb") or ""]
    if not found[-1]:
        pytest.fail(
            "PostgreSQL not found (no /usr/lib/postgresql/*/bin/initdb): install Debian's postgresql "
            "package, as .ci/run does"
        )
    return Path(found[-1]).parent


def _as_owner(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root (CI runs as root): there it runs as the unprivileged 'nobody'.
    return ["runuser", "-u", "nobody", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A PostgreSQL server on a unix socket in a temp folder, with a database ``mlflow``; its SQLAlchemy URI."""
    bin_dir = postgres_bin()
    root = Path(tempfile.mkdtemp(prefix="tune-run-pg-"))  # not under pytest's 0700 root-only folders
    if os.geteuid() == 0:
        shutil.chown(root, "nobody")
    data, port = root / "data", free_port()
    run = lambda *cmd: subprocess.run(
        _as_owner([str(bin_dir / cmd[0]), *cmd[1:]]),
        check=True,  # noqa: E731
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        run(
            "pg_ctl",
            "-D",
            str(data),
            "-l",
            str(root / "log"),
            "-w",
            "-t",
            "120",
            "start",
            "-o",
            f"-p {port} -k {root} -c listen_addresses='' -c fsync=off",
        )
        run("createdb", "-h", str(root), "-p", str(port), "-U", "postgres", "mlflow")
    except subprocess.CalledProcessError as err:
        log = (root / "log").read_text() if (root / "log").exists() else ""
        pytest.fail(f"PostgreSQL did not start: {err.stderr or err.stdout}{log[-2000:]}")
    # psycopg2 named: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg (3), which the extras do not install.
    yield f"postgresql+psycopg2://postgres@/mlflow?host={root}&port={port}"
    subprocess.run(
        _as_owner([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
        capture_output=True,
        timeout=120,
    )
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def mlflow_server(s3: S3, postgres: str) -> Iterator[str]:
    """``mlflow server`` on PostgreSQL with its artifacts in ``s3://bucket/mlflow``; its tracking URI."""
    port = free_port()
    log = open(Path(tempfile.mkdtemp(prefix="tune-run-mlflow-")) / "server.log", "w+")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            postgres,
            "--artifacts-destination",
            f"s3://{BUCKET}/mlflow",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=s3.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300  # its first start creates the schema (a loaded machine: slow)
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=5):
                break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                log.seek(0)
                proc.kill()
                pytest.fail(f"mlflow server did not start:\n{log.read()[-3000:]}")
            time.sleep(1)
    yield uri
    os.killpg(proc.pid, 15)
    proc.wait(timeout=60)
    log.close()


@dataclass
class GCS:
    endpoint: str
    env: dict[str, str]  # the process environment with STORAGE_EMULATOR_HOST pointing at this server

    def keys(self, prefix: str = "") -> list[str]:
        import pyarrow.fs as pafs

        host = self.endpoint.removeprefix("http://")
        fs = pafs.GcsFileSystem(anonymous=True, endpoint_override=host, scheme="http")
        infos = fs.get_file_info(
            pafs.FileSelector(f"{BUCKET}/{prefix}".rstrip("/"), recursive=True, allow_not_found=True)
        )
        return [i.path.removeprefix(f"{BUCKET}/") for i in infos if i.type == pafs.FileType.File]


@pytest.fixture(scope="session")
def gcs() -> Iterator[GCS]:
    """A local GCS JSON API (gcp-storage-emulator, in memory) with the bucket ``bucket``."""
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "STORAGE_EMULATOR_HOST")},
        "STORAGE_EMULATOR_HOST": endpoint,
    }
    yield GCS(endpoint, env)
    server.stop()
