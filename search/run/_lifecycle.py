"""One run of trials — a study's search or its final training — from claiming its folder to publishing its
results: ``Lifecycle`` owns the steps both take, in their order, and the caller keeps what differs (searcher,
scheduler and budget, or the seed grid, and what each writes). Also the provenance every result records."""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

from .._contract import TrialSide
from ..spec._schema import SpecError
from ..store import _storage as storage
from ..store._atomic import StorageFull
from ..store._paths import check_storage, claim, mlflow_uri
from ._console import console_for, tune_verbosity
from ._ray_runtime import fit_to_cluster, init_ray
from ._tune_parts import (
    LastStep,
    Stalled,
    StopWhenFull,
    callback,
    ended,
    failure_config,
    fit_tuner,
    new_tuner,
    result_loggers,
    sigterm_as_interrupt,
    stop_condition,
    tune_storage,
)

PACKAGES = ("torch", "torchvision", "timm", "ray", "mlflow", "optuna", "numpy", "scikit-learn")


class Lifecycle:
    """The steps a study's search and its final training share, each a method, called in this order:

    1. ``claim`` the results folder (a resumed study checks its own instead), before anything is written;
    2. ``prepare`` the data (the tracking store checked first), still writing nothing: bad data leaves nothing
       half-done; then ``start_ray``: Ray started or joined, the trials' request fitted to the cluster, and only
       then the old results removed (a run the cluster refuses leaves them in place);
    3. ``track``: the MLflow parent run and the callback that mirrors each trial into it;
    4. ``tuner`` (or a study's ``restore``): Tune with the callbacks every run has — tracking, the console, each
       trial's last status, a full disk stopping the run — and the retry rule;
    5. ``fit``: SIGTERM stops it as Ctrl-C does; a disk that filled up is one line naming the folder;
    6. ``publish``: a full disk met by a trial raised (what finished is written first), the files uploaded.
    """

    def __init__(
        self,
        spec: dict[str, Any],
        backend: TrialSide,
        target: str,
        *,
        file: str,
        key: str,
        address: str | None = None,
        log: Any = print,
        verbose: bool = False,
    ) -> None:
        """``target``: the results' folder (path or URI); ``key``: what the user set it with, named in errors."""
        check_storage(target, file, key)
        self.spec, self.backend, self.target = spec, backend, target
        self.file, self.key, self.address, self.log, self.verbose = file, key, address, log, verbose
        self.replace = False  # whether the folder holds results the run replaces (--overwrite)
        self.kept: list[str] = []  # what --overwrite leaves in place until the run replaces it (final models)
        self.folder = storage.Folder(Path(target))  # the staging folder once prepared
        self.dashboard = ""
        self.parent: str | None = None  # the MLflow parent run
        self.ended: Callable[[str], bool] = lambda trial_id: True
        self._tracking: list[Any] = []
        self._tuner: Any = None

    @property
    def out(self) -> Path:
        """The local folder the run writes (a URI's staging copy)."""
        return self.folder.local

    def claim(
        self,
        holds: Callable[[dict[str, bool]], bool],
        what: str,
        *,
        overwrite: bool,
        missing: str,
        hint: str,
        keep: Callable[[str, bool], bool] | None = None,
    ) -> None:
        """Refuse a folder that holds something else, or ``what`` without --overwrite (SpecError). ``keep``
        (name, is a folder) picks the entries --overwrite leaves until the run replaces them; the rest goes."""
        self.replace = claim(
            self.target, holds, what, file=self.file, key=self.key, overwrite=overwrite, missing=missing, hint=hint
        )
        if self.replace and keep is not None:
            self.kept = sorted(name for name, is_dir in storage.entries(self.target).items() if keep(name, is_dir))

    def prepare(self) -> Any:
        """The trial side's data (``pools``), after the tracking store is checked; nothing is written yet."""
        check_tracking(self.spec, self.file)
        pools = self.backend.prepare(self.spec)
        self.folder = storage.folder(self.target)  # a URI's files are written in a staging folder, then uploaded
        return pools

    def start_ray(self, pools: Any) -> dict[str, float]:
        """Ray started or joined and the trials fitted to it; returns the cluster's resources."""
        import ray

        self.dashboard = init_ray(self.address, self.log, self.verbose, file=self.file)
        fit_to_cluster(self.spec, self.backend.node_paths(self.spec, pools), self.file, self.log)
        if self.replace:  # only now: results the cluster refuses to replace are left in place
            if self.kept:
                for entry in set(storage.entries(self.target)) - set(self.kept):
                    storage.remove(storage.join(self.target, entry))
            else:
                storage.remove(self.target)
        return ray.cluster_resources()

    def track(self, **tracking: Any) -> str | None:
        """Open the MLflow parent run (``open_tracking``'s arguments) and create the local folder."""
        self.parent, self._tracking = open_tracking(self.spec, self.backend, log=self.log, **tracking)
        self.out.mkdir(parents=True, exist_ok=True)
        return self.parent

    def tuner(
        self,
        trainable: Any,
        *,
        name: str,
        location: str,
        title: str,
        unit: str,
        max_epochs: int,
        stop: Any = None,
        checkpoint_config: Any = None,
        **tuner_args: Any,
    ) -> None:
        """A new Tuner keeping its state in ``location``/``name``; ``tuner_args``: param_space, tune_config."""
        from ray import tune

        path, fs = tune_storage(location)
        self._tuner = new_tuner(
            self.out,
            trainable,
            **tuner_args,
            run_config=tune.RunConfig(
                name=name,
                storage_path=path,
                storage_filesystem=fs,
                verbose=tune_verbosity(self.verbose),
                stop=stop,
                callbacks=self._callbacks(title, unit, max_epochs),
                checkpoint_config=checkpoint_config,
                failure_config=failure_config(self.spec),
            ),
        )

    def restore(self, trainable: Any) -> None:
        """The Tuner of an interrupted study in ``target``: it runs with the callbacks it started with."""
        from ray import tune

        path, fs = tune_storage(self.target)
        self._tuner = tune.Tuner.restore(
            path, trainable=trainable, resume_unfinished=True, resume_errored=True, storage_filesystem=fs
        )

    def fit(self) -> Any:
        """Run the trials; returns Tune's ResultGrid, and ``ended`` tells which trials had ended."""
        with sigterm_as_interrupt():
            grid = fit_tuner(self._tuner, self.out)
        self.ended = ended(self._tuner)
        return grid

    def restored_state(self) -> tuple[Any, list[dict[str, Any]]]:
        """A restored Tuner's stopper (as the study started with it) and each trial's last reported result."""
        results = [dict(r.metrics or {}) for r in self._tuner.get_results()]
        return stop_condition(self._tuner), results

    def callback(self, cls: type) -> Any:
        """The ``cls`` callback the Tuner ran with (None if none)."""
        return callback(self._tuner, cls)

    def publish(self, *names: str, writer: str) -> None:
        """Upload ``names``; first, a trial that met a full disk (``writer`` says what it could not write) is
        ``StorageFull``: what finished is written, and the rest continues with --resume."""
        full = self.callback(StopWhenFull)
        if full is not None and full.reason:
            raise StorageFull(self.out, f"{full.reason} ({writer})")
        self.folder.publish(*names)

    def _callbacks(self, title: str, unit: str, max_epochs: int) -> list[Any]:
        console = console_for(
            self.spec,
            title=title,
            max_epochs=max_epochs,
            unit=unit,
            verbose=self.verbose,
            oom_reason=partial(self.backend.oom_reason, self.spec),
        )
        stalled = Stalled(self.spec["search"]["stall_timeout_s"])
        # Tune's result loggers last, where Tune appends its defaults.
        return [*self._tracking, console, LastStep(), StopWhenFull(str(self.out)), stalled, *result_loggers()]


def provenance() -> dict[str, Any]:
    """Git commit, package versions and the driver's machine, recorded with every result."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], capture_output=True, text=True, timeout=10, cwd=Path(__file__).resolve().parent
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    versions: dict[str, str | None] = {}
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


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
