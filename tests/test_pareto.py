"""Multi-objective studies (experiment.objectives, .constraints, .pick): the Pareto front, its hypervolume, the
limits a configuration is refused for before it trains, and the point best.yaml holds."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import yaml

import trainables
from search import SpecError, resolve, run_study
from search.report._pareto import front_ranks, hypervolume, minimised
from search.run._final import run_final
from search.spec._objectives import over_limits, parse_conditions
from search.store._paths import final_paths
from tests.conftest import read_rows, small_spec


def test_front_ranks_by_hand():
    # (accuracy max, latency min): a beats c (more accurate, as fast); b and a trade off; d is beaten by all.
    pts = minimised([[0.9, 5.0], [0.8, 2.0], [0.85, 5.0], [0.7, 6.0], [0.9, 5.0]], ["max", "min"])
    assert front_ranks(pts) == [1, 1, 2, 3, 1]  # equal points do not beat each other


def test_hypervolume_by_hand():
    assert hypervolume(np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]]), np.array([4.0, 4.0])) == pytest.approx(6.0)
    assert hypervolume(np.array([[0.0, 0.0, 0.0]]), np.array([1.0, 2.0, 3.0])) == pytest.approx(6.0)
    # Two boxes of 2 x 2 x 2 overlapping in 1 x 1 x 1: 8 + 8 - 1; a point beyond the reference adds nothing.
    pts = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0], [5.0, 0.0, 0.0]])
    assert hypervolume(pts, np.array([2.0, 3.0, 3.0])) == pytest.approx(2 * 2 * 2 + 1 * 3 * 3 - 1 * 2 * 2)


def test_conditions_and_limits():
    assert [str(c) for c in parse_conditions("latency_ms<=5, params < 1e6")] == ["latency_ms <= 5", "params < 1e+06"]
    with pytest.raises(ValueError, match="expected '<metric> <op> <number>'"):
        parse_conditions("latency_ms == 5")
    assert (
        over_limits({"params": 1e6}, {"params": 2.5e6, "flops": 1.0})
        == "over experiment.constraints: params 2.5e+06 > 1e+06"
    )
    assert over_limits({"params": 1e6}, {"params": 1e6}) is None  # a limit is reached, not broken


SCHEMA = jsonschema.Draft202012Validator(
    json.loads((Path(__file__).resolve().parents[1] / "spaces" / "tune-run.schema.json").read_text())
)


class _Trial:
    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


def test_asha_rungs_rank_by_non_dominated_sorting():
    """MO-ASHA's rung: a less accurate but faster trial goes on (no recorded trial beats it in both), where
    accuracy-only ASHA stops it; a trial that recorded ones beat in both is stopped."""
    from ray.tune.schedulers import TrialScheduler

    from search.run._schedulers import ParetoASHAScheduler

    goals = {"val_acc": "max", "latency_ms": "min"}
    asha = ParetoASHAScheduler(
        objectives=goals, max_t=9, grace_period=1, reduction_factor=3, brackets=1, time_attr="training_iteration"
    )
    asha.set_search_properties("val_acc", "max")

    def report(name, acc, latency):
        trial = _Trial(name)
        if name not in asha._trial_info:
            asha.on_trial_add(None, trial)
        return asha.on_trial_result(None, trial, {"training_iteration": 1, "val_acc": acc, "latency_ms": latency})

    assert report("accurate", 0.9, 10.0) == TrialScheduler.CONTINUE  # the first at the rung
    assert report("fast", 0.5, 1.0) == TrialScheduler.CONTINUE  # accuracy-only ASHA: 0.5 < cutoff 0.9, stopped
    assert report("beaten", 0.4, 12.0) == TrialScheduler.STOP  # both recorded ones beat it in both objectives
    assert report("best", 0.95, 20.0) == TrialScheduler.CONTINUE  # the most accurate: on the front
    assert report("slow", float("nan"), 30.0) == TrialScheduler.STOP  # NaN scores as the worst: beaten by all
    assert [len(r) for _, r in asha._brackets[0]._rungs] == [0, 0, 5]  # rungs 9, 3, 1: all recorded at 1


def test_a_tie_on_a_rungs_front_goes_to_the_trial_that_spreads_it():
    """Within one front, NSGA-II's crowding distance orders the trials: a trial squeezed between two others is
    stopped where 1/rf of the recorded ones spread the front more; a new end of the front goes on."""
    from ray.tune.schedulers import TrialScheduler

    from search.report._pareto import crowding
    from search.run._schedulers import ParetoASHAScheduler

    # Hand-computed: ends infinite; (0.8, 2) has gaps 0.15/0.2 + 1.5/2 = 1.5; (0.85, 2.5) has 0.1/0.2 + 1/2 = 1.0.
    front = np.array([[0.7, -1.0], [0.8, -2.0], [0.85, -2.5], [0.9, -3.0]])
    assert list(crowding(front)) == pytest.approx([np.inf, 1.5, 1.0, np.inf])
    # An objective all tie on adds nothing, not infinities at an arbitrary order's ends.
    assert list(crowding(np.array([[0.5, 1.0], [0.5, 2.0], [0.5, 3.0]]))) == [np.inf, 1.0, np.inf]
    assert list(crowding(np.array([[0.5], [0.5], [0.5]]))) == [0.0, 0.0, 0.0]
    asha = ParetoASHAScheduler(
        objectives={"val_acc": "max", "latency_ms": "min"},
        max_t=4,
        grace_period=1,
        reduction_factor=2,
        brackets=1,
        time_attr="training_iteration",
    )
    asha.set_search_properties("val_acc", "max")

    def report(name, acc, latency):
        trial = _Trial(name)
        asha.on_trial_add(None, trial)
        return asha.on_trial_result(None, trial, {"training_iteration": 1, "val_acc": acc, "latency_ms": latency})

    for name, acc, latency in (("a", 0.7, 1.0), ("b", 0.8, 2.0), ("c", 0.9, 3.0)):
        report(name, acc, latency)
    # On the front with all three, but the most crowded: 3 rank before it, more than 3/rf = 1.5 (the rule before
    # crowding let every trial on the front go on).
    assert report("squeezed", 0.85, 2.5) == TrialScheduler.STOP
    assert report("fastest", 0.6, 0.5) == TrialScheduler.CONTINUE  # a new end of the front: infinitely far


def test_with_one_objective_a_rung_keeps_the_top_share():
    """One objective: the fronts are the values' order and crowding breaks no tie, so the rule is ASHA's."""
    from search.run._schedulers import _ahead

    assert _ahead(np.array([[0.9], [0.8], [0.7], [0.75]])) == 2
    assert _ahead(np.array([[0.9], [0.8], [0.8]])) == 1  # an equal value is not ahead


def _spec(**experiment):
    return {
        "experiment": {"name": "mo", **experiment},
        "data": {"dataset": "synthetic", "image_size": 16, "num_classes": 4, "num_samples": 100},
        "model": {"name": "vit", "patch_size": 4, "embed_dim": 16, "depth": 1, "num_heads": 2, "mlp_dim": 32},
        "train": {"epochs": 1},
    }


@pytest.mark.parametrize(
    ("experiment", "sections", "key", "says", "in_schema"),
    [
        ({"objectives": {"val_acc": "max"}}, {}, "experiment.objectives", "at least 2 objectives must be given", True),
        (
            {"objectives": {"val_acc": "max", "latency": "min"}},
            {},
            "experiment.objectives",
            "did you mean 'latency_ms'",
            True,
        ),
        (
            {"objectives": {"val_acc": "max", "params": "max"}},
            {},
            "experiment.objectives",
            "direction must be min",
            True,
        ),
        (
            {"objectives": {"val_acc": "max", "params": "min"}, "metric": "val_loss"},
            {},
            "experiment.metric",
            "the metric is the first of them (val_acc)",
            False,
        ),
        ({"constraints": {"val_acc": 0.9}}, {}, "experiment.constraints", "not a cost known before training", True),
        ({"constraints": {"params": 0}}, {}, "experiment.constraints", "params > 0 must hold", True),
        ({"pick": "latency_ms<=5"}, {}, "experiment.pick", "set experiment.objectives", False),
        (
            {"objectives": {"val_acc": "max", "params": "min"}, "pick": "flops<=5"},
            {},
            "experiment.pick",
            "'flops' is not an objective",
            False,
        ),
        (
            {"objectives": {"val_acc": "max", "params": "min"}},
            {"scheduler": {"name": "median"}},
            "scheduler.name",
            "several objectives (val_acc, params) run under fifo or asha (non-dominated sorting at each rung)",
            True,
        ),
        (
            {"objectives": {"val_acc": "max", "params": "min"}},
            {"search": {"algorithm": "bohb"}, "scheduler": {"name": "hyperband"}},
            "scheduler.name",
            "run under fifo",
            True,
        ),
    ],
)
def test_bad_objectives_are_one_line_and_editors_see_them(experiment, sections, key, says, in_schema):
    with pytest.raises(SpecError) as err:
        resolve({**_spec(**experiment), **sections}, trainables, file="mo.yaml")
    assert err.value.path == key and says in err.value.message, str(err.value)
    # An editor's schema underlines the same, except what relates two keys' values (the metric and the first
    # objective, pick's metrics against the objectives, pick without objectives).
    assert SCHEMA.is_valid({**_spec(**experiment), **sections}) is not in_schema


def test_a_malformed_pick_is_one_line_and_underlined():
    experiment = {"objectives": {"val_acc": "max", "params": "min"}, "pick": "params == 5"}
    with pytest.raises(SpecError) as err:
        resolve(_spec(**experiment), trainables, file="mo.yaml")
    assert str(err.value).startswith("mo.yaml: experiment.pick: expected '<metric> <op> <number>'"), str(err.value)
    assert not SCHEMA.is_valid(_spec(**experiment))
    assert SCHEMA.is_valid(_spec(**{**experiment, "pick": "params<=5, val_acc >= 0.9"}))


def test_the_first_objective_is_the_metric():
    spec = resolve(_spec(objectives={"val_loss": "min", "latency_ms": "min"}), trainables)
    assert (spec["experiment"]["metric"], spec["experiment"]["mode"]) == ("val_loss", "min")
    spec = resolve(_spec(objectives={"val_acc": "max", "train_seconds": "min"}), trainables)  # accuracy vs time
    assert SCHEMA.is_valid(_spec(objectives={"val_acc": "max", "train_seconds": "min"}))
    # accuracy against GPU-hours (the budget's gpu-h), minimised only
    assert resolve(_spec(objectives={"val_acc": "max", "gpu_hours": "min"}), trainables)["experiment"]["objectives"]
    assert SCHEMA.is_valid(_spec(objectives={"val_acc": "max", "gpu_hours": "min"}))
    with pytest.raises(SpecError, match="gpu_hours"):
        resolve(_spec(objectives={"val_acc": "max", "gpu_hours": "max"}), trainables)
    assert not SCHEMA.is_valid(_spec(objectives={"val_acc": "max", "gpu_hours": "max"}))
    assert resolve(_spec(), trainables)["experiment"]["metric"] == "val_acc"


def _non_dominated(points):
    """The front by definition, independently of front_ranks: no other point at least as good in both, better in one."""
    return {
        i
        for i, (a, p) in points.items()
        if not any(b >= a and q <= p and (b > a or q < p) for j, (b, q) in points.items() if j != i)
    }


def test_a_grid_front_is_complete_limits_refuse_and_pick_exports(tmp_path, ray_session, cli):
    """A grid of six small CNNs on scikit-learn's digits, accuracy against parameters: every trial within the limit
    is ranked, those on rank 1 are exactly the non-dominated ones, the widest is refused before training with its
    parameter count, and best.yaml holds the most accurate trial under the pick's parameter count."""
    widths = [(8, 16), (8, 64), (16, 16), (16, 64), (32, 16), (32, 64)]  # (model.conv3, model.hidden)
    params = {}
    for c3, h in widths:
        model = trainables.create_model(
            "cnn", num_classes=10, in_chans=1, image_size=8, conv1=8, conv2=8, conv3=c3, hidden=h
        )
        params[(c3, h)] = sum(p.numel() for p in model.parameters())
    limit = (params[(32, 16)] + params[(32, 64)]) // 2  # only the widest breaks it
    pick = (params[(16, 16)] + params[(16, 64)]) // 2
    assert sorted(params, key=params.get)[-1] == (32, 64) and params[(16, 16)] <= pick < params[(16, 64)]
    spec = resolve(
        {
            "experiment": {
                "name": "pareto-grid",
                "output_dir": str(tmp_path / "runs"),
                "objectives": {"val_acc": "max", "params": "min"},
                "constraints": {"params": limit},
                "pick": f"params<={pick}",
            },
            "data": {"dataset": "digits", "val_fraction": 0.2, "test_fraction": 0.2, "split_seed": 0},
            "model": {"name": "cnn", "conv1": 8, "conv2": 8, "conv3": 8, "hidden": 16},
            "train": {"epochs": 1, "batch_size": 64},
            "space": {"model.conv3": {"grid": [8, 16, 32]}, "model.hidden": {"grid": [16, 64]}},
            "search": {"algorithm": "grid"},
            "tracking": {"mlflow_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
        },
        trainables,
    )
    res = run_study(spec, trainables, file="pareto.yaml", log=lambda *_: None)
    rows = {(int(r["model.conv3"]), int(r["model.hidden"])): r for r in read_rows(res.out_dir / "trials.csv")}
    assert set(rows) == set(widths)
    wide = rows[(32, 64)]
    assert wide["status"] == "infeasible" and wide["pareto"] == "" and wide["epochs"] == "0"
    assert wide["reason"] == f"over experiment.constraints: params {params[(32, 64)]} > {limit}"
    assert wide["params"] == ""  # reported at its worst, for the searcher: the reason says what it measured
    ranked = {k: r for k, r in rows.items() if k != (32, 64)}
    assert all(r["status"] == "completed" and float(r["params"]) == params[k] for k, r in ranked.items())
    points = {k: (float(r["final_val_acc"]), float(r["params"])) for k, r in ranked.items()}
    assert {k for k, r in ranked.items() if r["pareto"] == "1"} == _non_dominated(points)
    assert all(int(r["pareto"]) >= 1 for r in ranked.values())

    record = json.loads((res.out_dir / "study.json").read_text())
    front = record["pareto"]
    assert front["objectives"] == {"val_acc": "max", "params": "min"} and front["compared"] == 5
    assert front["reference"] == {"val_acc": 0.0, "params": limit} and front["hypervolume"] > 0
    assert (res.out_dir / "pareto.png").stat().st_size > 1000

    under = {k: p for k, p in points.items() if p[1] <= pick}
    expected = max(under, key=lambda k: under[k][0])
    best = yaml.safe_load((res.out_dir / "best.yaml").read_text())
    got = (best["model"]["conv3"], best["model"]["hidden"])
    assert under[got][0] == under[expected][0], (got, expected, points)  # equal accuracies: either is right
    assert params[got] <= pick and record["best_rule"].endswith(f"of the {len(under)} with params <= {pick:g}")
    # best.yaml runs as is: it keeps the study's objectives (recorded), and --final trains and tests the point.
    spec = resolve(best, trainables, file="best.yaml")
    spec["final"] = {**spec["final"], "seeds": [0]}
    summary = run_final(spec, trainables, file=str(res.out_dir / "best.yaml"), log=lambda *_: None)
    assert not summary["errors"] and summary["summary"]["cost"]["params"] == params[got]

    # tune-run --pick exports any point: here the only one under the smallest model's size plus one.
    smallest = params[(8, 16)]
    r = cli("tune-run", "--pick", f"params<={smallest + 1}", str(res.out_dir), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    name = f"pick-params-le-{smallest + 1}.yaml"
    picked = yaml.safe_load((res.out_dir / name).read_text())
    assert (picked["model"]["conv3"], picked["model"]["hidden"]) == (8, 16) and picked["space"] == {}
    assert picked["experiment"]["name"] == f"pareto-grid-{name[:-5]}"
    assert f"train and test it: tune-run runs/pareto-grid/{name} --final" in r.stdout  # as typed, from the cwd
    assert final_paths(resolve(picked, trainables), res.out_dir / name)[1] == str(res.out_dir / f"final-{name[:-5]}")
    r = cli("tune-run", "--pick", "params<=1", str(res.out_dir), cwd=tmp_path)
    assert r.returncode == 1 and "no compared trial of" in r.stderr and "has params <= 1: nothing written" in r.stderr
    r = cli("tune-run", "--pick", "flops<=1", str(res.out_dir), cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().endswith(
        "'flops' is not an objective of this study; allowed: val_acc, params"
    )
    r = cli("tune-run", "--pick", "params<=1", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "study.json" in r.stderr


def test_optuna_and_nsga2_search_several_objectives_and_compare_fronts(tmp_path, ray_session, cli):
    """Optuna's samplers take the objectives as a list (multi-objective TPE, NSGA-II) through Ray Tune: trials
    run and are ranked on the front, latency measured before training; MO-ASHA's study runs under `--budget`
    (planned, its pick trained within the budget); tune-compare puts the fronts on one plot with hypervolumes at
    one reference point."""
    folders = []
    for algorithm, scheduler in (("optuna", "fifo"), ("nsga2", "fifo"), ("random", "asha")):
        spec = small_spec(
            tmp_path,
            f"pareto-{algorithm}",
            experiment={"objectives": {"val_acc": "max", "latency_ms": "min"}, "pick": "latency_ms <= 1000"},
            train={"epochs": 2 if scheduler == "asha" else 1},
            space={"model.embed_dim": {"choice": [8, 16, 32]}, "train.lr": {"loguniform": [1e-3, 1e-2]}},
            search={"algorithm": algorithm, "num_samples": 3},
            scheduler={"name": scheduler, "grace_period": 1, "reduction_factor": 2},
        )
        if scheduler == "asha":  # through the command under an epoch budget: planned, searched, picked, trained
            spec["final"] = {"seeds": [0]}
            (tmp_path / "budget.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))  # objectives in order
            r = cli("tune-run", "budget.yaml", "--budget", "10epochs", cwd=tmp_path)
            assert r.returncode == 0, r.stderr[-3000:]
            out = Path(spec["experiment"]["output_dir"]) / spec["experiment"]["name"]
            study = json.loads((out / "study.json").read_text())
            spent = study["compute_budget"]["spent"]
            assert study["compute_budget"]["search"] == "planned" and spent["search"] + spent["final"] <= 10, spent
            final = json.loads((out / "final" / "metrics.json").read_text())
            assert final["seeds"] == [0] and study["pareto"]["front"], study["pareto"]
        else:
            out = run_study(spec, trainables, file="pareto.yaml", log=lambda *_: None).out_dir
        rows = read_rows(out / "trials.csv")
        assert len(rows) == 3 and {r["status"] for r in rows} <= {"completed", "stopped"}, rows
        done = [r for r in rows if r["status"] == "completed"]  # MO-ASHA may stop a beaten one at epoch 1
        assert done and all(float(r["latency_ms"]) > 0 and r["pareto"] in ("1", "2", "3") for r in done)
        assert any(r["pareto"] == "1" for r in done) and all(r["pareto"] == "" for r in rows if r not in done)
        folders.append(out)
    r = cli("tune-compare", *map(str, folders), "--out", str(tmp_path / "cmp"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "cmp" / "report.md").read_text()
    section = md[md.index("## Pareto fronts") :]
    assert (
        "| pareto-optuna " in section
        and "| pareto-nsga2 " in section
        and "reference point for all of them (val_acc=0, latency_ms=" in section
    )
    assert (tmp_path / "cmp" / "fronts.png").stat().st_size > 1000 and "![fronts.png](fronts.png)" in md
