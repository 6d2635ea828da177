"""Reading the files users hand us (specs, best.yaml, study.json, metrics.json; local or at a storage URI)
without ever a traceback.

A damaged file — not UTF-8, binary, empty, nested thousands of levels deep, an alias bomb, a YAML tag
naming a Python object — ends as one ``SpecError`` line naming the file and what is wrong with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ..store._storage import is_uri, read_bytes
from ._schema import SpecError

MAX_BYTES = 10 * 2**20  # specs and result files are small; a bigger one is the wrong file
MAX_DEPTH = 64  # a spec nests 4 levels; a branch option a few more
MAX_NODES = 200_000  # after alias expansion: a billion-laughs bomb expands to ~10^9


def read_text(path: str | Path, kind: str = "file") -> str:
    p, name = Path(path), str(path)
    if is_uri(name):
        data = read_bytes(name, kind, MAX_BYTES)
    else:
        data = _local_bytes(p, kind)
    if len(data) > MAX_BYTES:
        raise SpecError(name, "", f"is {len(data):,} bytes; a {kind} is at most {MAX_BYTES:,}")
    if b"\0" in data:
        raise SpecError(name, "", f"is a binary file, not a {kind}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(name, "", f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None


def _local_bytes(p: Path, kind: str) -> bytes:
    name = str(p)
    if p.is_dir():
        raise SpecError(name, "", f"is a directory, not a {kind}")
    if not p.exists():
        raise SpecError(name, "", f"no such {kind}")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise SpecError(name, "", f"cannot be read: {exc.strerror or exc}") from None
    return data


def _expanded_size(node: yaml.Node, depth: int, memo: dict[int, int], file: str) -> int:
    """Nodes the document has once aliases are expanded; refuses deep nesting and recursive aliases."""
    if depth > MAX_DEPTH:
        raise SpecError(file, "", f"is nested more than {MAX_DEPTH} levels deep (or an alias refers to itself)")
    if id(node) in memo:
        return memo[id(node)]
    if isinstance(node, yaml.MappingNode):
        n = 1 + sum(
            _expanded_size(k, depth + 1, memo, file) + _expanded_size(v, depth + 1, memo, file) for k, v in node.value
        )
    elif isinstance(node, yaml.SequenceNode):
        n = 1 + sum(_expanded_size(v, depth + 1, memo, file) for v in node.value)
    else:
        n = 1
    if n > MAX_NODES:
        raise SpecError(file, "", f"expands to more than {MAX_NODES:,} values through its aliases (an alias bomb?)")
    memo[id(node)] = n
    return n


def _yaml_error(file: str, exc: yaml.YAMLError) -> SpecError:
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if "constructor for the tag" in problem:
        tag = problem.split("tag", 1)[1].strip(" '")
        return SpecError(
            file, "", f"{where}the YAML tag {tag!r} is not allowed: specs hold plain values, never Python objects"
        )
    return SpecError(file, "", f"{where}invalid YAML: {problem}")


def read_yaml(path: str | Path, kind: str = "spec file") -> Any:
    """The YAML document in ``path`` as plain data (None when it is empty)."""
    file = str(path)
    text = read_text(path, kind)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()  # composed, not yet built: its size is checked first
        if node is None:
            return None
        _expanded_size(node, 0, {}, file)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise _yaml_error(file, exc) from None
    except RecursionError:
        raise SpecError(file, "", f"is nested more than {MAX_DEPTH} levels deep") from None
    finally:
        loader.dispose()


def read_json(path: str | Path, kind: str = "result file") -> dict[str, Any]:
    """A JSON object written by a study (study.json, metrics.json, meta.json)."""
    file = str(path)
    text = read_text(path, kind)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(file, "", f"line {exc.lineno} column {exc.colno}: invalid JSON: {exc.msg}") from None
    except RecursionError:
        raise SpecError(file, "", "is nested too deeply to be a result file") from None
    if not isinstance(data, dict):
        raise SpecError(file, "", f"expected a JSON object, got {type(data).__name__}")
    return data


def dump_spec(spec: dict[str, Any]) -> str:
    """A spec as the YAML tune-run writes (spec.yaml, best.yaml, --dry-run): keys in the spec's order."""
    return yaml.safe_dump(spec, sort_keys=False, default_flow_style=None, width=100)
