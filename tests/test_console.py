"""What a person sees: tune-run's console (on a pipe, and Ray's tables behind --verbose), the MLflow UI
and report.html in a real headless browser, and final models that MLflow loads and registers.

The session's README quickstart (12 trials, then final training of its best.yaml with three seeds; conftest)
serves every test of this module but the --verbose one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import console_env
from tests.servers import free_port

pytestmark = [pytest.mark.ray, pytest.mark.xdist_group("quickstart")]
REPO = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # anything but tab and newline
# A warning printed with its source line ("…/trainables/batches.py:42: UserWarning: …"), from any module.
SOURCE_LINE = re.compile(r"\w\.py:\d+:")


def console_script(name: str) -> str:
    """The installed console script beside this interpreter (the venv's), else on PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.is_file() else (shutil.which(name) or name)


def run(name: str, *args: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [console_script(name), *args], cwd=cwd, env=console_env(), capture_output=True, text=True, timeout=timeout
    )


def test_default_console_is_a_compact_progress_view(quickstart):
    r = quickstart.study
    out, both = r.stdout, r.stdout + r.stderr
    # None of Ray's tables, per-checkpoint lines or per-trial warnings with their source line.
    for noise in (
        "Trial status",
        "Configuration for experiment",
        "Checkpoint successfully created",
        "╭",
        "UserWarning",
        "Creating initial MLflow database tables",
    ):
        assert noise not in both, noise
    assert not CONTROL.search(both), "control characters in piped output"
    assert not SOURCE_LINE.search(both), SOURCE_LINE.search(both)
    assert len(out.splitlines()) < 80, f"{len(out.splitlines())} lines"
    # The dashboard line says how to get past its token page.
    assert re.search(r"^Ray dashboard: http://127\.0\.0\.1:\d+ .*`ray get-auth-token`", out, re.M)
    # One line per finished trial, and the study's progress with the best so far and the epochs planned.
    finished = re.findall(
        r"^trial (\w+) (completed|stopped) · (\d+)/12 epochs · val_acc 0\.\d{4} \(best 0\.\d{4}\)"
        r" · \d+:\d\d · train\.lr=",
        out,
        re.M,
    )
    assert len(finished) == 12 and len({t for t, _, _ in finished}) == 12
    assert {s for _, s, _ in finished} == {"completed", "stopped"}
    done = re.findall(
        r"^quickstart: 12/12 trials done · 0 running · (\d+) stopped · 0 failed · best val_acc "
        r"0\.\d{4} \(trial \w+\) · epochs (\d+)/(\d+) · elapsed",
        out,
        re.M,
    )
    assert done and done[-1][1] == done[-1][2] == str(sum(int(e) for _, _, e in finished))
    assert int(done[-1][0]) == sum(s == "stopped" for _, s, _ in finished)
    if not torch.cuda.is_available():  # each warning once
        assert out.count("no GPU visible") == 1 and "warning: no GPU visible to the trials" in out
    assert "Study 'quickstart': 12 trials" in out and "best config:" in out
    # Final training (`--final`): every epoch of each seed with its time left, then its test accuracy.
    out, both = quickstart.final.stdout, quickstart.final.stdout + quickstart.final.stderr
    assert not CONTROL.search(both), "control characters in piped output"
    for noise in ("Trial status", "╭", "UserWarning"):
        assert noise not in both, noise
    assert not SOURCE_LINE.search(both), SOURCE_LINE.search(both)
    for seed in (0, 1, 2):
        epochs = re.findall(
            rf"^seed {seed} · epoch (\d+)/12 · train_loss \d+\.\d{{4}} · train_acc .* · ETA \d+:\d\d$", out, re.M
        )
        assert epochs == [str(e) for e in range(1, 13)], seed
        assert re.search(rf"^seed {seed} completed · 12/12 epochs · test_accuracy 0\.\d{{4}}", out, re.M)
    if not torch.cuda.is_available():
        assert out.count("no GPU visible") == 1
    assert "Final training of 'quickstart-best'" in out and "test accuracy" in out


def test_mlflow_records_training_runs_dataset_and_loadable_models(quickstart):
    import mlflow
    import mlflow.pytorch
    from mlflow.tracking import MlflowClient

    d = quickstart.folder
    uri = f"sqlite:///{d / 'mlflow.db'}"
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("quickstart")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on training runs
    runs = c.search_runs([exp.experiment_id], max_results=100)
    trials = [x for x in runs if x.data.tags.get("role") == "trial"]
    assert len(trials) == 12
    for x in trials + [next(x for x in runs if x.data.tags.get("role") == "study")]:
        (inp,) = x.inputs.dataset_inputs
        assert inp.dataset.name == "digits" and len(inp.dataset.digest) == 12
        assert {t.key: t.value for t in inp.tags}["mlflow.data.context"] == "training"
        profile = yaml.safe_load(inp.dataset.profile)
        assert profile["train"] + profile["val"] + profile["test"] == 1797 and profile["classes"] == 10
    # Every run carries the same params (the resolved spec with its own values): comparable across runs.
    study = next(x for x in runs if x.data.tags.get("role") == "study")
    assert all(set(x.data.params) == set(study.data.params) for x in trials)
    assert len({x.data.params["train.lr"] for x in trials}) == 12 and study.data.params["model.name"] == "cnn"
    assert "infeasible" not in trials[0].data.metrics  # a status (tag), not a metric
    seed_runs = {x.data.params["seed"]: x for x in runs if x.data.tags.get("role") == "final-seed"}
    assert set(seed_runs) == {"0", "1", "2"} and seed_runs["0"].data.params["model.name"] == "cnn"
    mlflow.set_tracking_uri(uri)
    models = mlflow.search_logged_models(experiment_ids=[exp.experiment_id], output_format="list")
    assert sorted(m.source_run_id for m in models) == sorted(x.info.run_id for x in seed_runs.values())
    logged = next(m for m in models if m.source_run_id == seed_runs["0"].info.run_id)
    model = mlflow.pytorch.load_model(logged.model_uri)
    assert tuple(model(torch.zeros(2, 1, 8, 8)).shape) == (2, 10)
    info = mlflow.models.get_model_info(logged.model_uri)
    assert list(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 1, 8, 8]
    version = mlflow.register_model(logged.model_uri, "quickstart-cnn")
    assert int(version.version) == 1
    # The spec that rebuilds it travels with the model.
    files = Path(mlflow.artifacts.download_artifacts(logged.model_uri, dst_path=str(d / "model")))
    assert yaml.safe_load((files / "extra_files" / "spec.yaml").read_text())["model"]["name"] == "cnn"


# --- in a real browser ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1600,1000",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


def wait_for(driver, check, timeout: float = 60.0):
    """Poll ``check(driver)`` until it is truthy; the page renders in steps."""
    end = time.monotonic() + timeout
    while True:
        try:
            value = check(driver)
        except Exception:  # noqa: BLE001  (elements come and go while the page renders)
            value = None
        if value or time.monotonic() > end:
            return value
        time.sleep(0.5)


def shot(driver, tmp_path: Path, name: str) -> None:
    """Keep a screenshot beside the test's files: what a person would have seen."""
    driver.save_screenshot(str(tmp_path / f"{name}.png"))


def test_mlflow_ui_opens_on_the_studys_training_runs(quickstart, browser, tmp_path):
    from mlflow.tracking import MlflowClient
    from selenium.webdriver.common.by import By

    d, r = quickstart.folder, quickstart.study
    uri = f"sqlite:///{d / 'mlflow.db'}"
    exp = MlflowClient(uri).get_experiment_by_name("quickstart")
    # The console names the page to open: the experiment's training runs.
    page = re.search(
        r"then http://127\.0\.0\.1:5000/(#/experiments/\d+/runs\?workflowType=machine_learning)", r.stdout
    ).group(1)
    runs = MlflowClient(uri).search_runs([exp.experiment_id], max_results=100)
    trial_names = {x.info.run_name for x in runs if x.data.tags.get("role") == "trial"}
    port = free_port()
    server = subprocess.Popen(
        [
            console_script("mlflow"),
            "server",
            "--backend-store-uri",
            uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=d,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        import urllib.request

        assert wait_for(None, lambda _: urllib.request.urlopen(f"http://127.0.0.1:{port}/health").status == 200, 120), (
            "mlflow server did not come up"
        )
        browser.get(f"http://127.0.0.1:{port}/{page}")
        body = lambda drv: drv.find_element(By.TAG_NAME, "body").text  # noqa: E731
        # The table's header and the breadcrumb come before its rows (a spinner meanwhile: failed so on a slow
        # run, 2026-12-07): wait for a row's Dataset cell.
        rows = lambda drv: all(w in body(drv) for w in ("Run Name", "quickstart", "digits ("))  # noqa: E731
        assert wait_for(browser, rows, 120), body(browser)
        shot(browser, tmp_path, "mlflow-experiment")
        text = body(browser)
        assert exp.experiment_id in page and "Model training" in text and "Token Usage" not in text  # not GenAI
        assert "digits (" in text and "Training" in text  # the Dataset column: the set, its digest, its context
        # The study's parent run groups its trials: its expander lists them.
        expand = "button[data-component-id*='runnamecellrenderer']"
        wait_for(browser, lambda drv: drv.find_elements(By.CSS_SELECTOR, expand))[0].click()
        assert wait_for(browser, lambda drv: trial_names <= set(re.findall(r"trial_\w+", body(drv))), 60), body(browser)
        shot(browser, tmp_path, "mlflow-runs-expanded")
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)


def test_report_html_renders_its_table_and_every_plot(quickstart, browser, tmp_path):
    from selenium.webdriver.common.by import By

    d = quickstart.folder
    r = run(
        "tune-compare",
        str(d / "runs" / "quickstart"),
        "--out",
        str(tmp_path / "compare"),
        "--mlflow-uri",
        f"sqlite:///{d / 'mlflow.db'}",
        cwd=d,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    browser.get((tmp_path / "compare" / "report.html").as_uri())
    assert wait_for(browser, lambda drv: drv.find_elements(By.TAG_NAME, "table"))
    shot(browser, tmp_path, "report")
    assert "quickstart" in browser.find_element(By.TAG_NAME, "table").text
    images = browser.find_elements(By.TAG_NAME, "img")
    assert images, "report.html has no plots"
    widths = {
        img.get_attribute("alt"): browser.execute_script("return arguments[0].naturalWidth", img) for img in images
    }
    assert all(w > 0 for w in widths.values()), widths
