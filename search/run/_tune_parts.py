"""The Tune pieces a study and its final training both use: where Tune keeps its state, the callbacks that
read how trials ended or stop the run on a full disk, building and fitting a Tuner, and SIGTERM as Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ray.tune import Callback

from ..store import _storage as storage
from ..store._atomic import StorageFull, full_reason, probe_full, text_reason


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


class Stalled(Callback):
    """Tune waits for ever when trials are PAUSED and none runs (a scheduler that never resumes them). After
    ``timeout_s`` of that, the study is interrupted as Ctrl-C does — what finished is written, --resume goes on
    — and ``paused`` names the trials it found waiting."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = float(timeout_s)
        self.since: float | None = None
        self.paused: list[str] = []

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        paused = sorted(t.trial_id for t in trials if t.status == "PAUSED")
        if not paused or any(t.status == "RUNNING" for t in trials):
            self.since = None
            return
        now = time.monotonic()
        self.since = now if self.since is None else self.since
        if now - self.since >= self.timeout_s and not self.paused:
            self.paused = paused
            _interrupt_tune()


def stop_condition(tuner: Any) -> Any:
    """The stopper a Tuner was given; a restored Tuner's, as the study started with it (Tune itself runs the copy
    restored with its experiment state: ``BudgetStopper`` copies share one spend)."""
    run_config = getattr(getattr(tuner, "_local_tuner", None), "_run_config", None)
    return getattr(run_config, "stop", None)


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


def result_loggers() -> list[Any]:
    """Tune's CSV and JSON result loggers (each trial's progress.csv and result.json, which Tune's own results and
    ours are read from), given explicitly so that ``fit_tuner`` can leave out the TensorBoard logger Tune would add:
    it imports tensorboardX and with it torch into the driver (a console quickstart study: 27-28 -> 24-25 busy
    CPU-seconds without it), for event files nothing reads (a study is tracked in MLflow)."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    return [CSVLoggerCallback(), JsonLoggerCallback()]


@contextlib.contextmanager
def _only_given_loggers(tuner: Any) -> Iterator[None]:
    """Tune adds its default loggers (CSV, JSON, TensorBoard) to a Tuner's callbacks unless this variable is "1".
    Set while ``fit()`` runs, and only for a Tuner given ``result_loggers()``: a study started before they were
    (restored with the callbacks it started with) keeps Tune's defaults, result.json among them."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    if callback(tuner, CSVLoggerCallback) is None or callback(tuner, JsonLoggerCallback) is None:
        yield
        return
    key, before = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", os.environ.get("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS")
    os.environ[key] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def fit_tuner(tuner: Any, out: Path) -> Any:
    """``tuner.fit()``; when the disk filled up, Tune's own reading of the files it could not write may fail
    after the trials ended: that is ``StorageFull`` naming the study folder, not a traceback."""
    try:
        with _only_given_loggers(tuner):
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
