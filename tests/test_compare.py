"""tune-compare's table, plots and verdict from final summaries and predictions (no training needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from search.compare import main, table_rows, write_reports
from search.report._stats import SeedPredictions, paired_difference, seed_scorers
from search.report._verdict import conclusion


def summary(name, model, frac, acc, lat):
    return {
        "experiment": name,
        "model": model,
        "seeds": [0, 1, 2],
        "report_axes": {"model": ["model.name", model], "fraction": ["data.train_fraction", frac]},
        "summary": {
            "accuracy": {"mean": acc, "std": 0.01, "ci_low": acc - 0.02, "ci_high": acc + 0.02, "n": 3},
            "cost": {
                "params": 1000,
                "flops_per_image": 2e6,
                "throughput_images_per_s": 500.0,
                "latency_ms": lat,
                "train_seconds_total": 30.0,
                "gpu_hours": 0.5,
            },
        },
        "search_budget": {"epochs": 40, "trial_seconds": 600.0, "gpu_hours": 0.25},
        "history": {0: [{"val_acc": 0.5}, {"val_acc": acc}]},
    }


def test_table_columns_and_values():
    rows = table_rows([summary("vit", "vit", 1.0, 0.8, 2.0)])
    r = rows[0]
    assert r["test acc (95% CI)"] == "0.8000 ± 0.0200"
    assert r["params"] == "1,000" and r["MFLOPs/img"] == "2.0" and r["latency ms"] == "2.00"
    assert r["search epochs"] == "40" and r["search trial-min"] == "10.0"
    assert r["search GPU-h"] == "0.25" and r["final GPU-h"] == "1.50"  # 0.5 per seed x 3 seeds
    assert r["macro F1"] == "–"  # absent metrics show as a dash, not a number


def test_fraction_plot_only_when_studies_vary_it(tmp_path):
    same = [summary("a", "vit", 1.0, 0.8, 2.0), summary("b", "cnn", 1.0, 0.7, 1.0)]
    write_reports(same, tmp_path / "same")
    assert not (tmp_path / "same" / "fraction.png").exists()
    varied = [summary(f"vit{f}", "vit", f, 0.5 + f / 3, 2.0) for f in (0.1, 0.5, 1.0)]
    varied += [summary(f"rn{f}", "resnet18", f, 0.6 + f / 4, 1.0) for f in (0.1, 0.5, 1.0)]
    write_reports(varied, tmp_path / "varied")
    assert (tmp_path / "varied" / "fraction.png").stat().st_size > 1000
    assert "![fraction.png](fraction.png)" in (tmp_path / "varied" / "report.md").read_text()


def test_a_moved_study_folder_keeps_its_seed_results(tmp_path, monkeypatch):
    final = tmp_path / "moved" / "final"
    (final / "0").mkdir(parents=True)
    recorded = {**summary("moved", "cnn", 1.0, 0.8, 1.0), "seeds": [0], "out_dir": "/elsewhere/runs/moved/final"}
    (final / "metrics.json").write_text(json.dumps(recorded))
    (final / "0" / "metrics.json").write_text(json.dumps({"test": {"confusion_matrix": [[3, 1], [0, 4]]}}))
    monkeypatch.chdir(tmp_path)
    assert main(["moved", "--out", "cmp"]) == 0
    assert (tmp_path / "cmp" / "confusion.png").stat().st_size > 1000


def test_learning_curves_plot_what_final_runs_measured(tmp_path):
    """Final runs on train+val have no val_acc: the curve plots (and names) their train_acc instead."""
    s = summary("tv", "cnn", 1.0, 0.8, 1.0)
    s["history"] = {0: [{"train_loss": 1.0, "train_acc": 0.5}, {"train_loss": 0.5, "train_acc": 0.9}]}
    write_reports([s, summary("v", "vit", 1.0, 0.7, 2.0)], tmp_path)
    assert (tmp_path / "curves.png").stat().st_size > 1000


# --------------------------------------------------------------------------- the verdict's statistics

Y = np.array([0, 1, 1, 0])


def seeds(y, *preds, k=2):
    """A study's seeds: each seed's predicted classes, with one-hot probabilities."""
    pred = np.array(preds)
    return SeedPredictions(np.asarray(y), pred, np.eye(k)[pred])


def test_identical_predictions_differ_by_exactly_zero():
    a = seeds(Y, [0, 1, 0, 0], [0, 1, 0, 0])
    r = paired_difference(a, a)
    assert (r["difference"], r["ci_low"], r["ci_high"], r["p_value"]) == (0.0, 0.0, 0.0, 1.0)
    assert conclusion(r, "a", "b") == "not distinguishable on test accuracy"


def test_always_right_against_always_wrong():
    y = np.tile([0, 1, 2], 20)
    r = paired_difference(seeds(y, y, y, k=3), seeds(y, (y + 1) % 3, k=3))
    assert (r["difference"], r["ci_low"], r["ci_high"], r["p_value"]) == (1.0, 1.0, 1.0, 0.0)
    assert conclusion(r, "right", "wrong") == "right is better on test accuracy"
    assert (
        conclusion(paired_difference(seeds(y, (y + 1) % 3, k=3), seeds(y, y, k=3)), "wrong", "right")
        == "right is better on test accuracy"
    )


def test_hand_computed_point_estimates():
    a = seeds(Y, [0, 1, 1, 1], [0, 0, 1, 1])  # accuracy 3/4 and 2/4: mean 5/8
    b = seeds(Y, [1, 0, 0, 0])  # 1/4
    r = paired_difference(a, b, n_boot=200)
    assert r["difference"] == pytest.approx(5 / 8 - 1 / 4)
    assert r["ci_low"] <= r["difference"] <= r["ci_high"] and (r["seeds_a"], r["seeds_b"], r["images"]) == (2, 1, 4)
    # Macro F1 = mean over classes of 2tp / (2tp + fp + fn): a's seed 1 (2/3 + 4/5) / 2, seed 2 (2/4 + 2/4) / 2;
    # b (2/5 + 0) / 2.
    f1 = paired_difference(a, b, "f1_macro", n_boot=200)["difference"]
    assert f1 == pytest.approx(((2 / 3 + 4 / 5) / 2 + 1 / 2) / 2 - 1 / 5)
    assert paired_difference(a, b, n_boot=200) == r  # a fixed stream: the same report every time


def test_weighted_statistics_equal_scikit_learn_on_the_repeated_images():
    """A bootstrap resample weighs image i by how often it was drawn: the same as repeating it."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 40)
    pred = np.where(rng.random(40) < 0.6, y, rng.integers(0, 3, 40))
    probs = rng.dirichlet(np.ones(3), 40)
    w = rng.integers(0, 4, 40).astype(float)
    rep = np.repeat(np.arange(40), w.astype(int))
    p = SeedPredictions(y, pred[None], probs[None])
    value = {
        stat: seed_scorers(p, stat)[0](w) for stat in ("accuracy", "balanced_accuracy", "f1_macro", "mcc", "log_loss")
    }
    assert value["accuracy"] == pytest.approx(skm.accuracy_score(y[rep], pred[rep]))
    assert value["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y[rep], pred[rep]))
    assert value["f1_macro"] == pytest.approx(skm.f1_score(y[rep], pred[rep], average="macro"))
    assert value["mcc"] == pytest.approx(skm.matthews_corrcoef(y[rep], pred[rep]))
    assert value["log_loss"] == pytest.approx(skm.log_loss(y[rep], probs[rep]))
    yb, score = (y > 0).astype(int), np.round(probs[:, 1], 1)  # rounded: ties count one half
    pb = SeedPredictions(yb, (score > 0.5)[None].astype(int), np.stack([1 - score, score], 1)[None])
    assert seed_scorers(pb, "auc_roc")[0](w) == pytest.approx(skm.roc_auc_score(yb[rep], score[rep]))


# --------------------------------------------------------------------------- the verdict through tune-compare


def finished_study(
    root: Path,
    name: str,
    y: np.ndarray,
    preds: list[np.ndarray],
    digest: str = "d1",
    metric: str = "val_acc",
    train_s: float = 30.0,
    lat: float = 1.0,
) -> Path:
    """A study folder as tune-run --final leaves it: final/metrics.json and a predictions.npz per seed."""
    final = root / name / "final"
    s = {
        **summary(name, name, 1.0, float(np.mean([(p == y).mean() for p in preds])), lat),
        "seeds": list(range(len(preds))),
        "spec": {"experiment": {"metric": metric}},
    }
    s["summary"]["cost"].update(train_seconds=train_s, gpu_hours=0.0)
    for seed, pred in enumerate(preds):
        (final / str(seed)).mkdir(parents=True)
        np.savez_compressed(
            final / str(seed) / "predictions.npz",
            labels=y,
            pred=pred,
            probs=np.eye(2)[pred],
            test_digest=np.str_(digest),
            classes=np.array(["a", "b"]),
        )
    (final / "metrics.json").write_text(json.dumps(s))
    return root / name


def test_the_verdict_calls_a_study_cheaper_only_by_more_than_timing_noise(tmp_path, cli):
    """One network trained in two runs: 550 and 553 s a seed, 12.6 and 15.8 ms (search_value.py's searched and
    anchor arms at 30 minutes, 2026-12-07) is the host's drift, not a cheaper study; half the cost is."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    flip = lambda p: np.where(rng.random(400) < p, 1 - y, y)  # noqa: E731  (wrong on a share p of images)
    finished_study(tmp_path, "one", y, [flip(0.10), flip(0.11)], train_s=553, lat=15.8)
    finished_study(tmp_path, "same", y, [flip(0.10), flip(0.11)], train_s=550, lat=12.6)
    finished_study(tmp_path, "half", y, [flip(0.10), flip(0.11)], train_s=275, lat=7.9)
    r = cli("tune-compare", "one", "same", "half", "--out", "cmp", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    verdict = {line.split(":")[0]: line for line in r.stdout.splitlines() if line.startswith("- ")}
    assert "not distinguishable on test accuracy (" in verdict["- one vs same"], verdict
    assert "costs less" not in verdict["- one vs same"]
    assert "half costs less to train and to run" in verdict["- one vs half"]


def test_tune_compare_ends_with_a_verdict(tmp_path, cli):
    def tune_compare(cwd: Path, *args: str):  # noqa: ANN202  (tune-compare's main; its console script: test_readme)
        return cli("tune-compare", *args, "--out", "cmp", cwd=cwd)

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    flip = lambda p: np.where(rng.random(400) < p, 1 - y, y)  # noqa: E731  (wrong on a share p of images)
    finished_study(tmp_path, "good", y, [flip(0.05), flip(0.06)], metric="val_f1_macro", train_s=60, lat=2.0)
    finished_study(tmp_path, "poor", y, [flip(0.30), flip(0.32)], train_s=20, lat=0.8)
    finished_study(tmp_path, "twin", y, [flip(0.30), flip(0.31)], train_s=10, lat=0.4)
    finished_study(tmp_path, "other", y, [flip(0.3)], digest="d2")
    r = tune_compare(tmp_path, "good", "poor", "twin", "other")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.index("## Verdict") > out.index("test acc (95% CI)")  # the table, then the verdict
    verdict = {line.split(":")[0]: line for line in out.splitlines() if line.startswith("- ")}
    assert verdict["- good vs poor"].startswith("- good vs poor: good is better on test accuracy (good − poor = +0.2")
    assert "400 test images, 2 and 2 seeds" in verdict["- good vs poor"]
    # 3 pairs that pair (good/poor/twin) x accuracy, plus good's selection metric for its 2 pairs: 5 comparisons
    assert "Holm-adjusted over 5 comparisons p = " in verdict["- good vs poor"]
    assert "not distinguishable on test accuracy; twin costs less to train and to run" in verdict["- poor vs twin"]
    assert verdict["- good vs other"] == (
        "- good vs other: cannot pair them: they were tested on different images (test set d1 vs d2)"
    )
    assert "  - macro F1 (selection metric val_f1_macro, higher is better): good is better on macro F1" in out
    assert (
        "  - cost per final model: poor 20 s training, 0.80 ms latency, 1,000 params; "
        "twin 10 s training, 0.40 ms latency, 1,000 params"
    ) in out
    md, page = (tmp_path / "cmp" / "report.md").read_text(), (tmp_path / "cmp" / "report.html").read_text()
    assert "## Verdict" in md and verdict["- poor vs twin"] in md and "2,000 resamples" in md
    assert "<h2>Verdict</h2>" in page and "good is better on test accuracy" in page

    # Damaged predictions: one line naming the file, exit 2, no report.
    bad = tmp_path / "poor" / "final" / "1" / "predictions.npz"
    bad.write_bytes(b"not a zip")
    r = tune_compare(tmp_path, "good", "poor", "--out", "cmp2")
    assert r.returncode == 2 and r.stderr.strip().startswith(f"tune-compare: error: {bad}: not a predictions file")
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "cmp2").exists()
    # Final models from before predictions.npz: the verdict says so, the table is still there.
    bad.unlink()
    r = tune_compare(tmp_path, "good", "poor")
    assert r.returncode == 0 and "- good vs poor: cannot pair them: poor has no per-image test predictions" in r.stdout


@pytest.mark.parametrize(
    "arrays,words",
    [
        (
            {"labels": np.array([0, 1], dtype=object), "pred": [0, 1], "probs": np.eye(2), "test_digest": "d"},
            "not a predictions file: Object arrays cannot be loaded when allow_pickle=False",
        ),
        ({"labels": [0, 1], "pred": [0, 1], "probs": np.eye(2)}, "test_digest: missing or not 0-dimensional"),
        (
            {"labels": [0, 1], "pred": [0, 1, 1], "probs": np.eye(2), "test_digest": "d"},
            "pred: labels, pred and probs must list the same images, got 2, 3 and 2",
        ),
        (
            {"labels": [0, 2], "pred": [0, 1], "probs": np.eye(2), "test_digest": "d"},
            "labels: class indices 0 <= i < 2 (the columns of probs) must hold",
        ),
    ],
)
def test_a_damaged_predictions_file_is_named_in_one_line(tmp_path, arrays, words):
    from search.report._verdict import read_predictions
    from search.spec._schema import SpecError

    np.savez(tmp_path / "p.npz", **{k: np.asarray(v) for k, v in arrays.items()})
    with pytest.raises(SpecError) as err:
        read_predictions(tmp_path / "p.npz")
    assert str(err.value).startswith(f"{tmp_path / 'p.npz'}: {words}")


def test_the_verdict_says_how_often_a_recipe_failed():
    """Seeds that diverged are dropped from the mean; the verdict says so, with how many of how many."""
    from search.report._verdict import failed_line

    study = {"experiment": "vit", "seeds": [0, 2], "seeds_planned": [0, 1, 2], "failed_seeds": [1]}
    assert failed_line(study) == "vit: 1 of 3 seeds failed (seeds 1); the comparison is of the 2 that trained"
    assert failed_line({**study, "seeds": [0, 1, 2], "failed_seeds": []}) == ""
    # A seed the budget left no time is said apart: not a failure of the recipe.
    both = {**study, "seeds": [0], "not_trained_seeds": [2]}
    assert failed_line(both) == (
        "vit: 1 of 3 seeds failed (seeds 1); 1 of 3 not trained for want of time (seeds 2); "
        "the comparison is of the 1 that trained"
    )
