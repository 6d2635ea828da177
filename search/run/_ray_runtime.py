"""Start or join Ray (the dashboard on 127.0.0.1, one line when a cluster cannot be joined), and fit what a
study's trials ask for to the cluster it got."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from ..spec._schema import SpecError
from ..store._atomic import HideFullDiskLogs, HideSnapshotRaceLogs
from ._console import dashboard_line, joined_dashboard, quiet_logs
from ._ray_oom import trials_survive_memory_kills


def init_ray(address: str | None, log: Any, verbose: bool = False, file: str = "") -> str:
    """Start (or join) Ray with the dashboard on 127.0.0.1; returns the dashboard URL. A cluster that cannot be
    joined is one line naming ``file`` and the address (SpecError).

    Workers' own output (Ray's per-checkpoint lines, library warnings) reaches the console only with
    ``verbose``; the console callback shows what trials report, each warning once.
    """
    # Per-epoch checkpoints are the design (pause/resume, PBT); Ray's warning about them is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray

    quiet_logs(verbose)
    trials_survive_memory_kills()
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not address:
        os.environ.pop("RAY_ADDRESS", None)  # an empty value would reach Ray as a malformed address
    # "local", not None: Ray's None joins whatever cluster `ray start` last left on this host
    # (/tmp/ray/ray_current_cluster), and the README promises a fresh one without --address/RAY_ADDRESS.
    if address:
        _check_answers(address, file)
    try:
        ctx = ray.init(
            address=address or "local",
            include_dashboard=dashboard_wanted(),
            dashboard_host="127.0.0.1",
            ignore_reinit_error=True,
            log_to_driver=verbose,
            configure_logging=True,
            logging_level=logging.WARNING,
        )
    except ConnectionError as exc:
        if not address:
            raise
        # Ray sends its token only to a cluster it found itself: a joined one that asks for it refuses the driver.
        raise SpecError(
            file,
            "--address",
            f"cannot join the Ray cluster at {address} ({exc}): check the address "
            f"(the head's HOST:PORT), and for a cluster that asks for a token set "
            f"RAY_AUTH_MODE=token with its token (`ray get-auth-token` on the head) in "
            f"RAY_AUTH_TOKEN or ~/.ray/auth_token",
        ) from None
    if not verbose:  # Ray logs each write a full disk refused, with a traceback: the study's last line says it
        for handler in logging.getLogger("ray").handlers:
            handler.addFilter(HideFullDiskLogs())
            handler.addFilter(HideSnapshotRaceLogs())
    url = getattr(ctx, "dashboard_url", None)
    if url and address:  # a joined cluster's own dashboard, at an address this machine can use
        url = joined_dashboard(url, address)
    # Off as set, never over a dashboard that runs (a Ray this process had already started keeps its own).
    off = None if url or address or dashboard_wanted() else f"{DASHBOARD_ENV}=0"
    dashboard = f"http://{url}" if url else f"off ({off})" if off else "(dashboard not running)"  # study.json's
    log(dashboard_line(dashboard if url else None, joined=bool(address), off=off))
    return dashboard


DASHBOARD_ENV = "TUNE_RUN_DASHBOARD"


def dashboard_wanted() -> bool:
    """Whether a Ray this command starts gets its dashboard: yes unless TUNE_RUN_DASHBOARD=0 (scripted runs and
    CI, where nobody watches it: it costs ~3.6 CPU-seconds a start, ~11 % of a small study's, measured on 2 cores).
    A joined cluster keeps whatever dashboard its head has."""
    return os.environ.get(DASHBOARD_ENV, "1").strip() != "0"


def _check_answers(address: str, file: str, timeout: float = 5.0) -> None:
    """A HOST:PORT nothing answers at is one line within seconds (Ray itself retries it for many minutes)."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():  # auto, local, ray://: Ray's own rules
        return
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise SpecError(
            file,
            "--address",
            f"no Ray cluster answers at {address} ({exc.strerror or exc}); give the "
            f"head's HOST:PORT (--address or RAY_ADDRESS), or neither to start "
            f"a local Ray",
        ) from None


def fit_to_cluster(spec: dict[str, Any], paths: list[str], file: str, log: Any) -> None:
    """Check what the trials need of the cluster Ray joined: ``paths`` (folders every trial reads) visible on
    every node; a request that no node type of an autoscaling cluster can hold refused; else, on a cluster
    without a node-type list, the request fitted to what it has."""
    import ray

    from ._cluster import check_paths_on_nodes, read_node_types, refuse_unsatisfiable

    check_paths_on_nodes(paths, file)
    types = read_node_types()
    if types is None:
        _fit_resources(spec, ray.cluster_resources(), log)
    else:  # the autoscaler adds nodes a request fits on: only one no node type holds would wait forever
        refuse_unsatisfiable(spec["resources"], types, file)


def _fit_resources(spec: dict[str, Any], cluster: dict[str, float], log: Any) -> None:
    """Ask for no more than the cluster has: a trial asking for a missing GPU would wait forever."""
    res = spec["resources"]
    if res["gpu"] > 0 and cluster.get("GPU", 0) == 0:
        log(f"warning: resources.gpu={res['gpu']} but the cluster has no GPU: trials run on CPU")
        res["gpu"] = 0.0
    cpus = cluster.get("CPU", 1)
    if res["cpu"] > cpus:
        log(f"warning: resources.cpu={res['cpu']} but the cluster has {cpus:g} CPUs: using {cpus:g}")
        res["cpu"] = float(cpus)
