"""The console a study shows while it runs: one live progress display, one line per finished trial.

A Ray Tune callback in the driver. On a terminal it draws a rich progress display (trials done,
running, stopped and failed, epochs done of the planned total, best metric so far, elapsed time and
time left); to a pipe or a CI log it writes plain lines, a status line at most every
``interval`` seconds. Ray's own trial tables and its workers' logs stay behind ``tune-run --verbose``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from ray.tune import Callback

from ..spec._space import flat_config
from ..store._export import FAILED, error_reason, full_epochs, status_reason, trial_status

# Warnings already shown in this study: a search and the final training after it are one study, so each starts
# the set anew (``new_study``) and final training does not.
_WARNED: set[str] = set()


def new_study() -> None:
    """Show each warning again: a new study (a command, or another ``run_study`` in the same process) starts."""
    _WARNED.clear()


def duration(seconds: float) -> str:
    s = int(round(max(seconds, 0)))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class StudyConsole(Callback):
    """Progress of one ``tuner.fit()``: a search (``unit='trial'``) or final training (``unit='seed'``).

    ``live``: draw a rich live display (default: when ``stream`` is a terminal), else plain lines.
    """

    def __init__(
        self,
        title: str,
        metric: str,
        mode: str,
        max_epochs: int,
        space: dict[str, Any] | None = None,
        *,
        unit: str = "trial",
        stream: TextIO | None = None,
        live: bool | None = None,
        interval: float = 30.0,
        oom_reason: Callable[[dict[str, Any]], str] | None = None,
    ) -> None:
        self.title, self.metric, self.mode, self.unit = title, metric, mode, unit
        self.oom_reason = oom_reason  # a trial killed for host memory: its reason, by its flat config
        self.max_epochs, self.space = max_epochs, space or {}
        self._stream = stream
        self.live = self.stream.isatty() if live is None else live
        self.interval = interval
        self.total: int | None = None  # trials the search will run (None: open-ended)
        self.epochs: dict[str, int] = {}  # epochs done per trial
        self.lengths: dict[str, int] = {}  # full length of each started trial
        self.status: dict[str, str] = {}  # finished trials
        self.names: dict[str, str] = {}  # "trial <id>", or "seed <n>" in final training
        self.running: set[str] = set()
        self.best: tuple[float, str] | None = None  # the study's best (value, trial)
        self.trial_best: dict[str, float] = {}
        self.t0 = time.monotonic()
        self._last_line = 0.0
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:  # Ray pickles callbacks with the experiment state
        return {**self.__dict__, "_progress": None, "_tasks": {}, "_stream": None}

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stdout

    # --- Ray Tune events -------------------------------------------------------------------------

    def setup(
        self, stop: Any = None, num_samples: int | None = None, total_num_samples: int | None = None, **info: Any
    ) -> None:
        self.total = total_num_samples if total_num_samples and total_num_samples > 0 else None
        self.t0 = time.monotonic()
        if self.live:
            self._start_live()
        self._refresh(force=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        tid = trial.trial_id
        self.running.add(tid)
        self.names[tid] = self._name(tid, trial)
        self.lengths[tid] = full_epochs(self._config(trial), self.max_epochs)
        self._refresh()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any) -> None:
        tid = trial.trial_id
        if isinstance(result.get("warning"), str):
            self.warn(result["warning"])
        if result.get("infeasible"):
            return
        self.epochs[tid] = int(result.get("epoch", result.get("training_iteration", 0)) or 0)
        if isinstance(result.get("epochs_total"), int):  # a final seed re-planned to its time limit
            self.lengths[tid] = result["epochs_total"]
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value) and self.unit == "trial":
            if tid not in self.trial_best or self._better(value, self.trial_best[tid]):
                self.trial_best[tid] = float(value)
            if self.best is None or self._better(value, self.best[0]):
                self.best = (float(value), tid)
        if self.unit == "seed" and self._progress is None and "test_accuracy" not in result:
            self._print(self.epoch_line(tid, result))  # final training: few, long trials; every epoch counts
        self._refresh()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        status = trial_status(last, "", self.lengths.get(trial.trial_id, self.max_epochs))
        self._finish(trial, status, status_reason(last, status))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        from ..store._tracking import error_text

        text = error_text(trial) or "failed"
        self._finish(trial, trial_status({}, text, 0), error_reason(text, self._config(trial), self.oom_reason))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Tune restarts a trial whose process or node died from its last checkpoint (resources.max_failures)."""
        tid = trial.trial_id
        failures = int(getattr(getattr(trial, "run_metadata", None), "num_failures", 0) or 0)
        self._print(
            f"{self._name(tid, trial)} lost its process or node after epoch {self.epochs.get(tid, 0)}: "
            f"restarting it from its last checkpoint (failure {failures} of "
            f"{getattr(trial, 'max_failures', '?')} allowed)"
        )
        self._refresh()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._refresh()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._refresh(force=True)
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    # --- what is shown ---------------------------------------------------------------------------

    def warn(self, message: str) -> None:
        """Each warning once per study, however many trials report it."""
        if message not in _WARNED:
            _WARNED.add(message)
            self._print(f"warning: {message}")

    def headline(self) -> str:
        done = len(self.status)
        counts = {s: sum(v == s for v in self.status.values()) for s in ("stopped", *FAILED)}
        of = f"/{self.total}" if self.total else ""
        parts = [f"{done}{of} {self.unit}s done", f"{len(self.running)} running"]
        if self.unit == "trial":
            parts.append(f"{counts['stopped']} stopped")
        parts.append(f"{sum(counts[s] for s in FAILED)} failed")
        if self.best is not None:
            parts.append(f"best {self.metric} {self.best[0]:.4f} ({self.unit} {self.best[1]})")
        return f"{self.title}: " + " · ".join(parts)

    def planned_epochs(self) -> int:
        """Epochs the study will have run: finished trials as they ended, the others at full length."""
        finished = sum(self.epochs.get(t, 0) for t in self.status)
        started = sum(self.lengths.get(t, self.max_epochs) for t in self.running)
        waiting = max((self.total or 0) - len(self.status) - len(self.running), 0) * self.max_epochs
        return max(finished + started + waiting, self.epochs_done(), 1)

    def epochs_done(self) -> int:
        return sum(self.epochs.values())

    def eta(self) -> float | None:
        done, elapsed = self.epochs_done(), time.monotonic() - self.t0
        if done == 0 or self.total is None:
            return None
        return (self.planned_epochs() - done) * elapsed / done

    def status_line(self) -> str:
        eta = self.eta()
        line = (
            f"{self.headline()} · epochs {self.epochs_done()}/{self.planned_epochs()} · "
            f"elapsed {duration(time.monotonic() - self.t0)}"
        )
        if self.unit == "seed":
            line += "".join(
                f" · {self.names.get(t, t)} epoch {self.epochs.get(t, 0)}/{self.lengths.get(t, self.max_epochs)}"
                for t in sorted(self.running)
            )
        return line + (f" · ETA {duration(eta)}" if eta is not None else "")

    def epoch_line(self, tid: str, result: dict[str, Any]) -> str:
        """One epoch of one final-training seed, with that seed's time left."""
        epoch, length = self.epochs.get(tid, 0), self.lengths.get(tid, self.max_epochs)
        line = f"{self.names.get(tid, tid)} · epoch {epoch}/{length}"
        for key in dict.fromkeys(("train_loss", "train_acc", self.metric)):
            if isinstance(result.get(key), (int, float)):
                line += f" · {key} {result[key]:.4f}"
        seconds = result.get("time_total_s")
        if isinstance(seconds, (int, float)) and epoch > 0:
            line += f" · {duration(seconds)} · ETA {duration(seconds / epoch * (length - epoch))}"
        return line

    def trial_line(self, trial: Any, status: str, reason: str) -> str:
        tid = trial.trial_id
        last = trial.last_result or {}
        line = f"{self._name(tid, trial)} {status}"
        if status in FAILED or status == "not_trained":
            return f"{line}: {reason}"
        line += f" · {self.epochs.get(tid, 0)}/{self.lengths.get(tid, self.max_epochs)} epochs"
        shown = "test_accuracy" if self.unit == "seed" and "test_accuracy" in last else self.metric
        if isinstance(last.get(shown), (int, float)):
            line += f" · {shown} {last[shown]:.4f}"
            if tid in self.trial_best:
                line += f" (best {self.trial_best[tid]:.4f})"
        if isinstance(last.get("time_total_s"), (int, float)):
            line += f" · {duration(last['time_total_s'])}"
        config = self._config(trial)
        if config and self.unit == "trial":
            line += " · " + " ".join(f"{k}={_num(v)}" for k, v in config.items())
        return line

    # --- plumbing --------------------------------------------------------------------------------

    def _better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b

    def _config(self, trial: Any) -> dict[str, Any]:
        try:
            return flat_config(dict(trial.config or {}), self.space)
        except (KeyError, TypeError):
            return {}

    def _name(self, tid: str, trial: Any = None) -> str:
        if self.unit == "seed" and trial is not None and "seed" in (trial.config or {}):
            return f"seed {trial.config['seed']}"
        return f"{self.unit} {tid}"

    def _finish(self, trial: Any, status: str, reason: str) -> None:
        tid = trial.trial_id
        self.running.discard(tid)
        self.status[tid] = status
        self._print(self.trial_line(trial, status, reason))
        if tid in self._tasks and self._progress is not None:
            self._progress.remove_task(self._tasks.pop(tid))
        self._refresh()

    def _print(self, line: str) -> None:
        if self._progress is not None:
            self._progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            print(line, file=self.stream, flush=True)

    def _start_live(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.text import Text

        class Display(Progress):
            """The headline on its own line (it wraps on a narrow terminal), the progress bars below it."""

            headline = ""

            def get_renderables(self) -> Any:
                yield Text(self.headline)
                yield self.make_tasks_table(self.tasks)

        self._progress = Display(
            TextColumn("{task.description}"),
            BarColumn(bar_width=30),
            TextColumn("{task.completed}/{task.total} epochs"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(file=self.stream),
            refresh_per_second=2,
        )
        self._progress.start()
        self._tasks["study"] = self._progress.add_task("  all", total=self.planned_epochs())

    def _refresh(self, force: bool = False) -> None:
        if self._progress is not None:
            p = self._progress
            p.headline = self.headline()
            p.update(self._tasks["study"], total=self.planned_epochs(), completed=self.epochs_done())
            if self.unit == "seed":  # final training: one row per seed with its epochs and time left
                for tid in self.running:
                    if tid not in self._tasks:
                        self._tasks[tid] = p.add_task(f"  {self.names.get(tid, tid)}", total=self.lengths.get(tid))
                    p.update(self._tasks[tid], completed=self.epochs.get(tid, 0))
            return
        now = time.monotonic()
        if force or now - self._last_line >= self.interval:
            self._last_line = now
            print(self.status_line(), file=self.stream, flush=True)


# --- how Ray and MLflow talk while a study runs (one place for runner and final training) ------------


def tune_verbosity(verbose: bool) -> int:
    """Tune's ``verbose``: its trial tables only with ``--verbose`` (the console replaces them)."""
    return 1 if verbose else 0


def quiet_logs(verbose: bool) -> None:
    """Keep library chatter (Tune's header, Ray's token notice, MLflow's table creation) off the default console."""
    if verbose:
        return
    import logging
    import os

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is first imported
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # tqdm bars, \r and all
    # Tune's newer output prints its experiment header even at verbose=0; the legacy one is silent.
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    # Tune logs every failed trial's traceback (for a trial Ray's memory monitor killed, a page of Ray
    # advice); the console's line per trial says what failed and why.
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
    # Its "token authentication is enabled" warning: the dashboard line says what to do about it.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    # "Failed to fetch metrics for N trial(s)" with a path per trial: trials stopped before their first
    # report (a spent budget) have none, and trials.csv and the console already say how each ended.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


def dashboard_line(url: str | None, joined: bool = False, off: str | None = None) -> str:
    """The dashboard's address (a joined cluster's own) and, when Ray guards it with a token (recent Ray:
    on by default for a local cluster), how to get the token its login page asks for; ``off``: the setting that
    turned it off."""
    if off:
        return f"Ray dashboard: off ({off})"
    if not url:
        return "Ray dashboard: (not running)"
    line = f"Ray dashboard: {url}"
    if token_auth_enabled():
        where = " on the cluster's head node" if joined else ""
        line += f" (it asks for a token: run `ray get-auth-token`{where} and paste what it prints)"
    return line


def joined_dashboard(url: str, address: str) -> str:
    """The dashboard of a cluster joined at ``address`` (``HOST:6379``, ``ray://HOST:10001``), as Ray reports it
    (``host:port``): a head bound to every interface reports 0.0.0.0, which is the head's own host from here."""
    host, _, port = url.rpartition(":")
    head = address.split("://", 1)[-1].rsplit(":", 1)[0]
    if host in ("0.0.0.0", "::", "[::]", ""):
        return f"{'127.0.0.1' if head in ('auto', 'localhost', '') else head}:{port}"  # auto: on this machine
    return url


def token_auth_enabled() -> bool:
    try:
        from ray._private.authentication.authentication_utils import is_token_auth_enabled
    except ImportError:  # Ray without token authentication
        return False
    return bool(is_token_auth_enabled())


def console_for(
    spec: dict[str, Any],
    *,
    title: str,
    max_epochs: int,
    unit: str,
    verbose: bool,
    oom_reason: Callable[[dict[str, Any]], str] | None = None,
) -> StudyConsole:
    """The console callback for one ``tuner.fit()``; plain lines under ``--verbose`` (beside Ray's tables)."""
    exp = spec["experiment"]
    return StudyConsole(
        title,
        exp["metric"],
        exp["mode"],
        max_epochs,
        spec.get("space") if unit == "trial" else {},
        unit=unit,
        live=False if verbose else None,
        oom_reason=oom_reason,
    )
