"""Shared by the benchmark scripts: arguments, machine facts, and the JSON result line."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
from importlib import metadata
from typing import Any


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CI-sized run: checks the script works, not the figure")
    return p


def machine() -> dict[str, Any]:
    import torch

    dev = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"cpu ({platform.processor() or platform.machine()})"
    )
    import os

    return {
        "device": dev,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "ray": _version("ray"),
        "date": dt.datetime.now(dt.timezone.utc).date().isoformat(),
    }


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def emit(name: str, result: dict[str, Any], quick: bool) -> None:
    """The last line of every benchmark: one JSON object with a ``ratio`` field."""
    print(json.dumps({"benchmark": name, "quick": quick, **result, "machine": machine()}))
