"""Which settings mattered: fANOVA shares over a trials table, on tables whose answer is known by construction."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from search.report._importance import importance, parallel_plot, write_importance
from search.store._paths import IMPORTANCE_FILE, PARALLEL_FILE

SPACE = {
    "train.lr": {"loguniform": [1e-4, 1e-1]},
    "model.dropout": {"uniform": [0.0, 0.5]},
    "train.label_smoothing": {"choice": [0.0, 0.1, 0.2]},
}


def rows_where_lr_decides(n: int = 30, seed: int = 0) -> list[dict]:
    """Accuracy peaks at lr = 10^-2.5 and does not depend on the other two settings (plus tiny noise)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        lr = float(10 ** rng.uniform(-4, -1))
        rows.append(
            {
                "trial_id": f"t{i}",
                "status": "completed" if i % 3 else "stopped",
                "train.lr": lr,
                "model.dropout": float(rng.uniform(0, 0.5)),
                "train.label_smoothing": float(rng.choice([0.0, 0.1, 0.2])),
                "best_val_acc": 0.9 - 0.1 * (math.log10(lr) + 2.5) ** 2 + 1e-3 * rng.normal(),
            }
        )
    return rows


def test_the_setting_that_decides_the_metric_gets_almost_all_the_variance():
    imp = importance(rows_where_lr_decides(), SPACE, "val_acc", "max")
    assert imp.trials == 30 and list(imp.shares)[0] == "train.lr"
    assert imp.shares["train.lr"] > 0.8 and sum(imp.shares.values()) == pytest.approx(1.0)
    assert imp.line().startswith(
        "settings that mattered (val_acc variance explained, fANOVA over 30 trials): train.lr 9"
    )
    again = importance(rows_where_lr_decides(), SPACE, "val_acc", "max")
    assert again.shares == imp.shares  # a fixed evaluator seed: the report is repeatable


def test_failed_trials_do_not_count_and_too_few_trials_give_a_reason():
    rows = rows_where_lr_decides(6)
    for r in rows[:3]:
        r.update(status="infeasible", best_val_acc=math.nan)
    rows[3].update(status="diverged")
    imp = importance(rows, SPACE, "val_acc", "max")
    assert imp.trials == 2 and not imp.shares
    assert imp.line() == "settings that mattered: 2 scored trial(s); at least 5 are needed to split the variance"


def test_keys_of_one_branch_are_left_out_and_named_the_branch_label_counts():
    space = {
        "family": {
            "choice": [
                {"name": "cnn", "model.name": "cnn", "model.dropout": {"uniform": [0.0, 0.5]}},
                {"name": "vit", "model.name": "vit", "model.depth": {"randint": [2, 6]}},
            ]
        },
        "train.lr": {"loguniform": [1e-4, 1e-1]},
    }
    rng = np.random.default_rng(1)
    rows = []
    for i in range(24):
        fam = "cnn" if i % 2 else "vit"
        rows.append(
            {
                "trial_id": str(i),
                "status": "completed",
                "family": fam,
                "model.name": fam,
                "train.lr": float(10 ** rng.uniform(-4, -1)),
                "model.dropout": float(rng.uniform(0, 0.5)) if fam == "cnn" else "",
                "model.depth": int(rng.integers(2, 7)) if fam == "vit" else math.nan,
                "best_val_acc": (0.9 if fam == "cnn" else 0.6) + 1e-3 * rng.normal(),
            }
        )
    imp = importance(rows, space, "val_acc", "max")
    assert imp.left_out == ["model.dropout", "model.depth"]
    assert set(imp.shares) == {"family", "train.lr"} and imp.shares["family"] > 0.8  # model.name follows family


def test_written_beside_trials_csv_with_a_parallel_coordinates_plot(tmp_path):
    spec = {"space": SPACE, "experiment": {"name": "s", "metric": "val_loss", "mode": "min"}}
    rows = rows_where_lr_decides()
    for r in rows:
        r["best_val_loss"] = 1 - r.pop("best_val_acc")
    imp = write_importance(tmp_path, spec, rows)
    saved = json.loads((tmp_path / IMPORTANCE_FILE).read_text())
    assert (
        saved["evaluator"] == "fanova"
        and saved["trials"] == 30
        and max(saved["shares"], key=saved["shares"].get) == "train.lr"
    )
    assert (tmp_path / PARALLEL_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert parallel_plot(imp, "s")[:4] == b"\x89PNG"
    # A later state with too few trials keeps no plot of the earlier one.
    write_importance(tmp_path, spec, rows[:2])
    assert not (tmp_path / PARALLEL_FILE).exists() and json.loads((tmp_path / IMPORTANCE_FILE).read_text())["reason"]
    assert write_importance(tmp_path, {**spec, "space": {}}, rows) is None


def test_a_table_it_cannot_read_gives_a_reason_not_an_exception(tmp_path):
    from search.report._importance import safe_importance

    rows = rows_where_lr_decides()
    rows[4]["train.lr"] = "not a number"  # a hand-edited trials.csv
    imp = safe_importance(rows, SPACE, "val_acc", "max")
    assert not imp.shares and imp.reason.startswith("not computed (ValueError: ")
    spec = {"space": SPACE, "experiment": {"name": "s", "metric": "val_acc", "mode": "max"}}
    assert write_importance(tmp_path, spec, rows).reason == imp.reason  # the study's results are written regardless


def test_trials_are_compared_at_one_fidelity_not_each_at_its_best():
    """A scheduler stopped the high-dropout half at epoch 1 (low there); the finished half's epoch-4 value depends
    on lr alone. Each trial at its own best would credit dropout with whether a trial ran long; at one fidelity
    (epoch 4, which half of them reached) lr explains the metric."""
    rng = np.random.default_rng(1)
    rows = []
    for i in range(32):
        lr, dropout = float(10 ** rng.uniform(-4, -1)), 0.5 * i / 31
        final = 0.9 - 0.1 * (math.log10(lr) + 2.5) ** 2
        curve = [0.3] if dropout > 0.25 else [0.5, 0.6, 0.7, final]
        rows.append(
            {
                "trial_id": f"t{i}",
                "status": "stopped" if len(curve) == 1 else "completed",
                "train.lr": lr,
                "model.dropout": dropout,
                "train.label_smoothing": 0.1,
                "best_val_acc": max(curve),
                "val_acc_by_epoch": " ".join(f"{v:.6g}" for v in curve),
            }
        )
    imp = importance(rows, SPACE, "val_acc", "max")
    assert imp.fidelity == "at epoch 4, reached by 16 of 32 scored trials" and imp.trials == 16
    assert imp.shares["train.lr"] > 2 * imp.shares["model.dropout"], imp.shares
    assert "at epoch 4" in imp.line() and imp.as_dict()["fidelity"] == imp.fidelity
    each_at_its_best = importance(
        [{k: v for k, v in r.items() if k != "val_acc_by_epoch"} for r in rows], SPACE, "val_acc", "max"
    )
    assert each_at_its_best.shares["model.dropout"] > each_at_its_best.shares["train.lr"]  # what it measured before
