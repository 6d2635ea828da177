"""Each benchmark runs with --quick and ends with its JSON result line (correctness only, no timing asserts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
RAY = pytest.mark.ray  # the benchmarks that start Ray; the others (torch or numpy alone) run beside the alone tests


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("throughput", marks=RAY),
        pytest.param("tune_overhead", marks=RAY),
        pytest.param("memory", marks=RAY),
        pytest.param("search_efficiency", marks=RAY),
        "gpu_mfu",
        pytest.param("search_value", marks=RAY),
        "precision",
        "verdict_calibration",
    ],
)
def test_benchmark_quick(name, tmp_path):
    # search_efficiency: random and ASHA, the two its ratio reads (Hyperband and Optuna + ASHA run in test_e2e)
    extra = ["--plot", str(tmp_path / "se.png"), "--methods", "random,asha"] if name == "search_efficiency" else []
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "PYTHONPATH": str(REPO)}
    r = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / f"{name}.py"), "--quick", *extra],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["benchmark"] == name and result["quick"] is True and "ratio" in result
    assert result["machine"]["torch"]
    if name == "gpu_mfu":
        cases = result["cases"]
        assert all(c["flops_per_step"] > 0 and c["achieved_flops"] > 0 for c in cases.values())
        if result["peak_flops"] is None:
            assert result["ratio"] is None and result["status"].startswith("pending")
    elif name == "search_efficiency":  # no ratio when ASHA missed random's best at the median seed
        assert result["ratio"] is None or result["ratio"] > 0
    elif name == "memory":  # --quick's sets differ by a few MiB, within the noise: a number, not its sign
        assert isinstance(result["ratio"], float) and result["ratio"] == result["ratio"]
    elif name == "verdict_calibration":  # a rate: 0 is a possible (and good) answer
        assert 0.0 <= result["ratio"] <= 1.0
    else:
        assert result["ratio"] > 0
    if name == "search_efficiency":
        assert (tmp_path / "se.png").stat().st_size > 1000
        assert set(result["total_epochs"]) == {"random", "asha"}
        assert len(result["ratios"]) == len(result["seeds"]) == 1  # --quick: one seed (the median: below)
    if name == "throughput":  # each trial run against the bare runs before and after it
        assert len(result["adjacent_ratios"]) == 2 * result["rounds"] == 2 * (len(result["bare_images_per_s"]) - 1)
    if name == "memory":
        assert result["trials"] == 2 and all(s["samples_all_running"] > 0 for s in result["studies"])
        # Where the data lives: the object store's shared pages hold the larger set's extra bytes once.
        assert 0.95 <= result["shared_ratio"] <= 1.05, result["shared_ratio"]
    if name == "precision":  # the rule against fp32, round by round
        assert result["models"]["cnn"]["ratios"] and isinstance(result["native_bf16"], bool)
    if name == "verdict_calibration":  # false positives at 2, 3 and 5 seeds, power at a known difference
        assert set(result["false_positive"]) == set(result["power"]) == {"2", "3", "5"}
        assert result["ratio"] == max(v["rate"] for v in result["false_positive"].values())
        assert all(v["pairs"] == result["pairs_per_seed_count"] for v in result["false_positive"].values())
    if name == "search_value":  # every arm trained and was tested on the same images, paired by the verdicts
        acc = result["test_accuracy"]
        assert set(acc) == {"fixed", "searched", "anchor"}
        assert all(0.5 < acc[a]["mean"] <= 1 for a in ("fixed", "searched")), acc
        assert 0.0 <= acc["anchor"]["mean"] <= 1  # a narrowed fast_cnn for 4 epochs on digits: it ran, not how well
        assert result["ratio"] == pytest.approx(acc["searched"]["mean"] / acc["fixed"]["mean"])
        assert result["anchor_ratio"] == pytest.approx(acc["searched"]["mean"] / acc["anchor"]["mean"])
        for other in ("fixed", "anchor"):
            lines = result["verdict" if other == "fixed" else "anchor_verdict"]
            # the searched arm's final models are its study's "searched-best"
            assert lines[0].startswith(f"- {other} vs searched-best: ") and "cannot pair" not in lines[0], lines
            lo, hi = result[f"difference_searched_minus_{other}_ci"]
            assert lo <= acc["searched"]["mean"] - acc[other]["mean"] <= hi
        assert r.stdout.count("sized to the") >= 2  # the fixed and anchor arms' final epochs came from the budget


def test_search_value_arms_share_the_data_and_seeds_and_the_anchor_is_airbench94():
    """search_value's three arms on cnn.yaml: (a) its recipe without the space, (b) as written, (c) airbench94's
    network and recipe (benchmarks/airbench94.yaml) on the study's data and final seeds, without a space. Each
    is a spec tune-run accepts."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import search_value as sv
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    import trainables
    from search import resolve

    spec = yaml.safe_load((REPO / "spaces" / "cnn.yaml").read_text())
    arms = sv.arm_specs(REPO / "spaces" / "cnn.yaml", quick=False)
    assert list(arms) == ["fixed", "searched", "anchor"]
    assert [a["experiment"]["name"] for a in arms.values()] == list(arms)
    assert "space" not in arms["fixed"] and "space" not in arms["anchor"] and arms["searched"]["space"] == spec["space"]
    anchor, airbench = arms["anchor"], yaml.safe_load(sv.ANCHOR.read_text())
    assert anchor["model"] == {"name": "fast_cnn", "width1": 64, "width2": 256, "width3": 256}
    assert anchor["train"] == airbench["train"] and anchor["data"]["augment"] == airbench["data"]["augment"]
    assert {k: v for k, v in anchor["data"].items() if k != "augment"} == {
        k: v for k, v in spec["data"].items() if k != "augment"
    }
    assert anchor["final"] == spec["final"] and arms["fixed"]["train"] == spec["train"]
    for arm in arms.values():
        resolve(arm, trainables)  # raises SpecError on a bad arm
    quick = sv.arm_specs(REPO / "spaces" / "quickstart.yaml", quick=True)["anchor"]
    assert quick["data"]["image_size"] == 16 and quick["train"]["epochs"] == 4 and quick["model"]["width1"] == 8
    resolve(quick, trainables)  # fast_cnn on the digits, upsampled to its smallest input
    assert yaml.safe_load(sv.ANCHOR.read_text())["model"]["width1"] == 64  # the file itself is left as it is


def test_search_efficiency_ranks_a_seed_where_asha_missed_worst_in_the_median():
    """Per seed, ASHA's epochs to reach random search's best over random's; across seeds the median, a missed seed
    ranked worst (what --quick's one seed leaves untested)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import search_efficiency as se
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    random_c, asha_c = [(1, 0.5), (2, 0.7), (6, 0.9)], [(1, 0.6), (3, 0.9)]
    assert se.reach(asha_c, 0.9) == 3 and se.reach(asha_c, 0.95) is None
    assert se.seed_ratio({"random": random_c, "asha": asha_c}) == pytest.approx(0.5)
    assert se.seed_ratio({"random": random_c, "asha": [(1, 0.6)]}) is None
    assert se.median_ratio([0.5]) == 0.5
    assert se.median_ratio([0.2, None, 0.4]) == 0.4
    assert se.median_ratio([0.2, 0.4]) == pytest.approx(0.3)
    assert se.median_ratio([0.2, None]) is None


@pytest.mark.parametrize("counts", ["2,x", "0,2"])
def test_verdict_calibration_refuses_bad_seed_counts_in_one_line(counts, tmp_path):
    """A bad --seed-counts is argparse's usage line and exit 2, before any pair is simulated."""
    r = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "verdict_calibration.py"), "--seed-counts", counts],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and r.stdout == "", r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("verdict_calibration.py: error: --seed-counts: "), r.stderr
    assert f"got {counts!r}" in r.stderr
