"""What a study asks of a multi-node Ray cluster, checked before any trial runs.

- Folders every trial reads (a streamed set's ``data.root``) must be visible on every alive node: a tiny
  task pinned to each node lists them, and the first node that cannot is named in one line.
- On a cluster whose autoscaler lists its node types, a trial request no node type can ever hold is a
  spec error (it would wait forever); without such a list the request is fitted to the cluster as it is.
"""

from __future__ import annotations

import os
from typing import Any

from ..spec._schema import SpecError

# Ray's resource names for the spec's resources keys.
RESOURCE_NAMES = {"cpu": "CPU", "gpu": "GPU"}
PROBE_TIMEOUT_S = 120.0  # a node that cannot even run a task in this time is named too


def unreadable(paths: list[str]) -> list[str]:
    """Of ``paths``, those this process cannot list as folders (runs on each node)."""
    missing = []
    for p in paths:
        try:
            os.listdir(p)
        except OSError:
            missing.append(p)
    return missing


def alive_nodes() -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def node_label(node: dict[str, Any]) -> str:
    return f"{node.get('NodeManagerAddress', '?')} (node id {node['NodeID'][:12]})"


def unseen_on_nodes(paths: list[str], nodes: list[dict[str, Any]]) -> list[tuple[dict[str, Any], list[str]]]:
    """(node, paths it cannot list) for each of ``nodes`` that misses any: one zero-CPU task pinned per node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0, max_retries=0)(unreadable)
    refs = [
        probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(paths)
        for n in nodes
    ]
    out = []
    for node, ref in zip(nodes, refs):
        try:
            missing = ray.get(ref, timeout=PROBE_TIMEOUT_S)
        except (ray.exceptions.RayError, TimeoutError) as exc:  # the node died or never ran the probe
            missing = [f"{paths[0]} (the check could not run there: {type(exc).__name__})"]
        if missing:
            out.append((node, missing))
    return out


def check_paths_on_nodes(paths: list[str], file: str, key: str = "data.root") -> None:
    """Every alive node of a multi-node cluster sees ``paths``; else a SpecError naming the first node that
    does not. A single node is the driver's own machine, where the data was just read: nothing to check."""
    if not paths:
        return
    nodes = alive_nodes()
    if len(nodes) <= 1:
        return
    blind = unseen_on_nodes(paths, nodes)
    if blind:
        node, missing = blind[0]
        more = f" (and {len(blind) - 1} more nodes)" if len(blind) > 1 else ""
        raise SpecError(
            file,
            key,
            f"{missing[0]} is not visible on node {node_label(node)}{more}: every node "
            f"reads a streamed set; put it on storage all nodes mount (NFS), or hold it "
            f"in memory (data.storage: memory)",
        )


# --------------------------------------------------------------------------- autoscaler node types


def read_node_types() -> list[dict[str, Any]] | None:
    """The node types the cluster's autoscaler reported to the GCS (KubeRay, ``ray up``; Ray keeps its
    ``ClusterConfig`` in the GCS's key-value store), or None when no autoscaler has reported any."""
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # noqa: BLE001  (a private API: without it the cluster is taken as it is)
        return None
    return node_types(config)


def node_types(config: Any) -> list[dict[str, Any]] | None:
    """Ray's ``autoscaler_pb2.ClusterConfig`` as [{"name", "resources", "min_count", "max_count"}]."""
    if config is None or not config.node_group_configs:
        return None
    return [
        {"name": g.name, "resources": dict(g.resources), "min_count": int(g.min_count), "max_count": int(g.max_count)}
        for g in config.node_group_configs
    ]


def node_type_limits(node_types: list[dict[str, Any]] | None) -> dict[str, float] | None:
    """The most of each resource one node can ever offer, over node types that may have nodes
    (``max_count`` 0 has none; -1 is unbounded); None without a node-type list."""
    if not node_types:
        return None
    limits: dict[str, float] = {}
    for t in node_types:
        if t["max_count"] == 0:
            continue
        for name, amount in t["resources"].items():
            limits[name] = max(limits.get(name, 0.0), float(amount))
    return limits


def unsatisfiable(resources: dict[str, Any], types: list[dict[str, Any]]) -> tuple[str, str] | None:
    """(key, message) when no node type of ``types`` holds one trial's request on one node, else None."""
    want = {name: float(resources.get(key) or 0) for key, name in RESOURCE_NAMES.items()}
    usable = [t for t in types if t["max_count"] != 0]
    if any(all(v <= float(t["resources"].get(n, 0)) for n, v in want.items()) for t in usable):
        return None
    limits = node_type_limits(usable) or {}
    for key, name in RESOURCE_NAMES.items():
        most = limits.get(name, 0.0)
        if want[name] > most:
            unit = name if most == 1 else f"{name}s"
            return (
                f"resources.{key}",
                f"{key}={want[name]:g} but no node type of this cluster offers more than {most:g} {unit}",
            )
    asked = ", ".join(f"{key}={want[name]:g}" for key, name in RESOURCE_NAMES.items())
    offered = "; ".join(
        f"{t['name']}: " + ", ".join(f"{float(t['resources'].get(n, 0)):g} {n}" for n in RESOURCE_NAMES.values())
        for t in usable
    )
    return ("resources", f"{asked} on one node, but no node type of this cluster offers that ({offered})")


def refuse_unsatisfiable(resources: dict[str, Any], types: list[dict[str, Any]], file: str) -> None:
    problem = unsatisfiable(resources, types)
    if problem:
        raise SpecError(file, *problem)
