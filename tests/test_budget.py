"""Compute budgets (search.budget, --budget) and --estimate: parsing, planning from a measured probe,
enforcement, and spent against planned in study.json, the summary and MLflow."""

from __future__ import annotations

import json
import math
import os
import re
import time
import types
from pathlib import Path

import pytest
import yaml

import trainables
from search import SpecError, resolve
from search.spec._budget import final_epochs, parse_budget, plan, search_epochs
from tests.conftest import mlflow_runs, read_rows

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "spaces" / "quickstart.yaml"
SPEC = {
    "experiment": {"name": "b"},
    "data": {"dataset": "digits"},
    "model": {"name": "cnn"},
    "train": {"epochs": 4},
    "space": {"train.lr": {"loguniform": [1e-4, 1e-2]}},
}


@pytest.mark.parametrize(
    "text,amount,unit",
    [
        ("45s", 45, "seconds"),
        ("30m", 1800, "seconds"),
        ("2h", 7200, "seconds"),
        ("1.5h", 5400, "seconds"),
        ("1.5gpu-h", 1.5, "gpu_hours"),
        ("400epochs", 400, "epochs"),
        (" 20 epochs ", 20, "epochs"),
    ],
)
def test_budget_parses(text, amount, unit):
    b = parse_budget(text, "s.yaml")
    assert (b.amount, b.unit) == (pytest.approx(amount), unit)


@pytest.mark.parametrize(
    "text,words",
    [
        ("3 parsecs", "expected a duration like 30m, 2h, 1.5gpu-h or 400epochs, got '3 parsecs'"),
        ("30", "expected a duration like 30m, 2h, 1.5gpu-h or 400epochs, got '30'"),
        ("-5m", "expected a duration like 30m, 2h, 1.5gpu-h or 400epochs, got '-5m'"),
        ("0s", "a budget > 0 must hold, got '0s'"),
        ("2.5epochs", "an epoch budget is a whole number of epochs, got '2.5epochs'"),
    ],
)
def test_bad_budget_is_one_line(text, words):
    with pytest.raises(SpecError) as e:
        parse_budget(text, "s.yaml")
    assert str(e.value) == f"s.yaml: search.budget: {words}"


def test_budget_keys_are_checked_with_the_spec():
    spec = resolve(SPEC, trainables)
    assert spec["search"]["num_samples"] == 1 and spec["search"]["budget"] is None  # no budget: one sample
    spec = resolve({**SPEC, "search": {"budget": "20epochs"}}, trainables)
    assert spec["search"]["num_samples"] is None  # left open: sized from the budget at run time
    assert spec["search"]["budget_split"] is None  # the plan's: the recipe's final training first, the search the rest
    with pytest.raises(SpecError, match=r"search.budget_split: 0 < budget_split < 1 must hold, got budget_split=1.0"):
        resolve({**SPEC, "search": {"budget": "1h", "budget_split": 1.0}}, trainables)
    with pytest.raises(
        SpecError,
        match=r"search.budget: a GPU-hour budget counts the GPUs trials hold: "
        r"resources.gpu > 0 must hold, got gpu=0.0",
    ):
        resolve({**SPEC, "search": {"budget": "2gpu-h"}}, trainables)


def test_cli_bad_budget_exits_2_one_line_nothing_on_disk(tmp_path, cli):
    r = cli("tune-run", str(QUICKSTART), "--dry-run", "--budget", "3 parsecs", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == (
        f"tune-run: error: {QUICKSTART}: search.budget: expected a duration like 30m, 2h, "
        f"1.5gpu-h or 400epochs, got '3 parsecs'"
    )
    assert list(tmp_path.iterdir()) == []


def _probe(epoch_s: float, final_epoch_s: float | None = None, test_s: float = 0.0, speed_s: float = 2.0) -> dict:
    return {
        "epoch_s": epoch_s,
        "final_epoch_s": final_epoch_s or epoch_s,
        "train_images_per_s": 1000.0,
        "test_s": test_s,
        "speed_s": speed_s,  # a final model's speed timing: 2 x final.timing_s
    }


def test_plan_sizes_what_the_spec_leaves_open():
    # A fixed share (search.budget_split): the search gets 0.6 of the budget, final training the rest.
    fixed_split = {"budget_split": 0.6}
    spec = resolve({**SPEC, "search": {"budget": "100epochs", **fixed_split}, "final": {"seeds": [0, 1]}}, trainables)
    p = plan(
        spec,
        parse_budget("100epochs", "s"),
        [_probe(1.0)],
        grid=1,
        parallel=2,
        gpu_hours=trainables.gpu_hours,
        num_samples_given=None,
    )
    # 60 epochs of search hold 15 trials of 4 epochs; 40 epochs of final: 2 seeds, at most a trial's 4 epochs.
    assert p["planned"] == {"search": 60.0, "final": 40.0, "total": 100.0}
    assert (p["num_samples"], p["trials"], p["final_epochs"]) == (15, 15, 4)
    # A wall-clock budget: trials run 2 at once, each paying its start; final seeds share the same parallelism.
    spec = resolve({**SPEC, "search": {"budget": "120s", **fixed_split}, "final": {"seeds": [0, 1]}}, trainables)
    p = plan(
        spec,
        parse_budget("120s", "s"),
        [_probe(2.0, 3.0)],
        grid=1,
        parallel=2,
        gpu_hours=trainables.gpu_hours,
        num_samples_given=None,
    )
    assert p["num_samples"] == 72 // (4 * 2.0 / 2 + 4.0 / 2)  # 72 s / 6 s a trial = 12
    assert p["final_epochs"] == 4  # (48 s - 15 s of fixed costs) / 3 s: 11, capped at the longest trial
    assert p["planned_seconds"]["total"] == 120
    # A grid takes whole repeats; a num_samples the spec sets is kept.
    p = plan(
        spec,
        parse_budget("120s", "s"),
        [_probe(2.0)],
        grid=5,
        parallel=2,
        gpu_hours=trainables.gpu_hours,
        num_samples_given=None,
    )
    assert (p["num_samples"], p["trials"]) == (2, 10)
    p = plan(
        spec,
        parse_budget("120s", "s"),
        [_probe(2.0)],
        grid=1,
        parallel=2,
        gpu_hours=trainables.gpu_hours,
        num_samples_given=50,
    )
    assert (p["num_samples"], p["num_samples_from"]) == (50, "spec")
    assert final_epochs(available=10, per_epoch=3, cap=100) == 3 and final_epochs(1, 3, 100) == 1


def test_asha_trial_cost():
    from search.spec._budget import asha_rungs, promoted, search_cost

    sched = {"name": "asha", "grace_period": 2, "reduction_factor": 2, "max_t": 12, "brackets": 1, "fidelity": "epochs"}
    assert asha_rungs(sched) == [2, 4, 8]
    # Arriving one at a time, the first trial passes every rung (nothing recorded to compare with), the
    # second passes with probability (1 - 0) / 2; at eta = 2 every later one with 1/2 too.
    assert promoted(1, 2) == 1 and promoted(2, 2) == 1.5 and promoted(1.5, 2) == 1.25
    assert promoted(2, 3) == 1.5 and promoted(3, 3) == pytest.approx(1.5 + (2 - 1 * 2 / 3) / 3)
    assert search_cost(sched, 1) == 12  # a lone trial runs to max_t
    # Two trials: epochs 1-2 by both, 3-4 by 1.5, 5-8 by 1.25, 9-12 by 1.125.
    assert search_cost(sched, 2) == pytest.approx(2 * 2 + 1.5 * 2 + 1.25 * 4 + 1.125 * 4)
    # Many trials: each epoch block by 2**-k of them, 2 + 1 + 1 + 0.5 epochs a trial.
    assert search_cost(sched, 10_000) / 10_000 == pytest.approx(4.5, rel=1e-3)
    # Data fidelity: the epochs up to rung r see r/12 of the data.
    assert search_cost({**sched, "fidelity": "data"}, 2) == pytest.approx(
        2 * 2 * 2 / 12 + 1.5 * 2 * 4 / 12 + 1.25 * 4 * 8 / 12 + 1.125 * 4
    )
    for other in ({**sched, "name": "fifo"}, {**sched, "name": "hyperband"}, {**sched, "brackets": 2}):
        assert search_cost(other, 3) == 36


def test_stopper_counts_epochs_and_gpu_hours_across_trials():
    from search.run._study_budget import BudgetStopper

    s = BudgetStopper("epochs", 5)
    assert not s("a", {"epoch": 1}) and not s("b", {"epoch": 1}) and not s("a", {"epoch": 2})
    assert not s.stop_all() and s("b", {"epoch": 3}) and s.exhausted  # 2 + 3 epochs reported
    g = BudgetStopper("gpu_hours", 0.5, gpu=0.25, gpu_hours=trainables.gpu_hours)
    assert not g("a", {"time_total_s": 3600}) and not g("b", {"time_total_s": 3000})
    assert g("b", {"time_total_s": 3600})  # two trials an hour at a quarter GPU: half a GPU-hour


def test_a_resumed_stopper_goes_on_from_what_was_spent_on_its_own_clock():
    """--resume: Tune runs the stopper it pickled with its experiment state; the copy spends from what the
    interrupted run spent (50 s of a 60 s share here), on this process's clock."""
    import pickle

    from search.run._study_budget import BudgetStopper

    s = BudgetStopper("seconds", 60)
    copy = pickle.loads(pickle.dumps(s))  # as Tune restores it
    s.carry_on(50.0, [{"trial_id": "a", "epoch": 3, "time_total_s": 40.0}])
    s.start(time.monotonic())
    assert not copy.stop_all() and 50 <= copy.elapsed() < 55
    s.start(time.monotonic() - 11)  # 11 s into the resumed run: 61 s in all
    assert copy.stop_all() and s.exhausted
    e = BudgetStopper("epochs", 5)
    e.carry_on(0.0, [{"trial_id": "a", "epoch": 4}])
    assert pickle.loads(pickle.dumps(e))("b", {"epoch": 1}) and e.exhausted  # 4 before, 1 now


def test_an_epoch_budget_counts_epochs_of_the_whole_training_split_under_data_fidelity():
    """scheduler.fidelity: data: an epoch on a quarter of the training split is a quarter of an epoch for the plan,
    the stopper and the spend alike (one unit), as the trial side reports it (``data_epochs``)."""
    from search.run._algorithms import rungs
    from search.run._spend import spent_search
    from search.run._study_budget import BudgetStopper
    from search.spec._budget import search_cost, search_scheduler
    from trainables.sections import data_epochs

    spec = resolve(
        {
            **SPEC,
            "train": {"epochs": 12},
            "scheduler": {"name": "asha", "grace_period": 2, "reduction_factor": 2, "fidelity": "data"},
        },
        trainables,
    )
    t = trainables.data_fidelity(spec, rungs(spec), 12)["train"]
    lone = search_cost(search_scheduler(spec["scheduler"], 12), 1)  # a lone trial runs every epoch to max_t
    assert data_epochs(t, 12) == pytest.approx(lone) == pytest.approx(2 * 2 / 12 + 2 * 4 / 12 + 4 * 8 / 12 + 4)
    stopper = BudgetStopper("epochs", lone)
    stopped = [e for e in range(1, 13) if stopper("a", {"epoch": e, "data_epochs": data_epochs(t, e)})]
    assert stopped == [12]  # whole epochs would have spent the share at epoch 8
    rows = [{"epochs": "12", "data_epochs": str(data_epochs(t, 12))}, {"epochs": "2", "data_epochs": "0.3333"}]
    assert spent_search("epochs", rows, {}, 0.0) == pytest.approx(lone + 0.3333)
    assert spent_search("epochs", [{"epochs": "3"}], {}, 0.0) == 3  # fidelity: epochs


def test_validation_is_costed_whole_under_data_fidelity():
    """Each epoch validates on the whole validation set, whatever share of the training split it trains on."""
    from search.spec._budget import TRIAL_START_S, search_cost, search_passes, search_scheduler

    spec = resolve(
        {
            **SPEC,
            "search": {"budget": "600s"},
            "train": {"epochs": 12},
            "scheduler": {"name": "asha", "grace_period": 2, "reduction_factor": 2, "fidelity": "data"},
        },
        trainables,
    )
    budget = parse_budget("600s", "s")
    cheap_val = plan(spec, budget, [{**_probe(2.0), "val_s": 0.0}], 1, 1, trainables.gpu_hours, None)
    dear_val = plan(spec, budget, [{**_probe(2.0), "val_s": 1.5}], 1, 1, trainables.gpu_hours, None)
    assert dear_val["trials"] < cheap_val["trials"]  # same epoch_s, but most of it is not shrunk by the fidelity
    sched = search_scheduler(spec["scheduler"], 12)

    def cost(n: int) -> float:  # training on its rung's share (0.5 s a whole epoch), validating whole (1.5 s)
        return search_cost(sched, n) * 0.5 + search_passes(sched, n) * 1.5 + n * TRIAL_START_S

    assert cost(dear_val["trials"]) <= 600 < cost(dear_val["trials"] + 1)
    assert search_passes(sched, 1) == 12 and search_cost(sched, 1) < 12


def test_streamed_trials_are_planned_at_the_cpus_they_ask_for(tmp_path, monkeypatch):
    """A streamed set's trials ask Ray for resources.cpu plus data.workers: the plan runs as many at once as Ray
    will, not as many as resources.cpu alone would fit."""
    from search.spec._budget import concurrency, probed_cpus
    from tests.conftest import make_image_tree

    monkeypatch.setattr("trainables.folders.CACHE_DIR", tmp_path / "cache")
    make_image_tree(tmp_path / "a", {"cat": 6, "dog": 6}, size=10, split="train")
    make_image_tree(tmp_path / "a", {"cat": 2, "dog": 2}, size=10, split="test", seed=1)
    data = {"dataset": "imagefolder", "root": str(tmp_path / "a"), "image_size": 8, "storage": "stream"}
    spec = resolve(
        {**SPEC, "data": {**data, "workers": 4}, "resources": {"cpu": 2}, "train": {"epochs": 2, "batch_size": 4}},
        trainables,
    )
    probe = trainables.probe(spec, trainables.prepare(spec))
    assert probe["trial_cpus"] == 6 and probed_cpus([probe]) == 6
    assert concurrency(spec, 16, 0, probed_cpus([probe])) == 2  # Ray runs 16 // 6 at once
    assert concurrency(spec, 16, 0) == 8 and concurrency(spec, 4, 0, 6) == 1  # a request over the cluster: capped
    in_memory = resolve(
        {**SPEC, "data": {**data, "storage": "memory", "workers": 4}, "resources": {"cpu": 2}}, trainables
    )
    assert trainables.probe(in_memory, trainables.prepare(in_memory))["trial_cpus"] == 2


def test_final_trainings_fixed_costs_are_paid_once_per_round_of_seeds():
    from search.spec._budget import FINAL_EXTRA_S, final_plan

    spec = resolve({**SPEC, "search": {"budget": "300s"}, "final": {"seeds": [0, 1, 2, 3]}}, trainables)
    fp = final_plan(spec, parse_budget("300s", "s"), 100.0, [_probe(1.0, 2.0)], 1, trainables.gpu_hours)
    # 4 rounds of one seed: 4 x 15 s of fixed costs and speed timing, then 40 s / (2 s x 4 rounds) = 5 epochs
    # (capped at 4).
    assert fp["final_rounds"] == 4
    fp = final_plan(
        spec, parse_budget("300s", "s"), 4 * (FINAL_EXTRA_S + 2.0) + 24.0, [_probe(1.0, 2.0)], 1, trainables.gpu_hours
    )
    assert fp["final_epochs"] == 3  # 24 s left after the fixed costs: 3 epochs of 4 rounds x 2 s


def test_each_round_of_final_seeds_pays_its_test_evaluation():
    """Each seed evaluates the test split after its training (at airbench94's widths with six test-time views,
    60-87 s a seed on a 2-core CPU) and the next round of seeds starts after it: the plan, the recipe's final cost
    the search's share is set from, and each seed's time limit count it once per round, not once per study (where
    the first seed's evaluation took the later seeds' time, and they trained one epoch each)."""
    from search.spec._budget import FINAL_EXTRA_S, final_plan, recipe_final_cost

    spec = resolve({**SPEC, "search": {"budget": "300s"}, "final": {"seeds": [0, 1, 2]}}, trainables)
    probe = _probe(1.0, 2.0, test_s=10.0, speed_s=0.0)
    budget = parse_budget("300s", "s")
    # 3 rounds of one seed, each 13 s fixed + 10 s of testing (no speed timing here): 69 s; 3 rounds x 4 epochs x
    # 2 s = 24 s of training.
    assert recipe_final_cost(spec, budget, [probe], 1, trainables.gpu_hours) == pytest.approx(
        3 * (FINAL_EXTRA_S + 10) + 24
    )
    fp = final_plan(spec, budget, 3 * (FINAL_EXTRA_S + 10.0) + 18.0, [probe], 1, trainables.gpu_hours)
    assert fp["final_epochs"] == 3  # 18 s of training left: 3 epochs of 3 rounds x 2 s
    # Two at once: two rounds pay it, not three.
    fp = final_plan(spec, budget, 2 * (FINAL_EXTRA_S + 10.0) + 16.0, [probe], 2, trainables.gpu_hours)
    assert (fp["final_rounds"], fp["final_epochs"]) == (2, 4)


def test_probe_measures_the_configuration_on_this_device():
    spec = resolve({**SPEC, "model": {"name": "cnn", "conv1": 8, "conv2": 8, "conv3": 8, "hidden": 16}}, trainables)
    pools = trainables.prepare(spec)
    p = trainables.probe(spec, pools)
    assert p["train_images_per_s"] > 0 and p["eval_images_per_s"] > 0 and p["device"] in ("cpu", "cuda")
    assert p["epoch_s"] == pytest.approx(
        p["train_images"] / p["train_images_per_s"] + p["val_images"] / p["eval_images_per_s"]
    )
    assert (p["batch_size"], p["image_size"]) == (128, 8)
    # After a final model's test evaluation, its speed timing: final.timing_s for each of its two timings.
    assert p["speed_s"] == 2.0 and trainables.probe({**spec, "final": {**spec["final"], "timing_s": 0.5}}, pools)[
        "speed_s"
    ] == pytest.approx(1.0)
    # Rates leave the cost as it is; widths change it.
    other = trainables.apply_config(spec, {"model.dropout": 0.3, "train.lr": 0.1})
    assert trainables.probe_shape(other) == trainables.probe_shape(spec)
    assert trainables.probe_shape(trainables.apply_config(spec, {"model.conv1": 16})) != trainables.probe_shape(spec)


def test_the_probe_paces_the_test_evaluation_as_final_models_are_tested_in_fp32(monkeypatch):
    """A run that trains in bf16 validates in bf16, but a final model's test split is predicted in fp32
    (predict_split): the probe's test_s, which the study's deadline keeps time for, is timed in fp32."""
    import time

    from trainables import probing

    real = probing.predict

    def fp32_slower(model, batcher, idx, batch_size, autocast, tta="none"):  # noqa: ANN001, ANN202
        out = real(model, batcher, idx, batch_size, autocast, tta)
        time.sleep((0.0 if autocast else 0.01) * len(idx))
        return out

    monkeypatch.setattr(probing, "predict", fp32_slower)
    small = {"name": "cnn", "conv1": 8, "conv2": 8, "conv3": 8, "hidden": 16}
    spec = resolve({**SPEC, "model": small, "train": {"epochs": 1, "precision": "bf16"}}, trainables)
    pools = trainables.prepare(spec)
    p = trainables.probe(spec, pools)
    n_test, n_val = (len(getattr(trainables.make_splits(pools, spec["data"]), s)) for s in ("test", "val"))
    assert p["arithmetic"].startswith("bf16")
    assert p["test_s"] >= 0.01 * n_test  # at the fp32 pace
    assert p["val_s"] < 0.005 * n_val  # the trials' validation, at the run's own


def test_estimate_prints_throughput_and_plan_and_starts_nothing(tmp_path, cli):
    r = cli(
        "tune-run",
        str(QUICKSTART),
        "--estimate",
        "--budget",
        "60epochs",
        "--set",
        "search.num_samples=null",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout
    # quickstart searches model.hidden (3 widths; dropout is a rate): each width probed once.
    assert sum("images/s training" in line for line in out.splitlines()) == 3, out
    assert "study as written: 1 grid point(s) x num_samples sized from search.budget" in out
    # ASHA (grace 2, factor 2, 12 epochs), trials one after another (test_asha_trial_cost): rungs 2, 4, 8 are
    # reached by n, (n+1)/2, (n+3)/4 trials and (n+7)/8 go on to 12, so n trials cost 4.5 n + 7.5 epochs:
    # 11 fit in 60 (57 epochs, 5.182 a trial).
    assert (
        "budget 60epochs: search 60 epochs fits 11 trials of up to 12 epochs (5.182 on average under the "
        "scheduler); planned 11"
    ) in out
    assert "Ray dashboard" not in out and list(tmp_path.iterdir()) == []  # no Ray, no runs/, no MLflow store
    # With final training: its seconds as the plan counts them, each round's test evaluation and fixed costs in.
    from search.run._estimate import estimate

    lines: list[str] = []
    estimate(
        resolve({**SPEC, "search": {"budget": "300s"}, "final": {"seeds": [0, 1]}}, trainables),
        trainables,
        lines.append,
    )
    assert re.search(
        r"\+ final training: 2 seeds x \d+ epochs, about [\d,]+ s with each round's test evaluation", "\n".join(lines)
    )
    # The digits' 143 validation images cannot tell a 0.03 gain from noise: no search, and its share stretches the
    # recipe's 4 final epochs to the cap, 3x.
    said = "\n".join(lines)
    assert "no search: " in said and "its 143 validation images tell settings apart by 0.118" in said, said
    assert "12 epochs x 2 seeds (from the budget; train.epochs stretched: no search)" in said, said


@pytest.mark.ray
def test_epoch_budget_covers_search_and_final(tmp_path, cli, ray_session):
    """quickstart under 60 epochs with 20 % for the search: ASHA's 6 trials would take 18 epochs, the stopper
    ends them at 12, and final training gets the rest (4 epochs, its longest trial)."""
    r = cli(
        "tune-run",
        str(QUICKSTART),
        "--budget",
        "60epochs",
        "--set",
        "search.budget_split=0.2",
        "--set",
        "search.num_samples=6",
        "--set",
        "train.epochs=4",
        "--set",
        "final.seeds=[0]",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "runs" / "quickstart"
    rows = read_rows(out / "trials.csv")
    cb = json.loads((out / "study.json").read_text())["compute_budget"]
    final = json.loads((out / "final" / "metrics.json").read_text())
    search_epochs = sum(int(row["epochs"]) for row in rows)
    final_epochs_run = sum(len(h) for h in final["history"].values())
    assert search_epochs + final_epochs_run <= 60
    assert cb["planned"] == {"search": 12.0, "final": 48.0, "total": 60.0}
    assert cb["spent"] == {
        "search": search_epochs,
        "final": final_epochs_run,
        "total": search_epochs + final_epochs_run,
    }
    # Cut by the budget: at least its share, at most one epoch more per other running trial (2 CPUs).
    assert 12 <= search_epochs <= 12 + (os.cpu_count() or 1) - 1
    assert cb["ended_by_budget"] and "share of the budget (12 epochs) was spent" in cb["reason"]
    assert {row["status"] for row in rows} <= {"completed", "stopped"}  # the one status rule
    assert final_epochs_run == 4 and cb["final"]["final_epochs_from"] == "budget"
    assert set(cb["spent_seconds"]) == {"search", "final", "total"} and cb["startup_s"] > 0
    assert "budget:      60epochs · planned search 12 epochs" in r.stdout
    assert f"spent   search {search_epochs} epochs" in r.stdout and "the search ended early" in r.stdout
    if "GPU" not in __import__("ray").cluster_resources():  # each warning once, for the search and its final together
        assert r.stdout.count("no GPU visible") == 1 and "warning: no GPU visible to the trials" in r.stdout
    c, runs = mlflow_runs(tmp_path / "mlflow.db", "quickstart")
    study = next(x for x in runs if x.data.tags.get("role") == "study")
    assert study.data.params["budget.planned.search"] == "12.0" and study.data.params["budget.unit"] == "epochs"
    assert study.data.metrics["budget_spent_total"] == search_epochs + final_epochs_run


# Marked alone (2026-12-06): the clock it checks is the stopper's, which ends the search at its budget however loaded
# the machine is, but in the host's slowest phase (its CPU check 5-10x its fast time) with the other worker's Ray
# tests beside it, no trial finished its first epoch within 40 s, and a search with no result has no best (exit 1).
# Alone, 51 of its trials trained in 40 s (2026-12-07): 20 s leaves room for that slowdown and saves 20 s of a
# phase in which the other worker, done with the tests without Ray, waits.
@pytest.mark.ray
@pytest.mark.alone
def test_wall_clock_budget_ends_the_search_in_time(tmp_path, cli, ray_session):
    """A 20 s search (no final section): Tune's time_budget_s ends it. Ray's start, data loading and the probe
    come before the budget's clock (study.json's startup_s, measured); the tolerance on top is Tune stopping
    the running trials and the exports after it, measured at 18 s on a 2-core host under a load average of 20: 45 s here."""
    t0 = time.monotonic()
    r = cli(
        "tune-run",
        str(QUICKSTART),
        "--budget",
        "20s",
        "--set",
        "search.num_samples=300",  # more than 20 s can train, trial processes reused or not
        "--set",
        "train.epochs=3",
        cwd=tmp_path,
    )
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr[-3000:]
    cb = json.loads((tmp_path / "runs" / "quickstart" / "study.json").read_text())["compute_budget"]
    assert elapsed <= 20 + cb["startup_s"] + 45, (elapsed, cb["startup_s"])
    assert cb["ended_by_budget"] and cb["spent_seconds"]["search"] <= 20 + 45
    rows = read_rows(tmp_path / "runs" / "quickstart" / "trials.csv")
    ran = [row for row in rows if int(row["epochs"]) > 0]
    assert len(ran) < 300 and "spent   search" in r.stdout  # the rest were cut before they trained (stopped)
    assert {row["status"] for row in rows} <= {"completed", "stopped"}


# --------------------------------------------------------------------------- training-set fraction as a fidelity


def test_data_fidelity_grows_nested_training_sets_at_the_rungs():
    from search.run._algorithms import rungs
    from trainables.data import fidelity_subset
    from trainables.sections import data_fraction

    spec = resolve(
        {
            **SPEC,
            "train": {"epochs": 12},
            "scheduler": {"name": "asha", "grace_period": 2, "reduction_factor": 2, "fidelity": "data"},
        },
        trainables,
    )
    assert rungs(spec) == [2, 4, 8]
    t = trainables.data_fidelity(spec, rungs(spec), 12)["train"]
    assert [data_fraction(t, e) for e in range(1, 13)] == [2 / 12] * 2 + [4 / 12] * 2 + [8 / 12] * 4 + [1.0] * 4
    assert "_data_rungs" not in spec["train"]  # the study's own spec (best.yaml, study.json) is left as it was
    train = __import__("numpy").arange(100, 700)
    small, large = fidelity_subset(train, 1 / 6, 0), fidelity_subset(train, 1 / 3, 0)
    assert len(small) == 100 and len(large) == 200 and set(small) <= set(large)  # growing data, not a new draw
    hb = resolve({**SPEC, "train": {"epochs": 9}, "scheduler": {"name": "hyperband", "fidelity": "data"}}, trainables)
    assert rungs(hb) == [1, 3]
    with pytest.raises(
        SpecError,
        match="scheduler.fidelity: data grows the training set at asha's or hyperband's "
        "rungs; scheduler.name is 'fifo'",
    ):
        resolve({**SPEC, "scheduler": {"fidelity": "data"}}, trainables)


@pytest.mark.ray
def test_data_fidelity_trials_train_on_their_rungs_share(tmp_path, ray_session):
    from search import run_study
    from tests.conftest import small_spec

    spec = small_spec(
        tmp_path,
        "fidelity",
        train={"epochs": 4},
        search={"num_samples": 2},
        space={"train.lr": {"loguniform": [1e-3, 1e-2]}},
        scheduler={"name": "asha", "grace_period": 1, "reduction_factor": 2, "fidelity": "data"},
    )
    res = run_study(spec, trainables, file="fidelity.yaml", log=lambda *_: None)
    seen, trained = {}, {}
    for trial_dir in res.out_dir.glob("trial_*"):
        for line in (trial_dir / "result.json").read_text().splitlines():
            r = json.loads(line)
            seen.setdefault(int(r["epoch"]), set()).add((r["data_fraction"], r["train_images"]))
            trained[r["trial_id"]] = trained.get(r["trial_id"], 0.0) + r["data_fraction"]
    # trials.csv counts what they trained in epochs of the whole training split (an epoch budget's unit).
    rows = read_rows(res.out_dir / "trials.csv")
    assert {r["trial_id"]: pytest.approx(float(r["data_epochs"])) for r in rows} == trained
    full = max(n for e in seen.values() for _, n in e)
    # Rungs at epochs 1 and 2: a quarter, then half of the training split; all of it after the last rung.
    assert {f for f, _ in seen[1]} == {0.25} and {f for f, _ in seen[2]} == {0.5}
    assert {n for _, n in seen[1]} == {-(-full // 4)} and {n for _, n in seen[2]} == {-(-full // 2)}
    assert all(f == 1.0 and n == full for e in (3, 4) for f, n in seen.get(e, ()))
    assert "_data_rungs" not in (res.out_dir / "best.yaml").read_text()
    # best.yaml is one configuration (fifo): it trains on all the data and loads as a spec (--final retrains it).
    from search import load_spec

    best = load_spec(res.out_dir / "best.yaml", trainables)
    assert (best["scheduler"]["name"], best["scheduler"]["fidelity"]) == ("fifo", "epochs")


def test_search_epochs_auto_shortens_trials_until_enough_fit():
    from search.spec._budget import MIN_TRIALS

    spec = resolve(
        {**SPEC, "search": {"budget": "34epochs", "epochs": "auto", "budget_split": 0.6}, "final": {"seeds": [0]}},
        trainables,
    )
    # FIFO, 20.4 epochs of search: 4-epoch trials fit 5 times, 3-epoch ones 6, 2-epoch ones 10 >= MIN_TRIALS.
    assert MIN_TRIALS == 10
    p = plan(
        spec,
        parse_budget("34epochs", "s"),
        [_probe(1.0)],
        grid=1,
        parallel=1,
        gpu_hours=trainables.gpu_hours,
        num_samples_given=None,
    )
    assert (p["trial_epochs"], p["trial_epochs_from"], p["num_samples"], p["search"]) == (2, "budget", 10, "planned")
    assert p["final_epochs"] == 4  # final training keeps train.epochs as its limit: 13.6 epochs, 1 seed, at most 4
    # Without a budget, auto is train.epochs (as num_samples left open is 1).
    assert search_epochs(resolve({**SPEC, "search": {"epochs": "auto"}}, trainables), None) == 4
    # A budget that already fits MIN_TRIALS full-length trials keeps them whole.
    spec = resolve({**SPEC, "search": {"budget": "100epochs", "epochs": "auto"}}, trainables)
    p = plan(
        spec,
        parse_budget("100epochs", "s"),
        [_probe(1.0)],
        grid=1,
        parallel=1,
        gpu_hours=trainables.gpu_hours,
        num_samples_given=None,
    )
    assert (p["trial_epochs"], p["num_samples"]) == (4, 25)  # no final section: the search has all 100
    spec = resolve({**SPEC, "search": {"budget": "100epochs", "epochs": 2}}, trainables)
    p = plan(
        spec,
        parse_budget("100epochs", "s"),
        [_probe(1.0)],
        grid=1,
        parallel=1,
        gpu_hours=trainables.gpu_hours,
        num_samples_given=None,
    )
    assert (p["trial_epochs"], p["trial_epochs_from"], p["num_samples"]) == (2, "spec", 50)


@pytest.mark.parametrize(
    "search,message",
    [
        (
            {"epochs": "short", "budget": "1h"},
            "search.epochs: a whole number of epochs, auto (sized from search.budget) "
            "or null (train.epochs), got 'short'",
        ),
        ({"epochs": 5}, "search.epochs: 1 <= epochs <= train.epochs must hold, got epochs=5, train.epochs=4"),
    ],
)
def test_bad_search_epochs(search, message):
    with pytest.raises(SpecError, match=re.escape(message)):
        resolve({**SPEC, "search": search}, trainables)
    with pytest.raises(SpecError, match="the space searches train.epochs"):
        resolve({**SPEC, "search": {"epochs": 2}, "space": {"train.epochs": {"choice": [2, 4]}}}, trainables)


def test_cli_bad_search_epochs_exits_2_one_line_nothing_on_disk(tmp_path, cli):
    r = cli("tune-run", str(QUICKSTART), "--set", "search.epochs=20", cwd=tmp_path)
    assert r.returncode == 2 and list(tmp_path.iterdir()) == []
    assert r.stderr.strip() == (
        f"tune-run: error: {QUICKSTART}: search.epochs: 1 <= epochs <= train.epochs must "
        f"hold, got epochs=20, train.epochs=12"
    )


@pytest.mark.ray
def test_short_search_trials_and_a_full_length_best_yaml(tmp_path, cli, ray_session):
    """search.epochs=3 on the quickstart (12 epochs): its trials train 3 epochs with the schedule's shape and
    end completed; best.yaml keeps the recipe's 12 epochs for final training."""
    r = cli("tune-run", str(QUICKSTART), "--set", "search.epochs=3", "--set", "search.num_samples=3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "runs" / "quickstart"
    rows = read_rows(out / "trials.csv")
    assert len(rows) == 3 and {int(row["epochs"]) for row in rows} <= {2, 3}  # ASHA's rung 2 may stop one
    assert any(row["status"] == "completed" and int(row["epochs"]) == 3 for row in rows)
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["train"]["epochs"] == 12
    c, runs = mlflow_runs(tmp_path / "mlflow.db", "quickstart")
    assert {x.data.params.get("train.epochs") for x in runs if x.data.tags.get("role") == "trial"} == {"3"}


def test_shortened_trials_keep_the_schedules_shape():
    spec = resolve(
        {**SPEC, "train": {"epochs": 14, "warmup_epochs": 2, "schedule": "multistep", "milestones": [7, 10]}},
        trainables,
    )
    short = trainables.shortened(spec, 7)
    assert (short["train"]["epochs"], short["train"]["warmup_epochs"], short["train"]["milestones"]) == (7, 1, [4, 5])
    assert spec["train"]["epochs"] == 14, "a copy: the study's own spec keeps its length"
    assert trainables.shortened(spec, 14)["train"] == spec["train"]


def test_final_training_at_fewer_epochs_keeps_the_schedules_shape():
    from trainables.final import final_spec

    spec = resolve({**SPEC, "train": {"epochs": 14, "warmup_epochs": 2}, "final": {"epochs": 4}}, trainables)
    assert (final_spec(spec, 0)["train"]["epochs"], final_spec(spec, 0)["train"]["warmup_epochs"]) == (4, 1)
    # and more (a budget's stretch, or final.epochs written longer): the warm-up keeps its share of the run too
    spec = resolve({**SPEC, "train": {"epochs": 14, "warmup_epochs": 2}, "final": {"epochs": 20}}, trainables)
    assert (final_spec(spec, 0)["train"]["epochs"], final_spec(spec, 0)["train"]["warmup_epochs"]) == (20, 3)


@pytest.mark.ray
def test_a_resumed_study_spends_what_is_left_of_its_budget(tmp_path, ray_session, monkeypatch):
    """Interrupted (SIGTERM) after its first trial, a study under an epoch budget resumes with the budget it started
    with: the search's share is spent once over both runs, not again in the second, and study.json records it.
    Searched by Optuna, as the shipped budgeted specs are: its searcher resumes from Tune's state too."""
    import signal

    from search import run_study
    from tests.conftest import small_spec

    spec = small_spec(
        tmp_path,
        "resumed",
        train={"epochs": 4},
        space={"train.lr": {"loguniform": [1e-3, 1e-2]}},
        # one trial at a time: the stopper sees every epoch as it is reported, so the share is met exactly
        search={
            "algorithm": "optuna",
            "num_samples": 6,
            "max_concurrent": 1,
            "budget": "20epochs",
            "budget_split": 0.7,
        },
        scheduler={"name": "fifo"},
        final={"seeds": [0]},  # final training takes the rest of the budget
    )
    from search.run._tune_parts import LastStep

    started, sent = [], []

    def stop_as_the_second_trial_starts(self, iteration, trials, trial, **info) -> None:
        """As a job scheduler stops the driver, once a trial has ended and the next one runs: from Tune's own loop
        (a thread watching the trials' files lost the race once to the next trials, which ended the search)."""
        started.append(trial.trial_id)
        if len(started) == 2 and not sent:
            sent.append(trial.trial_id)
            os.kill(os.getpid(), signal.SIGTERM)

    with monkeypatch.context() as m:
        m.setattr(LastStep, "on_trial_start", stop_as_the_second_trial_starts, raising=False)
        first = run_study(spec, trainables, file="resumed.yaml", log=lambda *_: None)
    assert sent and first.unfinished, "the study was not interrupted"
    res = run_study(spec, trainables, file="resumed.yaml", resume=True, log=lambda *_: None)
    cb = json.loads((res.out_dir / "study.json").read_text())["compute_budget"]
    search_epochs = sum(int(row["epochs"]) for row in read_rows(res.out_dir / "trials.csv"))
    assert cb["planned"]["search"] == 14.0 and search_epochs == 14  # 4 before the interruption, 10 after
    assert cb["spent"]["search"] == 14 and cb["ended_by_budget"], cb
    assert res.compute_budget is not None and res.compute_budget["planned"]["final"] == 6.0  # final is sized


# --------------------------------------------------------------------------- a budget is a promise


@pytest.mark.parametrize("epoch_s,drift", [(0.25, 0.0), (0.3, 0.0), (0.33, 0.02), (0.25, 0.08)])
def test_a_seed_slower_than_planned_ends_within_its_time_limit_with_its_schedule_decayed(monkeypatch, epoch_s, drift):
    """A seed whose epochs are slower than its plan re-plans between epochs: it trains the epochs that fit its
    final.time_limit_s, its cosine schedule ending at its new last epoch, rather than stopping mid-schedule — also
    when the machine keeps slowing down (``drift`` per epoch) and the last re-plan comes as the last epoch starts
    (that epoch's rate is then the new plan's, not the one the step before it set). The engine's clock is the
    test's, each epoch ``epoch_s`` of it and more with the drift, so the re-plans are the same on any machine."""
    import trainables.engine as engine
    from trainables.final import final_spec

    clock, real, done = [0.0], engine.train_epoch, [0]
    slow = epoch_s * (1 + drift * 40)

    def slower(*args, **kwargs):  # this machine is slower than the probe measured
        clock[0] += epoch_s * (1 + drift * done[0])
        done[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "train_epoch", slower)
    monkeypatch.setattr(engine, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    spec = resolve(
        {
            **SPEC,
            "data": {"dataset": "synthetic", "image_size": 8, "num_classes": 2, "num_samples": 128},
            "train": {"epochs": 40, "schedule": "cosine", "warmup_epochs": 4, "lr": 0.01},
            "final": {"seeds": [0], "time_limit_s": 4.0},
        },
        trainables,
    )
    s = final_spec(spec, 0)
    res = engine.fit(s, trainables.prepare(s), merge_val=True)
    trained = len(res.history)
    assert res.planned_epochs == 40 and 2 <= trained < 40
    assert res.train_seconds <= 4.0 * 1.05 + slow  # within the limit, give or take one epoch's variation
    assert s["train"]["epochs"] == trained and s["train"]["warmup_epochs"] == round(4 * trained / 40)
    # The last epoch ran at the end of a cosine schedule of the new length: the rate decayed as the recipe's would.
    warm = s["train"]["warmup_epochs"]
    end = 0.5 * (1 + math.cos(math.pi * (trained - 1 - warm) / max(1, trained - warm)))
    assert res.history[-1]["lr"] == pytest.approx(0.01 * end) and end < 0.2
    # Without a limit nothing changes: the recipe's 40 epochs.
    assert "_time_limit_s" not in final_spec({**spec, "final": {**spec["final"], "time_limit_s": None}}, 0)["train"]


def _on_the_tests_clock(monkeypatch, epoch_seconds, one_off_s: float = 0.0) -> None:
    """The engine's clock is the test's: each batch moves it by its share of ``epoch_seconds(now)``, one epoch's
    seconds on a machine slower than the probe measured, so re-plans are the same on any machine; the process's
    first batch by ``one_off_s`` more (kernel selection, weight reorders, the loader's start)."""
    import trainables.batches as batches
    import trainables.engine as engine

    clock, real_batches, one_off = [0.0], batches.Batcher.batches, [one_off_s]

    def paced(self, order, batch_size, *args, **kwargs):
        n = math.ceil(len(order) / batch_size)
        for batch in real_batches(self, order, batch_size, *args, **kwargs):
            clock[0] += epoch_seconds(clock[0]) / n + (one_off.pop() if one_off else 0.0)
            yield batch

    monkeypatch.setattr(batches.Batcher, "batches", paced)
    monkeypatch.setattr(engine, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))


def _paced_seed(schedule_per: str) -> dict:
    """A final seed of a 40-epoch cosine recipe (batches of 8 of 160 images) with a 4 s time limit."""
    from trainables.final import final_spec

    spec = resolve(
        {
            **SPEC,
            "data": {"dataset": "synthetic", "image_size": 8, "num_classes": 2, "num_samples": 160},
            "train": {"epochs": 40, "schedule": "cosine", "warmup_epochs": 4, "lr": 0.01, "batch_size": 8},
            "final": {"seeds": [0], "time_limit_s": 4.0},
        },
        trainables,
    )
    return final_spec({**spec, "train": {**spec["train"], "schedule_per": schedule_per}}, 0)


@pytest.mark.parametrize(
    "epoch_s,drift,late",
    # the last: 5 epochs, the 4th slower, the 5th then no longer fits its pace (cnn.yaml's seed 0 of 2026-12-05)
    [(0.3, 0.0, 1.0), (0.25, 0.08, 1.0), (0.25, 0.3, 1.0), (0.25, 0.0, 1.8), (0.8, 0.0, 1.2)],
)
def test_a_schedule_stepped_per_batch_ends_on_the_clock_decayed_however_slow_the_last_epoch(
    monkeypatch, epoch_s, drift, late
):
    """With schedule_per: batch a seed's time limit is also a floor under its schedule: the part of an epoch that fits
    is planned too, and the schedule is never behind the clock, so the run ends at its limit with its rate decayed —
    also when the last epochs turn out slower than the pace planned from (``drift``: each epoch slower than the one
    before; ``late``: every batch slower by that factor in the run's last 25 %), where a plan from the pace so far
    leaves time unused, runs past the limit or stops an epoch early at an undecayed rate. The clock is the test's:
    each batch takes its share of an epoch's ``epoch_s``."""
    import trainables.engine as engine

    epochs_begun, factors = [0], []
    real_epoch, real_factor = engine.train_epoch, engine.batch_factor

    def counted(*args, **kwargs):
        epochs_begun[0] += 1
        return real_epoch(*args, **kwargs)

    def recorded(*args, **kwargs):
        factors.append(real_factor(*args, **kwargs))
        return factors[-1]

    monkeypatch.setattr(engine, "train_epoch", counted)
    monkeypatch.setattr(engine, "batch_factor", recorded)
    _on_the_tests_clock(
        monkeypatch, lambda now: epoch_s * (1 + drift * (epochs_begun[0] - 1)) * (late if now >= 3.0 else 1.0)
    )
    s = _paced_seed("batch")
    res = engine.fit(s, trainables.prepare(s), merge_val=True)
    step = epoch_s * (1 + drift * len(res.history)) * late / math.ceil(len(res.splits.train) / 8)
    assert res.planned_epochs == 40 and 2 <= len(res.history) < 40
    assert factors[-1] < 0.02  # the last step trained at the end of its cosine: decayed, not cut off mid-schedule
    assert 4.0 - step <= res.train_seconds <= 4.0 + step  # the whole limit, and no more than a step past it
    # The warm-up reached the recipe's rate, and from there the rate only fell: a re-plan never raised it again (but
    # by the rounding of a rescaled warm-up to whole epochs, under 1 % of the peak). A plan re-scaled to under half
    # a warm-up epoch has none (the last case, 5 of the recipe's 40 epochs: 0.5 of its 4 rounds to 0): its first
    # epoch warmed up under the longer plan, and the next starts on the cosine, one epoch down (0.90 of 5; the
    # clock's progress may run a little ahead of the batch's).
    peak, n = factors.index(max(factors)), s["train"]["epochs"]
    assert max(factors) > (0.99 if s["train"]["warmup_epochs"] else 0.5 * (1 + math.cos(math.pi / n)) - 0.02)
    ups = [(i, a, b) for i, (a, b) in enumerate(zip(factors[peak:], factors[peak + 1 :])) if b > a + 0.01]
    assert not ups, (peak, len(factors), ups[:10])


@pytest.mark.parametrize(
    "epoch_s,late",
    # the second: from 3 s on every epoch 1.8x slower, so the last planned one no longer fits whole (the pace so far
    # lags); the third: epochs of 0.8 s, the last ones 1.2x slower; the fourth: from 3 s on 5x slower, so an epoch
    # planned to end well before the limit runs past it (a host slowing down mid-epoch), and the run stopped there
    # at an undecayed rate, 0.43 s past its limit
    [(0.3, 1.0), (0.25, 1.8), (0.8, 1.2), (0.3, 5.0)],
)
def test_a_schedule_stepped_per_epoch_ends_its_last_epoch_on_the_clock_at_its_last_rate(monkeypatch, epoch_s, late):
    """With schedule_per: epoch (the default) a seed re-plans whole epochs between epochs, and its last epoch ends
    on the clock: where the last planned epoch no longer fits whole (the epochs before it ran slower than the pace
    it was planned from), the part that fits is trained as that last epoch, at the schedule's last rate — not a
    run stopped after an epoch trained at a rate of the longer plan, nor one that runs past its limit; and an epoch
    before the last that the host slows is cut short in time for the epochs after it (recipe.epoch_ends_at). The
    clock is the test's: each batch takes its share of an epoch's ``epoch_s``."""
    import trainables.engine as engine

    _on_the_tests_clock(monkeypatch, lambda now: epoch_s * (late if now >= 3.0 else 1.0))
    s = _paced_seed("epoch")
    res = engine.fit(s, trainables.prepare(s), merge_val=True)
    trained, step = len(res.history), epoch_s * late / math.ceil(len(res.splits.train) / 8)
    assert res.planned_epochs == 40 and 2 <= trained < 40
    assert s["train"]["epochs"] == trained, "the last epoch trained is the plan's last"
    warm = s["train"]["warmup_epochs"]
    end = 0.5 * (1 + math.cos(math.pi * (trained - 1 - warm) / max(1, trained - warm)))
    assert res.history[-1]["lr"] == pytest.approx(0.01 * end) and end < 0.1, [h["lr"] for h in res.history]
    assert 4.0 - epoch_s * late <= res.train_seconds <= 4.0 + step  # at most one batch past the limit


def test_a_seed_started_past_its_deadline_trains_its_first_epoch_whole_with_a_schedule_stepped_per_batch(monkeypatch):
    """A seed whose time is already up when it starts (a slow start under a budget's deadline: clamp_to_deadline
    leaves it a limit of 1 ms) trains its first epoch whole and ends, as it does per epoch: the clock does not cut
    it to one step at a rate of 0."""
    import trainables.engine as engine
    from trainables.final import final_spec

    steps = []
    real_factor = engine.batch_factor
    monkeypatch.setattr(engine, "batch_factor", lambda *a, **k: steps.append(1) or real_factor(*a, **k))
    spec = resolve(
        {
            **SPEC,
            "data": {"dataset": "synthetic", "image_size": 8, "num_classes": 2, "num_samples": 160},
            "train": {"epochs": 5, "schedule": "cosine", "schedule_per": "batch", "batch_size": 8},
            "final": {"seeds": [0], "time_limit_s": 60.0},
        },
        trainables,
    )
    s = final_spec(spec, 0)
    s["train"]["_ends_by"] = time.time() - 30.0  # the study's deadline for final training, passed
    res = engine.fit(s, trainables.prepare(s), merge_val=True)
    assert len(res.history) == 1 and len(steps) == math.ceil(len(res.splits.train) / 8)


def test_a_seeds_time_limit_ends_by_the_studys_deadline_and_the_moment_is_not_written_with_its_model(tmp_path):
    """A budget's deadline for final training (the study's deadline less what follows training) caps a seed's time
    limit when its run starts: a slow start (worker, data, model) shortens the seed, not the promise. A seed left
    under half its share is not trained (OutOfTime; a run past its deadline otherwise trains its first epoch and
    ends). The moment and the limits are not settings: the model folder's spec has none of them, and tune-eval
    re-checks the model from it."""
    from trainables.final import OutOfTime, final_spec, train_final
    from trainables.recipe import clamp_to_deadline, too_late

    t = {"_time_limit_s": 100.0, "_ends_by": time.time() + 10.0}
    clamp_to_deadline(t)
    assert 9.0 < t["_time_limit_s"] <= 10.0
    t = {"_time_limit_s": 5.0, "_ends_by": time.time() + 10.0}
    clamp_to_deadline(t)
    assert t["_time_limit_s"] == 5.0  # the seed's own share is shorter
    t = {"_ends_by": time.time() - 30.0}
    clamp_to_deadline(t)
    assert 0 < t["_time_limit_s"] < 0.01
    t = {"_time_limit_s": 5.0}
    clamp_to_deadline(t)
    assert t == {"_time_limit_s": 5.0}  # no deadline: the share alone
    spec = resolve(
        {
            **SPEC,
            "data": {"dataset": "synthetic", "image_size": 8, "num_classes": 2, "num_samples": 128},
            "train": {"epochs": 5, "schedule": "cosine"},
            "final": {"seeds": [0], "time_limit_s": 60.0, "timing_s": 0.2},
        },
        trainables,
    )
    past = time.time() - 1.0
    assert final_spec(spec, 0, past)["train"]["_ends_by"] == past and "_ends_by" not in final_spec(spec, 0)["train"]
    # Under half of its 60 s share left (29 s), or none: not trained, and no folder; 31 s: trained.
    assert too_late({"_time_limit_s": 60.0, "_ends_by": time.time() + 31.0}) == ""
    assert too_late({"_time_limit_s": 60.0}) == too_late({"_ends_by": past}) == ""  # a share and a deadline, or none
    late = too_late({"_time_limit_s": 60.0, "_ends_by": time.time() + 29.0})
    assert late.startswith("not trained: 29 s of its 60 s share were left before the budget's deadline"), late
    pools = trainables.prepare(spec)
    with pytest.raises(OutOfTime, match="^final seed 0: not trained: 0 s of its 60 s share"):
        train_final(spec, pools, 0, tmp_path / "0", ends_by=past)
    assert not (tmp_path / "0").exists()
    soon = time.time() + 40.0  # 40 s of the 60: trained, its limit the 40 s to the deadline
    m = train_final(spec, pools, 0, tmp_path / "0", ends_by=soon)
    training = m["training"]
    assert 30.0 < training["time_limit_s"] <= 40.0 and training["time_limit_s_planned"] == 60.0  # as it ran; its share
    saved = yaml.safe_load((tmp_path / "0" / "spec.yaml").read_text())
    assert not [k for k in saved["train"] if k.startswith("_")] and "ends_by" not in saved["final"]
    # The model folder's spec is one tune-eval resolves (it refused the limits' keys as unknown before).
    from search.cli import eval_main

    assert eval_main([str(tmp_path / "0")]) == 0


def test_a_seed_faster_than_planned_lengthens_towards_the_recipe_early_in_its_run():
    """The budget sized 8 of the recipe's 14 epochs, and the seed runs faster than the probe said: it lengthens,
    within its first third, to the epochs that fit at a pace 10 % slower than measured, never past the recipe's;
    later, or with its own planned schedule as the base (final.epochs a user gave), it does not; slower, it
    shortens, scaled from the base. Until a second epoch shows the pace, the first's counts without its one-off
    costs (``first_pace``, measured by the engine), or whole where they are not known."""
    from trainables.recipe import replan_to_time_limit

    recipe = {"epochs": 14, "warmup_epochs": 2, "milestones": [7, 11]}

    def planned(base: dict = recipe) -> dict:
        return {"epochs": 8, "warmup_epochs": 1, "milestones": [4, 6], "_time_limit_s": 100.0, "_schedule_base": base}

    t = planned()
    replan_to_time_limit(t, 1, 1, 5.0, 8, first_pace=3.75)  # 95 s left at 3.75 s an epoch (x 1.1): 23 more; 14
    assert (t["epochs"], t["warmup_epochs"], t["milestones"]) == (14, 2, [7, 11])
    t = planned()
    replan_to_time_limit(t, 2, 2, 22.0, 8, first_s=12.0)  # 78 s left at 10 s an epoch (x 1.1): 7 more, 9 in all
    assert (t["epochs"], t["warmup_epochs"], t["milestones"]) == (9, 1, [4, 7])  # scaled from the recipe's
    replan_to_time_limit(t, 3, 3, 30.0, 8, first_s=12.0)  # room for 10, but past the third of the 8 planned
    assert t["epochs"] == 9
    t = planned()
    replan_to_time_limit(t, 3, 3, 15.0, 8)  # past the first third: a longer schedule would raise a decayed rate
    assert t["epochs"] == 8
    own = {"epochs": 8, "warmup_epochs": 1, "milestones": [4, 6]}
    t = planned(own)
    replan_to_time_limit(t, 1, 1, 5.0, 8, first_pace=3.75)  # final.epochs given: its own 8 is the base, the most
    assert t["epochs"] == 8
    t = planned()
    replan_to_time_limit(t, 2, 2, 40.0, 8, first_s=20.0)  # 20 s an epoch: 60 s left fit 3 more, 5 in all
    assert (t["epochs"], t["warmup_epochs"], t["milestones"]) == (5, 1, [2, 4])
    # The first epoch (60 s of a 280 s limit, 5 planned; 16 s of it its first step's one-off costs) counts as 44 s:
    # 4 more fit, nothing is cut; counted whole, 3 would (cut to 4); the second (41 s) shows the pace: still 5.
    five = {"epochs": 5, "warmup_epochs": 1, "milestones": []}
    t = {**five, "_time_limit_s": 280.0, "_schedule_base": five}
    replan_to_time_limit(t, 1, 1, 60.0, 5, first_pace=44.0)
    assert t["epochs"] == 5
    replan_to_time_limit(t, 2, 2, 101.0, 5, first_s=60.0)
    assert t["epochs"] == 5
    t = {**five, "_time_limit_s": 280.0, "_schedule_base": five}
    replan_to_time_limit(t, 1, 1, 60.0, 5)
    assert t["epochs"] == 4
    # A ViT seed planned 3 of its recipe's 20 epochs (a 30-minute study): after a first epoch of 165 s of its 560,
    # with no one-off costs, 2.2 more fit (at its pace, 10 % slower). A schedule stepped per batch grows by the part
    # too (the clock ends it, its rate decayed), as it shortens; one stepped per epoch by whole epochs only.
    vit = {"epochs": 20, "warmup_epochs": 2, "milestones": [], "schedule": "cosine"}
    for per, grown in (("batch", 4), ("epoch", 3)):
        t = {**vit, "epochs": 3, "warmup_epochs": 0, "schedule_per": per, "_time_limit_s": 560.0}
        t["_schedule_base"] = {**vit, "schedule_per": per}
        replan_to_time_limit(t, 1, 1, 165.0, 3, first_pace=165.0)
        assert t["epochs"] == grown, per


@pytest.mark.parametrize(
    "one_off,grown",
    # a first epoch no slower than the next (the ViT; most CNN seeds measured): 3.7 s left at 0.3 s an epoch (x 1.1)
    # fit 11 more, 12 in all (a fixed 0.75 of the first epoch planned 15, and the second epoch cut them to 13); a
    # first step paying 3 epochs' time once: 2.8 s left at 0.3 s fit 8 more, 9 (counted whole, or at 0.75: none)
    [(0.0, 12), (0.9, 9)],
)
def test_a_seeds_first_epoch_paces_its_growth_without_its_first_steps_one_off_costs(monkeypatch, one_off, grown):
    """A final seed sized to 4 of its recipe's 40 epochs, faster than planned, grows after its first epoch to the
    epochs that fit at that epoch's pace measured without its first step's one-off costs (over a typical step's) —
    not a fixed share of the epoch, which planned too many where the first epoch costs no more than the next (and
    the next epoch cut them back: the rate's path moved twice), and too few where its one-off costs are larger.
    Once planned, the length holds to the end. The clock is the test's: 0.3 s an epoch."""
    import trainables.engine as engine

    _on_the_tests_clock(monkeypatch, lambda now: 0.3, one_off)
    plans, real = [], engine.replan_to_time_limit
    monkeypatch.setattr(engine, "replan_to_time_limit", lambda t, *a: (real(t, *a), plans.append(int(t["epochs"]))))
    spec = resolve(
        {
            **SPEC,
            "data": {"dataset": "synthetic", "image_size": 8, "num_classes": 2, "num_samples": 160},
            "train": {"epochs": 40, "schedule": "cosine", "warmup_epochs": 4, "lr": 0.01, "batch_size": 8},
            "final": {"seeds": [0], "epochs": 4, "time_limit_s": 4.0, "fill_time_limit": True},
        },
        trainables,
    )
    from trainables.final import final_spec

    s = final_spec(spec, 0)
    res = engine.fit(s, trainables.prepare(s), merge_val=True)
    assert plans[0] == 4 and set(plans[1:]) == {grown}, plans  # the first: before any epoch, nothing to pace
    assert len(res.history) == grown and res.train_seconds <= 4.0


def test_the_budget_lets_only_the_final_epochs_it_sized_grow():
    """size_final (what a wall-clock budget leaves final training): epochs the plan sized may grow back towards
    the recipe's (final.fill_time_limit); a final.epochs the spec gives is kept, and so is an epoch budget's plan;
    a wall-clock budget gives the seeds the moment their training must end by."""
    from types import SimpleNamespace

    from search.run._final import size_final
    from search.spec._budget import FINAL_AFTER_S, FINAL_EXTRA_S

    probed: list[dict] = []

    def probe(spec, pools):  # the real probe, its figures kept
        probed.append(trainables.probe(spec, pools))
        return probed[-1]

    backend = SimpleNamespace(probe=probe, gpu_hours=trainables.gpu_hours)
    for final, unit, grows in (({}, "60s", True), ({"epochs": 2}, "60s", False), ({}, "40epochs", False)):
        spec = resolve({**SPEC, "final": {"seeds": [0], **final}}, trainables)
        pools = trainables.prepare(spec)
        before = time.time()
        sized = size_final(spec, backend, pools, {"budget": unit, "available": 60.0}, {"CPU": 2}, lambda *_: None)
        after = time.time()
        assert bool(spec["final"]["fill_time_limit"]) is grows, (final, unit)
        assert (spec["final"]["time_limit_s"] is not None) is (unit == "60s"), (final, unit)
        if unit == "60s":  # one round of one seed: what is left less its fixed costs and its test evaluation
            round_s = FINAL_EXTRA_S + probed[-1]["test_s"] + probed[-1]["speed_s"]
            assert spec["final"]["time_limit_s"] == pytest.approx(max(1.0, 60.0 - round_s))
        # The seeds' deadline: from the moment before the probe, what is left less what follows training.
        if unit == "60s":
            after_training = FINAL_AFTER_S + probed[-1]["test_s"] + probed[-1]["speed_s"]
            assert before + 60.0 - after_training <= sized["ends_by"] <= after + 60.0 - after_training
        else:  # an epoch budget promises epochs, not a moment
            assert sized["ends_by"] is None


def test_a_budget_sized_final_fills_its_time_limit_and_records_the_longer_run(monkeypatch):
    """Through final training: 2 epochs planned of the recipe's 6, a generous time limit: the seed trains the
    recipe's 6, its linear schedule decayed at the end, and metrics.json says it was re-planned."""
    import trainables.engine as engine
    from trainables.final import final_spec, training_record

    spec = resolve(
        {
            **SPEC,
            "data": {"dataset": "synthetic", "image_size": 8, "num_classes": 2, "num_samples": 128},
            "train": {"epochs": 6, "schedule": "linear", "lr": 0.01},
            "final": {"seeds": [0], "epochs": 2, "time_limit_s": 600.0, "fill_time_limit": True},
        },
        trainables,
    )
    s = final_spec(spec, 0)
    assert s["train"]["epochs"] == 2 and s["train"]["_schedule_base"]["epochs"] == 6
    res = engine.fit(s, trainables.prepare(s), merge_val=True)
    assert res.planned_epochs == 2 and len(res.history) == 6 and res.history[-1]["lr"] == pytest.approx(0.01 / 6)
    record = training_record(spec["final"], res, s["train"]["_time_limit_s"])
    assert record["replanned_to_time_limit"] and record["epochs"] == 6 and record["epochs_planned"] == 2
    # Not set (final.epochs from the spec): the planned 2.
    spec["final"]["fill_time_limit"] = False
    assert len(engine.fit(final_spec(spec, 0), trainables.prepare(spec), merge_val=True).history) == 2


@pytest.mark.ray
@pytest.mark.alone  # a 5 % wall clock: another study on the same 2 cores slows final training's fixed costs too
def test_a_study_on_a_machine_slower_than_its_probe_ends_within_its_budget(tmp_path, cli, ray_session, monkeypatch):
    """The probe says epochs are 20x cheaper than they are (a machine slower than its probe): the plan gives final
    training every epoch of the recipe, yet the study ends within 5 % of its wall-clock budget, its seeds
    re-planned to fit, their schedules decayed."""
    real_probe = trainables.probe

    def optimistic(spec, pools):
        p = dict(real_probe(spec, pools))
        for key in ("epoch_s", "final_epoch_s", "val_s"):
            p[key] = p.get(key, 0.0) / 20
        return p

    monkeypatch.setattr(trainables, "probe", optimistic)
    spec = {
        **SPEC,
        "experiment": {"name": "promise"},
        # 1 to 2 s an epoch on 2 CPU cores: the recipe's 150 epochs take minutes on any of them, well past final
        # training's ~56 s (60 epochs did not on an Intel host with AMX, where bf16 ran an epoch in 1.07 s: 64 s,
        # within the noise of its limit, and once they fitted, not re-planned)
        "data": {"dataset": "synthetic", "image_size": 32, "num_classes": 4, "num_samples": 6000},
        "model": {"name": "cnn", "conv1": 16, "conv2": 16, "conv3": 16, "hidden": 32},
        "train": {"epochs": 150, "schedule": "cosine", "lr": 0.01},
        # One trial: it reports epochs within its share (18 s: what this test checks is final training's 72 s).
        "search": {"num_samples": 1, "budget_split": 0.2},
        "final": {"seeds": [0]},
        "tracking": {"enabled": False},
    }
    (tmp_path / "promise.yaml").write_text(yaml.safe_dump(spec))
    # Final training's fixed costs (its Tuner and worker, the test split's evaluation, the model's files and plots)
    # take ~20 s on a 2-core AVX2 host: its seeds' training ends by the study's deadline less what follows it
    # (its ends_by), or the study overruns (it did by 4 s at 60 s). 90 s, 80 % of it final training's: a 36 s
    # final share leaves the seed 4 epochs of 2 s, too few for its schedule to be re-planned from a steady pace
    # and still decay; 72 s leaves it ~25 (the search's share is not what this test checks).
    budget = 90.0
    r = cli("tune-run", "promise.yaml", "--budget", f"{budget:g}s", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    cb = json.loads((tmp_path / "runs" / "promise" / "study.json").read_text())["compute_budget"]
    assert cb["final_epochs"] == 150  # the optimistic plan: the recipe's every epoch
    seed = json.loads((tmp_path / "runs" / "promise" / "final" / "0" / "metrics.json").read_text())
    training = seed["training"]
    assert training["replanned_to_time_limit"] and training["epochs"] < training["epochs_planned"] == 150, (
        training,
        cb["spent_seconds"],
    )
    lrs = [h["lr"] for h in seed["history"]]
    assert lrs[-1] < 0.25 * max(lrs)  # fully trained: its schedule ended
    assert cb["spent_seconds"]["total"] <= budget * 1.05, cb["spent_seconds"]


def test_a_budget_that_leaves_the_search_no_room_to_pay_trains_the_recipe():
    """Trials cut to 1 of the recipe's 4 epochs rank settings by their first epoch (short-horizon bias): the plan
    says so and gives the whole budget to final training of the recipe, as `tune-run --final --budget` would."""
    split = {"budget_split": 0.6}  # a fixed share (by default the recipe's final training comes first: below)
    spec = resolve(
        {**SPEC, "search": {"budget": "20epochs", "epochs": "auto", **split}, "final": {"seeds": [0]}}, trainables
    )
    p = plan(spec, parse_budget("20epochs", "s"), [_probe(1.0)], 1, 1, trainables.gpu_hours, None)
    assert (p["search"], p["num_samples"], p["trials"], p["split"]) == ("skipped", 0, 0, 0.0)
    assert "would train 1 of the recipe's 4 epochs, fewer than the 2" in p["skipped_because"]
    assert p["planned"] == {"search": 0.0, "final": 20.0, "total": 20.0}
    assert p["final_epochs"] == 12 and p["final_stretched"]  # the recipe's 4, stretched 3x into the search's share
    # Too few trials at full length (search.epochs unset, so never shortened): the same.
    spec = resolve({**SPEC, "search": {"budget": "20epochs", **split}, "final": {"seeds": [0]}}, trainables)
    p = plan(spec, parse_budget("20epochs", "s"), [_probe(1.0)], 1, 1, trainables.gpu_hours, None)
    assert p["search"] == "skipped" and p["skipped_because"].startswith("3 trial(s) fit the search's share")
    # What the user fixed stands: num_samples given, or no final training to hand the share to.
    given = plan(spec, parse_budget("20epochs", "s"), [_probe(1.0)], 1, 1, trainables.gpu_hours, 3)
    alone = resolve({**SPEC, "search": {"budget": "20epochs", "epochs": "auto", **split}}, trainables)
    alone_plan = plan(alone, parse_budget("20epochs", "s"), [_probe(1.0)], 1, 1, trainables.gpu_hours, None)
    assert given["search"] == alone_plan["search"] == "planned"


def test_a_validation_split_too_small_to_tell_a_gain_from_noise_trains_the_recipe():
    """500 validation images tell two settings' accuracies apart by 0.063 at best (two standard errors at accuracy
    0.5): more than search.min_gain's 0.03, so a budget-sized search does not run and the budget trains the recipe;
    5,000 images (0.020) search, and so does a study told a larger min_gain, or 0 (off), or of several objectives."""

    def planned(val_images: int, experiment: dict | None = None, **search) -> dict:
        raw = {**SPEC, "search": {"budget": "400epochs", "budget_split": 0.6, **search}, "final": {"seeds": [0]}}
        if experiment:
            raw = {**raw, "experiment": {**raw["experiment"], **experiment}}
        spec = resolve(raw, trainables)
        probe = {**_probe(1.0), "val_images": val_images}
        return plan(spec, parse_budget("400epochs", "s"), [probe], 1, 1, trainables.gpu_hours, None)

    small = planned(500)
    assert (small["search"], small["num_samples"], small["planned"]["final"]) == ("skipped", 0, 400.0)
    assert small["skipped_because"] == (
        "its 500 validation images tell settings apart by 0.063 of accuracy at best (two standard errors), more "
        "than the 0.03 gain it would have to find (search.min_gain)"
    )
    assert planned(5000)["search"] == "planned" and planned(5000)["num_samples"] > 10
    assert planned(500, min_gain=0.07)["search"] == planned(500, min_gain=0)["search"] == "planned"
    front = planned(500, experiment={"objectives": {"val_acc": "max", "latency_ms": "min"}})
    assert front["search"] == "planned"  # a front is not picked by validation accuracy alone
    with pytest.raises(SpecError, match=r"search\.min_gain"):
        resolve({**SPEC, "search": {"min_gain": 1.5}}, trainables)


def test_a_study_that_ran_no_search_stretches_its_final_schedule_into_the_searchs_share():
    """No search (here: too few validation images): the search's share trains the final models longer than the
    recipe, up to final.max_stretch x train.epochs, warm-up and milestones stretched with the run; a search that
    runs leaves final training at most train.epochs, as does max_stretch 1 and tune-run --final --budget."""
    from search.spec._budget import final_plan
    from trainables.final import final_spec

    def planned(val_images: int, final: dict | None = None, **search) -> dict:
        raw = {
            **SPEC,
            "search": {"budget": "400epochs", "budget_split": 0.6, **search},
            "final": {"seeds": [0], **(final or {})},
        }
        spec = resolve(raw, trainables)
        probe = {**_probe(1.0), "val_images": val_images}
        return plan(spec, parse_budget("400epochs", "s"), [probe], 1, 1, trainables.gpu_hours, None)

    skipped = planned(500)
    assert (skipped["search"], skipped["final_epochs"], skipped["final_stretched"]) == ("skipped", 12, True)
    assert planned(500, final={"max_stretch": 1})["final_epochs"] == 4
    assert planned(500, final={"max_stretch": 2.6})["final_epochs"] == 10  # floor(4 x 2.6)
    searched = planned(5000)
    assert (searched["search"], searched["final_epochs"], searched["final_stretched"]) == ("planned", 4, False)
    # --final --budget (no stretch asked): the recipe as written, at most train.epochs
    spec = resolve({**SPEC, "final": {"seeds": [0]}}, trainables)
    alone = final_plan(spec, parse_budget("400epochs", "s"), 400.0, [_probe(1.0)], 1, trainables.gpu_hours)
    assert alone["final_epochs"] == 4 and not alone["final_stretched"]
    # The trial side stretches the schedule's shape with the run: 10 epochs with a 2-epoch warm-up and milestones
    # at 5 and 8, trained for 30, warm up for 6 and step at 15 and 24.
    raw = {**SPEC, "train": {"epochs": 10, "warmup_epochs": 2, "schedule": "multistep", "milestones": [5, 8]}}
    recipe = resolve({**raw, "final": {"seeds": [0], "epochs": 30}}, trainables)
    t = final_spec(recipe, 0)["train"]
    assert (t["epochs"], t["warmup_epochs"], t["milestones"]) == (30, 6, [15, 24])


def test_by_default_the_recipes_final_training_comes_first_and_the_search_gets_what_is_left():
    """search.budget_split left null (the default): the plan sets aside what final training of the recipe as
    written takes (its seeds for all of train.epochs, at the probe's pace, with final training's fixed costs) — all
    a fixed recipe could spend — and the search gets the rest, so it never costs the final models epochs. Where
    that leaves too little to search in (or nothing), the whole budget trains the recipe, and the line says why."""
    from search.spec._budget import FINAL_EXTRA_S

    def plan_of(budget: str, seeds: list[int], probe: dict, parallel: int = 1, given: int | None = None) -> dict:
        spec = resolve({**SPEC, "search": {"budget": budget}, "final": {"seeds": seeds}}, trainables)
        assert spec["search"]["budget_split"] is None
        return plan(spec, parse_budget(budget, "s"), [probe], 1, parallel, trainables.gpu_hours, given)

    # Epochs: 2 seeds x the recipe's 4 epochs = 8 of 100; the search has 92, final training all 4 epochs.
    p = plan_of("100epochs", [0, 1], _probe(1.0))
    assert p["planned"] == {"search": 92.0, "final": 8.0, "total": 100.0} and p["final_epochs"] == 4
    assert (p["search"], p["split_from"], p["split"]) == ("planned", "recipe's final training first", 0.92)
    # Wall clock: 3 seeds, 2 at once (2 rounds), 4 epochs of 3 s each round, plus each round's fixed costs.
    p = plan_of("300s", [0, 1, 2], _probe(2.0, 3.0), parallel=2)
    assert p["planned"]["final"] == pytest.approx(2 * (4 * 3.0 + FINAL_EXTRA_S + 2.0)) and p["final_epochs"] == 4
    assert p["search"] == "planned" and p["planned"]["search"] == pytest.approx(300 - 54)
    # The recipe's final training takes it all: no search, and final training gets what fits of the budget.
    p = plan_of("6epochs", [0, 1], _probe(1.0))
    assert (p["search"], p["trials"], p["final_epochs"]) == ("skipped", 0, 3)
    assert p["skipped_because"] == "final training of the recipe (2 seeds x 4 epochs, 8 epochs) takes the whole budget"
    assert plan_of("6epochs", [0, 1], _probe(1.0), given=5)["search"] == "skipped"  # trials the spec counts too
    # What it leaves fits too few trials for the searcher: no search either, and the line says both.
    p = plan_of("20epochs", [0], _probe(1.0))
    assert p["search"] == "skipped" and p["final_epochs"] == 12  # the recipe's 4, stretched into the search's share
    assert p["skipped_because"] == (
        "final training of the recipe (1 seed x 4 epochs, 4 epochs) leaves the search 16 epochs: "
        "4 trial(s) fit the search's share, fewer than the 10 its searcher needs"
    )


@pytest.mark.ray
def test_a_study_with_no_room_to_search_trains_the_recipe_on_the_whole_budget(tmp_path, cli, ray_session, monkeypatch):
    """Through the console script: the plan's line says why, no trial runs, best.yaml is the recipe, and final
    training spends the whole epoch budget; study.json records the decision. MLflow failing the budget's write at
    the study's end is a warning, and --sync-mlflow fills it in."""
    from search.store import _tracking

    real, calls = _tracking.log_budget, []

    def fails_first(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise ConnectionError("the tracking server went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(_tracking, "log_budget", fails_first)
    spec = {
        **SPEC,
        "experiment": {"name": "noroom", "output_dir": "runs"},
        # 12 epochs: the recipe's final training (2 seeds x 4) leaves the search 4, too few for its 10 trials
        "search": {"budget": "12epochs", "epochs": "auto", "recipe_first": True},
        "final": {"seeds": [0, 1]},
        "tracking": {"mlflow_uri": "sqlite:///mlflow.db"},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    r = cli("tune-run", "s.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "budget: 12epochs · no search: " in r.stdout and "the whole budget trains the recipe" in r.stdout, r.stdout
    # the search's share stretches the recipe's 4 epochs to 6 a seed (final.max_stretch 3 would allow 12)
    assert "final training 6 epochs x 2 seeds (sized to the 12 epochs left; train.epochs 4 stretched" in r.stdout
    assert "best:        the recipe as written: no search ran" in r.stdout
    assert "Study 'noroom': no trials: the budget goes to the recipe" in r.stdout
    assert "the first trial is the spec's recipe" not in r.stdout  # recipe_first: no trial to be first
    out = tmp_path / "runs" / "noroom"
    # A table with no rows (its header only): every reader of trials.csv reads it as a study with no trial.
    assert (out / "trials.csv").read_text().splitlines() == [
        "trial_id,status,train.lr,final_val_acc,best_val_acc,best_epoch,val_acc_by_epoch,epochs,device,arithmetic,gpu,"
        "seconds,reason"
    ]
    assert read_rows(out / "trials.csv") == []
    for header in (True, False):  # tune-compare reads it, and the empty file tune-run wrote before the header too
        if not header:
            (out / "trials.csv").write_text("")
        r2 = cli("tune-compare", "runs/noroom", "--out", f"cmp-{header}", cwd=tmp_path)
        assert r2.returncode == 0, r2.stderr[-2000:]
        assert "0 scored trial(s)" in (tmp_path / f"cmp-{header}" / "report.md").read_text()
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert not best["space"] and best["train"]["lr"] == resolve(spec, trainables)["train"]["lr"]
    study = json.loads((out / "study.json").read_text())
    cb = study["compute_budget"]
    assert cb["search"] == "skipped" and cb["spent"]["search"] == 0 and study["trials"] == 0
    final = json.loads((out / "final" / "metrics.json").read_text())
    assert final["seeds"] == [0, 1] and all(len(h) == 6 for h in final["history"].values())  # 12 epochs: 6 each
    assert cb["spent"]["final"] == 12 and cb["final"]["final_stretched"]
    assert "MLflow writes failed" in r.stdout and "tune-run --sync-mlflow runs/noroom" in r.stdout, r.stdout
    c, runs = mlflow_runs(tmp_path / "mlflow.db", "noroom")
    (parent,) = [x for x in runs if x.data.tags.get("role") == "study"]
    assert parent.info.status == "FINISHED" and "budget.planned.search" not in parent.data.params
    r = cli("tune-run", "--sync-mlflow", "runs/noroom", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    c, runs = mlflow_runs(tmp_path / "mlflow.db", "noroom")
    (parent,) = [x for x in runs if x.data.tags.get("role") == "study"]
    assert float(parent.data.params["budget.planned.search"]) == 0 and parent.data.params["budget.unit"] == "epochs"


def test_a_shortened_trial_scales_the_warm_up_and_milestones_its_configuration_sets():
    """A space or a branch option (cnn-vs-vit-pareto.yaml's) that sets train.warmup_epochs or train.milestones sets
    them for the recipe's length: a trial shortened by search.epochs scales them as it scales the spec's own, so the
    rate its optimizer uses still rises to the peak and decays within the trial. Found at `--budget 30m`: trials of
    1 epoch kept their option's 2-epoch warm-up and trained at a rising rate that never decayed."""
    import torch

    from trainables.recipe import build_schedule

    spec = resolve(
        {**SPEC, "train": {"epochs": 10, "schedule": "linear"}, "space": {"train.warmup_epochs": {"choice": [2, 4]}}},
        trainables,
    )
    trial = trainables.apply_config(
        trainables.shortened(spec, 4), {"train.warmup_epochs": 4, "train.milestones": [5, 8]}
    )
    assert (trial["train"]["epochs"], trial["train"]["warmup_epochs"], trial["train"]["milestones"]) == (4, 2, [2, 3])
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_schedule(opt, trial["train"])
    rates = []
    for _ in range(4):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates == [0.5, 1.0, 1.0, 0.5], rates  # up to the peak, then down: not 4 epochs of warm-up
    # Unshortened, or a configuration that sets neither, changes nothing.
    assert trainables.apply_config(spec, {"train.warmup_epochs": 4})["train"]["warmup_epochs"] == 4
    short = trainables.shortened(spec, 4)
    assert (
        trainables.apply_config(short, {"train.lr": 0.1})["train"]["warmup_epochs"] == short["train"]["warmup_epochs"]
    )


# --------------------------------------------------------------------------- the budget chooses the recipe's size


def _sized_backend(final_epoch_s: dict[int, float]) -> types.SimpleNamespace:
    """The trial side with its probe's final-epoch pace injected per model.conv1 (everything else real)."""
    names = {k: getattr(trainables, k) for k in dir(trainables) if not k.startswith("__")}

    def probe(spec: dict, pools: object) -> dict:
        return {**_probe(1.0, final_epoch_s[spec["model"]["conv1"]]), "shape": str(spec["model"]["conv1"])}

    return types.SimpleNamespace(**{**names, "probe": probe})


@pytest.mark.parametrize(
    "budget,split,taken,conv1,line",
    [
        # 2 seeds one after another (2 rounds): a final epoch of conv1 64 costs 2 x 20 s, of conv1 32 2 x 10 s,
        # plus each round's fixed 15 s. 1,000 s: conv1 64 trains all 10 epochs.
        ("1000s", None, 0, 64, "size: search.sizes[0] (model.conv1=64): final training [0] 10 of 10 epochs per seed"),
        # 300 s: conv1 64 would train 6 of 10 epochs (under the 8 needed), conv1 32 all 10.
        ("300s", None, 1, 32, "size: search.sizes[1] (model.conv1=32): final training [0] 6 of 10, [1] 10 of 10"),
        # 350 s: 8 of 10 for conv1 64, just enough (0.8 of train.epochs).
        ("350s", None, 0, 64, "size: search.sizes[0] (model.conv1=64): final training [0] 8 of 10 epochs"),
        # A fixed split leaves final training half: 175 s trains conv1 64 3 epochs, conv1 32 7: neither.
        ("350s", 0.5, None, 16, "size: the recipe as written (final training of search.sizes [0] 3 of 10, [1] 7 of"),
        ("100s", None, None, 16, "size: the recipe as written (final training of search.sizes [0] 1 of 10, [1] 3 of"),
        # An epoch budget counts every size's epochs alike: the sizes are not its to choose.
        ("400epochs", None, None, 16, "search.sizes not used (an epochs budget counts every size's epochs alike)"),
    ],
)
def test_the_budget_takes_the_dearest_size_whose_final_training_keeps_most_of_the_recipe(
    budget, split, taken, conv1, line
):
    """search.sizes, dearest first: each is probed and the first whose final training still trains each seed 0.8
    of train.epochs replaces the recipe (its model and train sections); none: the recipe as written. The spec's
    sizes are emptied either way, so best.yaml and final training hold the size taken, not the choice."""
    from search.spec._sizes import choose_size, size_line

    backend = _sized_backend({64: 20.0, 32: 10.0, 16: 5.0})
    search = {"budget": budget, "sizes": [{"model.conv1": 64}, {"model.conv1": 32}]}
    if split:
        search["budget_split"] = split
    model = {"name": "cnn", "conv1": 16}  # the recipe as written
    spec = resolve(
        {**SPEC, "model": model, "train": {"epochs": 10}, "search": search, "final": {"seeds": [0, 1]}}, backend
    )
    probe, record = choose_size(spec, backend, None, parse_budget(budget, "s"), lambda probe: 1)
    assert record["taken"] == taken and spec["model"]["conv1"] == conv1 and spec["search"]["sizes"] == []
    assert (probe is None) == (taken is None) and line in size_line(record, spec), size_line(record, spec)
    assert spec["train"]["epochs"] == 10 and spec["scheduler"]["max_t"] == 10  # a size changes the cost, not the length


@pytest.mark.parametrize(
    "size,message",
    [
        ({"train.epochs": 5}, "search.sizes[0].train.epochs: a size sets model.* and train.* keys, not train.epochs"),
        ({"search.seed": 1}, "search.sizes[0].search.seed: a size sets model.* and train.* keys, not train.epochs"),
        ({"model.conv1": "wide"}, "search.sizes[0].model.conv1: "),
        ({"train.batch_size": 0}, "search.sizes[0].train.batch_size: "),
        ({"model.conv9": 3}, "search.sizes[0].model.conv9: "),
    ],
)
def test_a_bad_size_is_one_line_naming_it(size, message):
    with pytest.raises(SpecError) as err:
        resolve({**SPEC, "search": {"sizes": [size]}}, trainables, file="s.yaml")
    assert str(err.value).startswith(f"s.yaml: {message}"), str(err.value)


def test_a_budgeted_study_plans_around_the_size_it_takes_and_resumes_with_it(tmp_path):
    """The runner's plan on the real trial side (digits, real probes, no Ray): a 1,000x wider CNN cannot train
    its final seeds in 60 s, the quickstart's own widths can; the plan's line says which, study.json's plan records
    the probes, the search's probes measure the size taken, and a resumed study trains that size again."""
    from search.run._study_budget import plan_budget
    from search.spec._sizes import retake_size

    raw = yaml.safe_load(QUICKSTART.read_text())
    raw["search"].update(num_samples=None, sizes=[{"model.conv1": 512, "model.conv2": 1024}, {"model.conv1": 24}])
    raw["final"] = {"seeds": [0, 1]}
    spec, lines = resolve(raw, trainables), []
    pools = trainables.prepare(spec)
    cb = plan_budget(spec, trainables, pools, parse_budget("60s", "s"), {"CPU": 2}, lines.append)
    assert lines[0].startswith("budget: 60s · size: search.sizes[1] (model.conv1=24): final training [0] "), lines
    assert spec["model"]["conv1"] == 24 and spec["model"]["conv2"] == raw["model"]["conv2"]
    assert cb["size"]["taken"] == 1 and [t["set"] for t in cb["size"]["tried"]] == raw["search"]["sizes"]
    assert all('"conv1": 24' in p["shape"] for p in cb["probe"]), cb["probe"]
    again = resolve(raw, trainables)
    retake_size(again, json.loads(json.dumps(cb))["size"], trainables)
    assert again["model"] == spec["model"] and again["search"]["sizes"] == []
    # --estimate says the same before the probes it prints, which measure the size taken.
    from search.run._estimate import estimate

    raw["search"]["budget"], printed = "60s", []
    estimate(resolve(raw, trainables), trainables, printed.append)
    assert printed[1].startswith("budget 60s: size: search.sizes[1] (model.conv1=24)"), printed
    assert all('"conv1": 24' in line for line in printed if "images/s training" in line), printed
