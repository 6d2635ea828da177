from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

# Before torch loads OpenMP (here, in the processes tests start, and in their Ray workers, which inherit it): the
# two xdist workers' torch threads share 2 cores, and OpenMP's default spin-wait made each of two concurrent
# 2-thread trainings take 3.2-3.7x its time alone (10.3-11.7 s against 3.1-3.3 s; 5.8-6.0 s with PASSIVE, whose
# time alone is the same). What a test checks does not change; a user's runs keep OpenMP's default.
os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import trainables  # noqa: E402

# The local servers (S3, PostgreSQL, an MLflow server, GCS) as session fixtures any test may ask for.
pytest_plugins = ["tests.servers"]

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
BIN = Path(sys.executable).parent  # the venv's console scripts
SHARED_CIFAR = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


def pytest_configure(config: pytest.Config) -> None:
    """Every cache a test writes lives in a fresh folder of this test session — not one shared by all
    sessions on the host, whose files anyone could replace — for this process and those it starts."""
    cache = tempfile.mkdtemp(prefix="tune-run-test-cache-")
    os.environ["TUNE_CACHE_DIR"] = cache  # console scripts and Ray workers read it at import
    trainables.folders.CACHE_DIR = Path(cache)  # this process imported trainables.folders already
    config.add_cleanup(lambda: shutil.rmtree(cache, ignore_errors=True))
    # No Ray dashboard where no test looks at it: ~3.6 CPU-seconds each Ray start saves (the README's commands
    # keep the default: ``readme``). Set, not defaulted: a developer's own setting would change what tests see.
    os.environ[DASHBOARD_ENV] = "0"


# xdist (``-n``): tests of these modules share an expensive module- or session-scoped fixture (a cluster, a
# trained model, servers), so one worker runs each group and the fixture starts once. Every other test is
# handed out on its own.
XDIST_GROUPS = {
    "test_readme": "quickstart",
    "test_console": "quickstart",  # the session's README quickstart
    "test_remote": "servers",
    "test_cluster_s3": "servers",  # S3 (moto), PostgreSQL and an MLflow server
    "test_cluster": "cluster",
    "test_final": "final",
    "test_eval": "eval",
    "test_engine": "engine",
    "test_bad_result_files": "model",
    "test_smoke_memory": "smoke-memory",
    "test_gcs": "gcs",
}
DASHBOARD_ENV = "TUNE_RUN_DASHBOARD"  # README: "0" starts Ray without its dashboard
CIFAR_GROUP = "cifar"  # tests that read the shared CIFAR-10 tree: extracted once (cifar_root), on one worker


# Every test fails on its own after pyproject's --timeout (300 s, fixtures included); these modules' tests may
# take longer, each for a reason: whichever test of a module first asks for its shared fixture pays for it.
LONGER = {
    "test_readme": (600, "the session's README quickstart: a study and three seeds of final training"),
    "test_console": (600, "the same quickstart, when this module's test asks for it first"),
    "test_benchmarks": (600, "each benchmark's --quick run: several studies through the console scripts"),
    "test_cluster": (600, "a three-node Ray cluster on this host, one of whose nodes is killed mid-trial"),
    "test_cluster_s3": (600, "a cluster, S3, PostgreSQL and an MLflow server, a node killed mid-trial"),
    "test_remote": (600, "studies, final training and a killed driver's resume in S3 tracked by an MLflow server"),
    "test_gcs": (600, "a study, its resume, final training, eval and compare in a GCS emulator"),
    "test_papers": (600, "each paper's spec run end to end under --smoke"),
    "test_smoke_memory": (600, "every shipped spec's smoke run, memory sampled"),
    # Measured at 300 s and more on a 2-core AVX2 host (no AVX-512: half the speed of the others here):
    "test_disk_full": (600, "a study on a 40 MB disk that fills, then its resume, in a private mount namespace"),
    "test_mlflow_down": (600, "an MLflow server stopped mid-study, then --sync-mlflow filling it in"),
}


RAY_FIXTURES = {"ray_session", "quickstart", "cluster"}  # fixtures that start (or share) a Ray runtime


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group markers this adds
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__.rpartition(".")[2]
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())) and not item.get_closest_marker("ray"):
            item.add_marker(pytest.mark.ray)  # `-m "not ray"` leaves out every test that starts Ray
        group = "alone" if item.get_closest_marker("alone") else XDIST_GROUPS.get(module)
        # The Ray tests that read CIFAR-10 share one extracted tree; a test without Ray extracts its own (GNU tar:
        # ~1 s) and so runs with the other tests without Ray, while the alone tests hold Ray's lock.
        if "cifar_root" in getattr(item, "fixturenames", ()) and item.get_closest_marker("ray"):
            group = CIFAR_GROUP
        if group and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(group))
        if module in LONGER and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(LONGER[module][0]))
    # A group is one unit of work for xdist (handed out where its first test stands): it goes where its latest
    # test belongs, or a group holding one Ray test would start among the tests without Ray and wait on the
    # alone tests' lock, its worker idle.
    group_order: dict[str, int] = {}
    first: dict[str, int] = {}  # a group's place among those of its order: where its first test was collected
    for i, item in enumerate(items):
        group = _group(item)
        group_order[group] = max(group_order.get(group, 0), _order(item))
        first.setdefault(group, i)
    # Within the alone group, its own order (``ALONE_ORDER``); within another group, its tests without Ray first
    # (the servers' group's run while its worker would otherwise wait on the alone tests' lock), then as collected.
    items.sort(key=lambda item: (group_order[_group(item)], first[_group(item)], _within_group(item)))


def _within_group(item: pytest.Item) -> int:
    """A test's place within its group (``pytest_collection_modifyitems``)."""
    if _group(item) == "alone":
        return _order(item)
    return 1 if item.get_closest_marker("ray") else 0


def _group(item: pytest.Item) -> str:
    """The unit xdist's loadgroup hands out: the test's groups joined as xdist names them, or the test itself."""
    names = {str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in item.iter_markers("xdist_group")}
    return "_".join(sorted(names)) if names else item.nodeid


# Modules whose tests each take a minute or more (--durations), started before the short Ray tests; and
# test_pareto, whose 20-40 s tests ended the run on one worker while the other had finished (~20 s idle).
SLOW = {"test_e2e", "test_disk_full", "test_mlflow_down", "test_ray_address", "test_pareto"}


# The alone tests' modules in the order they run, while the tests without Ray keep the other worker busy for the
# first two to three minutes: first the memory-monitor test, which mostly waits for Ray to kill its hog (43 % of the
# 2 cores busy when it ran last); then the GPU-pinning test (its four trials overlapped with those tests beside
# them, 2026-12-07: 36-37 s; 28 s when it ran later, beside the servers starting); test_budget's last (its
# wall-clock search, then the study held to 5 % of its budget, whose final training's fixed costs a busy machine
# slows), when little else is left to run.
ALONE_ORDER = ["test_host_memory", "test_gpu_pinning", "test_budget"]


def _order(item: pytest.Item) -> int:
    """Run order (a stable sort, which xdist keeps: pyproject's --no-loadscope-reorder): the tests marked alone
    first, back to back on one worker, while the other worker runs the ones without Ray (those of the long
    modules too: they are all it can run meanwhile), the single tests before the groups (the smoke-memory
    group's 2 GB child after the memory-monitor test); then the servers' group; then the long modules, so that
    none of them starts last and leaves a worker idle at the end; then the rest. A group goes where its latest
    test does (``pytest_collection_modifyitems``)."""
    module = item.module.__name__.rpartition(".")[2]
    if item.get_closest_marker("alone"):
        if module not in ALONE_ORDER:
            raise pytest.UsageError(f"{item.nodeid} is marked alone: its module must be in conftest's ALONE_ORDER")
        return ALONE_ORDER.index(module) - len(ALONE_ORDER)
    if XDIST_GROUPS.get(module) == "servers":
        # Next after them: the worker done with the tests without Ray starts the servers (PostgreSQL, an MLflow
        # server, S3), which need no Ray, while the alone tests still hold the lock its Ray tests then wait on.
        return 3
    if not item.get_closest_marker("ray"):
        return 2 if any(item.iter_markers("xdist_group")) else 1
    if module in LONGER or module in SLOW:
        return 4
    return 5


@contextlib.contextmanager
def _alarm_paused() -> Iterator[None]:
    """Waiting for the lock is not the test's time: pytest-timeout's alarm (its signal method: an ITIMER_REAL,
    armed for the test with its fixtures) is stopped while the test waits and set again, to what it had left,
    once the lock is held. Pushing it back after the wait was not enough: a wait longer than the alarm's time
    failed the test inside the wait (a test waited 209 s of its 300 behind the alone tests). Under the thread
    method, or with no timeout, no alarm is set and nothing changes."""
    left, _ = signal.setitimer(signal.ITIMER_REAL, 0)
    try:
        yield
    finally:
        if left > 0:
            signal.setitimer(signal.ITIMER_REAL, left)


@pytest.fixture(autouse=True)
def alone_when_marked(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Under xdist, a test marked ``alone`` (it measures the machine: memory thresholds, wall clocks, overlapping
    trials) runs while no test that starts Ray does: it takes a lock the Ray tests of every worker share,
    exclusively. Tests without Ray (a spec check, a tiny model's few steps) take a fraction of one core and a
    few hundred MB, well inside what the alone tests allow for, so they go on meanwhile.

    The alone tests run back to back on one worker (``_order``), which keeps the lock from the first to the end
    of the last: released between them, the other worker's next Ray test took it each time, and each alone test
    after the first waited ~20 s for it while the other worker would have waited anyway."""
    alone = request.node.get_closest_marker("alone")
    if alone and os.environ.get("PYTEST_XDIST_WORKER"):
        if not _ALONE_LOCK:
            f = open(tmp_path_factory.getbasetemp().parent / "alone.lock", "a")  # held across the alone tests
            with _alarm_paused():
                fcntl.flock(f, fcntl.LOCK_EX)
            _ALONE_LOCK.append(f)
        yield
        return
    if not request.node.get_closest_marker("ray"):
        yield
        return
    with ray_lock(tmp_path_factory):
        yield


_ALONE_LOCK: list[io.TextIOWrapper] = []  # the run's lock file while this worker holds it for its alone tests


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """The lock goes before the next test's fixtures are set up: a session fixture that starts Ray takes it,
    shared, and in this process that would wait on its own exclusive lock."""
    if not item.get_closest_marker("alone"):
        _release_alone_lock()


def _release_alone_lock() -> None:
    while _ALONE_LOCK:
        f = _ALONE_LOCK.pop()
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def pytest_sessionfinish(session: pytest.Session) -> None:
    _release_alone_lock()  # where a worker's last tests were alone ones (its exit would release it too)


@contextlib.contextmanager
def ray_lock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The lock of a run's Ray work under xdist, shared by the Ray tests of every worker (an alone test holds it
    exclusively: ``alone_when_marked``). A module- or session-scoped fixture that starts Ray (a cluster, the README
    quickstart) holds it while it starts: it is set up before the test's own lock is taken. Nothing to lock
    without xdist."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield
        return
    lock = tmp_path_factory.getbasetemp().parent / "alone.lock"  # the run's folder, common to its workers
    with open(lock, "a") as f:
        with _alarm_paused():
            fcntl.flock(f, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture
def backend():
    return trainables


def make_image_tree(
    root: Path, classes: dict[str, int], size: int = 12, split: str | None = None, seed: int = 0
) -> Path:
    """A class-per-folder tree of real PNG files whose colour depends on the class (learnable)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = root / split if split else root
    for ci, (name, n) in enumerate(classes.items()):
        (base / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = np.clip(rng.normal(60 + 120 * (ci % 2), 30, (size, size, 3)), 0, 255).astype(np.uint8)
            img[:, :, ci % 3] = 200
            Image.fromarray(img).save(base / name / f"{i:04d}.png")
    return root


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> Path:
    """The shared CIFAR-10 JPEG tree (train/ and test/ class folders), extracted once per session."""
    if not SHARED_CIFAR.is_file():
        pytest.skip(f"shared CIFAR-10 tree not found at {SHARED_CIFAR}")
    out = tmp_path_factory.mktemp("cifar")
    if shutil.which("tar"):  # GNU tar: 55,000 files in seconds, where tarfile takes half a minute
        subprocess.run(["tar", "-xzf", str(SHARED_CIFAR), "-C", str(out)], check=True)
    else:
        with tarfile.open(SHARED_CIFAR) as tar:
            tar.extractall(out, filter="data")
    hits = [p.parent for p in out.rglob("train") if p.is_dir() and (p.parent / "test").is_dir()]
    if not hits:
        pytest.skip("shared CIFAR-10 archive has no train/ + test/ folders")
    return hits[0]


# --------------------------------------------------------------------------- shared by the Ray tests


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray runtime for the in-process studies of a whole test session (of an xdist worker): the first
    study starts it (``ray.init(..., ignore_reinit_error=True)``) and later ones join it; shut down at the end.
    A test that needs another cluster shuts it down first (tests/test_cluster.py's ``start_cluster``)."""
    import ray

    yield
    ray.shutdown()


def small_spec(tmp_path: Path, name: str, **sections):
    """A resolved spec of a tiny study (synthetic 16 px, a 1-block ViT) writing under ``tmp_path``."""
    from search import resolve

    spec = {
        "experiment": {"name": name, "output_dir": str(tmp_path / "runs")},
        "data": {"dataset": "synthetic", "image_size": 16, "num_classes": 4, "num_samples": 400},
        "model": {"name": "vit", "patch_size": 4, "embed_dim": 16, "depth": 1, "num_heads": 2, "mlp_dim": 32},
        "train": {"epochs": 3, "batch_size": 64, "lr": 3e-3},
        "tracking": {"mlflow_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
        # Both of the session's Ray CPUs a trial: one trial process at a time, reused by every trial of the study,
        # not two. Each trial process pays ~4 CPU-seconds to start (Ray's worker, torch, torch._dynamo at the
        # first optimizer step), which the tests' tiny trials never earn back. A test whose trials must run side
        # by side asks for ``resources={"cpu": 1}`` (the cluster tests do: their nodes have 1 CPU).
        "resources": {"cpu": 2},
    }
    if "final" in sections:  # final models' speed timed 0.2 s, not 1 s (final.timing_s): the tests check that it
        spec["final"] = {"timing_s": 0.2}  # was timed, not how precisely (1.6 s less a seed on a 2-core CPU)
    for k, v in sections.items():
        spec[k] = v if k == "model" else {**spec.get(k, {}), **v}  # a new model replaces the ViT
    return resolve(spec, trainables)


def mlflow_runs(db: Path, experiment: str):
    """(client, every run of ``experiment``) in the SQLite store ``db``."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{db}")
    exp = c.get_experiment_by_name(experiment)
    return c, (c.search_runs([exp.experiment_id], max_results=1000) if exp else [])


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def continued_epochs(rows: list[dict], total: int) -> int:
    """The epoch of the checkpoint a trial restarted once from, read from the results Ray logged for it (rows of
    progress.csv or result.json, in order): epochs 1..k by one process, then c+1..total by another,
    which must have continued from epoch c >= 2 and repeated at most one epoch.

    One epoch may repeat because Ray logs a result as it arrives but registers the checkpoint reported with it
    only when a second call to the trial's actor returns (``_schedule_trial_save``): a node lost between the two
    continues from the checkpoint before. The repeated epoch must reproduce its first run's numbers (a
    continued run draws what an uninterrupted one draws; the tolerance is float noise, not a different state)."""
    epochs = [int(r["epoch"]) for r in rows]
    cut = next((i for i, r in enumerate(rows) if r["pid"] != rows[0]["pid"]), len(rows))
    first, rest = epochs[:cut], epochs[cut:]
    assert first == list(range(1, len(first) + 1)), epochs
    assert rest, f"the trial was never restarted from a checkpoint: {epochs}"
    c = rest[0] - 1
    assert rest == list(range(c + 1, total + 1)), epochs
    assert len(first) - 1 <= c <= len(first) and c >= 2, f"continued from epoch {c}: {epochs}"
    for again in rest[: len(first) - c]:  # the epoch whose checkpoint was never registered
        before, after = rows[again - 1], rows[cut + again - rest[0]]
        for key in ("train_loss", "val_loss"):
            assert float(after[key]) == pytest.approx(float(before[key]), rel=1e-4), (again, key, before, after)
    return c


# --------------------------------------------------------------------------- commands as a user runs them


def console_env(**extra: str) -> dict[str, str]:
    """The environment of a console script started by a test: this checkout first on the path, no cluster
    address inherited from the shell."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AIR_NEW_OUTPUT")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return {**env, **extra}


def console(
    script: str, *args: str, cwd: Path, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """An installed console script (``tune-run``, ``tune-eval``, ``tune-compare``) as a separate process."""
    return subprocess.run(
        [str(BIN / script), *args], cwd=cwd, env=env or console_env(), capture_output=True, text=True, timeout=timeout
    )


def readme(command: str, cwd: Path) -> subprocess.CompletedProcess:
    """A command exactly as README.md writes it, run as the console script it names."""
    assert command in README, f"not in README.md: {command}"
    script, *args = shlex.split(command)
    env = {k: v for k, v in console_env().items() if k != DASHBOARD_ENV}  # the default settings: the dashboard on
    return console(script, *args, cwd=cwd, timeout=1200, env=env)


class Ran(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def _entry(script: str):  # noqa: ANN202
    from search import cli, compare

    return {"tune-run": cli.main, "tune-eval": cli.eval_main, "tune-compare": compare.main}[script]


@pytest.fixture
def cli(monkeypatch):
    """A console script's ``main(argv)`` in this process: its exit status and what it printed.

    For the paths where the process boundary is not what a test checks (bad input, --dry-run): no interpreter
    start and no torch import per call. One subprocess test per command keeps the console-script path."""

    def run(script: str, *args: str, cwd: Path) -> Ran:
        out, err = io.StringIO(), io.StringIO()
        with monkeypatch.context() as m:
            m.chdir(cwd)
            m.delenv("RAY_ADDRESS", raising=False)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = _entry(script)(list(args))
                except SystemExit as exc:  # argparse's usage errors
                    code = exc.code if isinstance(exc.code, int) else 1
        return Ran(int(code or 0), out.getvalue(), err.getvalue())

    return run


class Quickstart(NamedTuple):
    folder: Path
    study: subprocess.CompletedProcess  # ``tune-run spaces/quickstart.yaml``
    final: subprocess.CompletedProcess  # ``tune-run runs/quickstart/best.yaml --final``


@pytest.fixture(scope="session")
def quickstart(tmp_path_factory) -> Quickstart:
    """README's quickstart and its final training, verbatim, in a fresh folder: run once per test session and
    read by every test that only looks at their results (README, console, MLflow, MLflow UI, report.html).
    Tests that use it carry ``@pytest.mark.xdist_group("quickstart")`` so that one worker runs it once."""
    d = tmp_path_factory.mktemp("quickstart")
    shutil.copytree(REPO / "spaces", d / "spaces")
    with ray_lock(tmp_path_factory):
        study = readme("tune-run spaces/quickstart.yaml", d)
        assert study.returncode == 0, study.stdout[-3000:] + study.stderr[-3000:]
        final = readme("tune-run runs/quickstart/best.yaml --final", d)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    return Quickstart(d, study, final)
