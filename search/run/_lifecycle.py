"""What a study and its final training share: Ray and the cluster fit, the tracking run, the Tuner with its
callbacks and stoppers, SIGTERM as an interruption, and the provenance every result records."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

from ray.tune import Callback

from .._contract import TrialSide
from ..spec._spec import SpecError
from ..store import _storage as storage
from ..store._atomic import HideFullDiskLogs, HideSnapshotRaceLogs, StorageFull, full_reason, probe_full, text_reason
from ..store._paths import mlflow_uri
from ._console import dashboard_line, joined_dashboard, quiet_logs
from ._ray_oom import trials_survive_memory_kills

PACKAGES = ("torch", "torchvision", "timm", "ray", "mlflow", "optuna", "numpy", "scikit-learn")


def provenance() -> dict[str, Any]:
    """Git commit, package versions and the driver's machine, recorded with every result."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], capture_output=True, text=True, timeout=10, cwd=Path(__file__).resolve().parent
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "git_commit": git("rev-parse", "HEAD") or None,
        "git_dirty": bool(git("status", "--porcelain")),
        "python": sys.version.split()[0],
        "packages": versions,
        "host": platform.node(),
        "platform": platform.platform(),
        "argv": sys.argv,
    }


def check_tracking(spec: dict[str, Any], file: str) -> None:
    """An unusable tracking store is a spec error before Ray starts or any trial runs."""
    if spec["tracking"]["enabled"]:
        from ..store._tracking import check_store

        problem = check_store(mlflow_uri(spec))
        if problem:
            raise SpecError(file, "tracking.mlflow_uri", problem)


def tune_storage(location: str) -> tuple[str, Any]:
    """Tune's ``(storage_path, storage_filesystem)`` at ``location``: on a local or mounted path, a file system
    whose files appear whole (``_tune_fs``: a full disk leaves Tune's last complete state); for a URI, what
    ``_storage`` says (Tune's own from the URI, or a GCS emulator's)."""
    if storage.is_uri(location):
        return storage.tune_storage(location)
    from ..store._tune_fs import whole_file_fs

    return location, whole_file_fs()


def failure_config(spec: dict[str, Any]) -> Any:
    """Tune retries a trial whose process or node died (``RayActorError``, ``WorkerCrashedError``,
    ``NodeDiedError``) up to ``resources.max_failures`` times, from its last checkpoint. What a trial ends
    itself with — infeasible, diverged, oom, a user error — is a result it reports, not an exception, so
    none of those is retried (``trainables/ray_adapter.py``)."""
    from ray import tune

    return tune.FailureConfig(max_failures=int(spec["resources"]["max_failures"]))


class LastStep(Callback):
    """Each trial's status after Tune's last step. An interrupted ``fit()`` returns with some trials still
    running or pending (Tune then stops them, and they read as ended); a finished one, with none."""

    def __init__(self) -> None:
        self.status: dict[str, str] = {}

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.status = {t.trial_id: t.status for t in trials}


def callback(tuner: Any, cls: type) -> Any:
    """The ``cls`` callback the Tuner ran with (None if none): a restored Tuner runs with the callbacks the
    study started with, not those given to it."""
    run_config = getattr(getattr(tuner, "_local_tuner", None), "_run_config", None)
    return next((c for c in getattr(run_config, "callbacks", None) or [] if isinstance(c, cls)), None)


def ended(tuner: Any) -> Callable[[str], bool]:
    """Whether a trial had ended (completed, stopped, failed) when ``tuner.fit()`` returned."""
    last = callback(tuner, LastStep)
    status = last.status if last is not None else {}
    return lambda trial_id: status.get(trial_id, "TERMINATED") in ("TERMINATED", "ERROR")


class StopWhenFull(Callback):
    """A trial that failed on a full disk (its checkpoint or results could not be written) stops the study as
    Ctrl-C does: Tune keeps its unfinished trials for --resume, instead of retrying them into the same full
    disk (``resources.max_failures`` times each) and failing them for good."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.reason: str | None = None

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._check(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._check(trial)

    def _check(self, trial: Any) -> None:
        from ..store._tracking import error_text

        # The trial's error file is on the same disk, so it may be empty: then the disk itself is asked.
        reason = text_reason(error_text(trial)) or probe_full(self.folder)
        if reason and self.reason is None:
            self.reason = reason
            _interrupt_tune()


def new_tuner(out: Path, *args: Any, **kwargs: Any) -> Any:
    """``tune.Tuner(...)``, which writes its own state (tuner.pkl) at once: a full disk there is ``StorageFull``
    naming the study folder, not a traceback."""
    from ray import tune

    try:
        return tune.Tuner(*args, **kwargs)
    except OSError as exc:
        reason = full_reason(exc)
        if reason:
            raise StorageFull(out, reason) from None
        raise


def fit_tuner(tuner: Any, out: Path) -> Any:
    """``tuner.fit()``; when the disk filled up, Tune's own reading of the files it could not write may fail
    after the trials ended: that is ``StorageFull`` naming the study folder, not a traceback."""
    try:
        return tuner.fit()
    except Exception as exc:
        stop = callback(tuner, StopWhenFull)
        if stop is not None and stop.reason:
            raise StorageFull(out, f"{stop.reason} (a trial could not write its checkpoint)") from None
        reason = full_reason(exc) or probe_full(out)
        if reason:
            raise StorageFull(out, reason) from None
        raise


def _interrupt_tune() -> bool:
    """Ask Tune for the graceful stop Ctrl-C gives (its SIGINT handler, installed while ``fit()`` runs);
    False when none is installed."""
    handler = signal.getsignal(signal.SIGINT)
    if not callable(handler) or handler is signal.default_int_handler:
        return False
    handler(signal.SIGINT, None)
    return True


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a job scheduler, ``timeout``) stops a study as Ctrl-C does: Tune ends the trials, saves
    its state for --resume, and returns, so what finished is still written. A second signal of either
    kind ends the process at once, as Tune's own handler does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, previous)
        if not _interrupt_tune():  # Tune's own handler while it runs
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            ignore_reinit_error=True,
            log_to_driver=verbose,
            configure_logging=True,
            logging_level="WARNING",
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
    dashboard = f"http://{url}" if url else "(dashboard not running)"
    log(dashboard_line(dashboard if url else None, joined=bool(address)))
    return dashboard


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


def open_tracking(
    spec: dict[str, Any],
    backend: TrialSide,
    *,
    run_name: str,
    role: str,
    child_role: str,
    max_epochs: int,
    log: Any,
    reopen: str | None = None,
    dataset: dict[str, Any] | None = None,
    child_spec: dict[str, Any] | None = None,
) -> tuple[str | None, list[Any]]:
    """The MLflow parent run for ``spec`` (``reopen``: a resumed one) and the callback mirroring its trials
    (their params: ``child_spec``'s, when they run a shortened copy of ``spec``, ``search.epochs``).

    A new parent nests under ``tracking.parent_run_id`` when set (best.yaml: the study it came from).
    """
    track, exp = spec["tracking"], spec["experiment"]
    if not track["enabled"]:
        return None, []
    from ..store._tracking import MlflowTrials, client_for, flat_params, start_parent, ui_page

    uri = mlflow_uri(spec)
    mlflow_exp = track["mlflow_experiment"] or exp["name"]
    tags = {"study": exp["name"], **backend.tags(spec)}
    parent = start_parent(uri, mlflow_exp, run_name, {**tags, "role": role}, flat_params(spec), reopen, dataset)
    if track["parent_run_id"] and not reopen:
        client_for(uri).set_tag(parent, "mlflow.parentRunId", track["parent_run_id"])
    log(
        f"MLflow: {uri} (experiment {mlflow_exp!r}, run {run_name!r} {parent}); browse with: mlflow ui "
        f"--backend-store-uri {uri}, then http://127.0.0.1:5000/{ui_page(uri, mlflow_exp)}"
    )
    return parent, [
        MlflowTrials(
            uri,
            mlflow_exp,
            parent,
            {**tags, "role": child_role},
            max_epochs,
            spec.get("space"),
            dataset,
            flat_params(child_spec or spec),
            partial(backend.oom_reason, spec),
        )
    ]


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


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
