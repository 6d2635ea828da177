"""search.recipe_first: the spec's own recipe is the search's first trial, so a search can only rank its best
against the fixed recipe it has to beat (benchmarks/search_value.py)."""

from __future__ import annotations

import json

import pytest

import trainables
from search import run_study
from search.run._algorithms import first_points
from search.spec._space import contains, recipe_point
from tests.conftest import small_spec


def test_contains_is_the_distributions_domain():
    assert contains({"loguniform": [0.02, 0.4]}, 0.1) and not contains({"loguniform": [0.02, 0.4]}, 0.5)
    assert contains({"choice": [0.0, 0.1, 0.2]}, 0.1) and not contains({"choice": [0.0, 0.2]}, 0.1)
    assert not contains({"choice": [0, 1]}, True)  # a flag is not the integer 1
    assert contains({"randint": [2, 6]}, 6) and not contains({"randint": [2, 6]}, 2.5)


def test_recipe_point_or_why_not():
    space = {"train.lr": {"loguniform": [1e-4, 1e-1]}, "model.depth": {"choice": [1, 2]}}
    assert recipe_point(space, {"train.lr": 3e-3, "model.depth": 1}) == ({"train.lr": 3e-3, "model.depth": 1}, "")
    point, why = recipe_point(space, {"train.lr": 0.5, "model.depth": 1})
    assert point is None and "train.lr=0.5 lies outside space.train.lr" in why
    assert recipe_point({"train.lr": {"grid": [1e-3, 1e-2]}}, {"train.lr": 1e-3})[0] is None


@pytest.mark.parametrize("algorithm", ["random", "optuna"])
def test_the_first_trial_is_the_spec_recipe(tmp_path, ray_session, algorithm):
    spec = small_spec(
        tmp_path,
        f"recipe-{algorithm}",
        train={"epochs": 1, "lr": 3e-3},
        space={"train.lr": {"loguniform": [1e-4, 1e-1]}, "model.mlp_dim": {"choice": [16, 32]}},
        search={"algorithm": algorithm, "num_samples": 3, "recipe_first": True, "max_concurrent": 1},
    )
    assert first_points(spec) == ([{"train.lr": 3e-3, "model.mlp_dim": 32}], "")
    res = run_study(spec, trainables, file="recipe.yaml", log=lambda *_: None)
    configs = [(r["train.lr"], r["model.mlp_dim"]) for r in res.rows]
    assert len(configs) == 3 and configs.count((3e-3, 32)) == 1, configs  # once, and the others are sampled
    record = json.loads((res.out_dir / "study.json").read_text())
    assert record["recipe_first"] == {"train.lr": 3e-3, "model.mlp_dim": 32}


def test_a_recipe_outside_the_space_is_said_and_not_run(tmp_path):
    spec = small_spec(
        tmp_path,
        "outside",
        train={"lr": 0.5},
        space={"train.lr": {"loguniform": [1e-4, 1e-1]}},
        search={"algorithm": "random", "num_samples": 2, "recipe_first": True},
    )
    points, why = first_points(spec)
    assert points == [] and "train.lr=0.5 lies outside" in why
