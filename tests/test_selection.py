"""Which trial is the best: one rule, at one fidelity, by the value the configuration reproduces (issue 23)."""

from __future__ import annotations

from search.store._export import select_best, trial_rows


def trial(trial_id: str, accs: list[float], length: int = 4, **last: object) -> dict:
    history = [{"epoch": i + 1, "val_acc": a} for i, a in enumerate(accs)]
    return {
        "trial_id": trial_id,
        "config": {"train.lr": 0.1},
        "last": {**history[-1], **last},
        "history": history,
        "error": "",
        "finished": True,
    }


def rows(*trials: dict) -> list[dict]:
    return trial_rows(list(trials), ["train.lr"], "val_acc", "max", 4)


def test_a_trial_that_peaked_and_degraded_loses_to_a_steady_one():
    """Retraining a configuration reproduces its last epoch, not a peak it passed on the way."""
    r = rows(trial("spiky", [0.5, 0.9, 0.7, 0.6]), trial("steady", [0.5, 0.6, 0.7, 0.8]))
    assert {x["trial_id"]: x["best_epoch"] for x in r} == {"spiky": 2, "steady": 4}
    best, rule = select_best(r, "val_acc", "max")
    assert best["trial_id"] == "steady" and rule == "final val_acc among the 2 trial(s) that ran their whole schedule"


def test_a_trial_cut_early_is_not_ranked_against_finished_ones():
    """A trial stopped at a low rung (or cut by the budget before its learning rate decayed) may read higher at
    epoch 1 than finished trials do at their end: it is not compared with them."""
    r = rows(trial("cut", [0.95]), trial("done", [0.5, 0.6, 0.7, 0.8]))
    assert [x["status"] for x in r] == ["stopped", "completed"]
    assert select_best(r, "val_acc", "max")[0]["trial_id"] == "done"
    # None finished: those that reached the most epochs, by their value there.
    r = rows(trial("one", [0.95]), trial("two", [0.5, 0.7]), trial("two-b", [0.6, 0.75]))
    best, rule = select_best(r, "val_acc", "max")
    assert best["trial_id"] == "two-b"
    assert rule == "val_acc at epoch 2 among the 2 trial(s) that reached it (none ran its whole schedule)"


def test_failed_trials_are_never_the_best():
    r = rows(trial("nan", [0.99], diverged=1, reason="loss nan"), trial("ok", [0.5, 0.6, 0.7, 0.8]))
    assert select_best(r, "val_acc", "max")[0]["trial_id"] == "ok"
    assert select_best(rows(trial("nan", [0.99], diverged=1)), "val_acc", "max") is None


def test_an_epoch_reported_again_after_a_resume_is_one_value_of_the_trials_curve():
    """A driver killed after a trial's last epoch, before Tune recorded its end: the resumed trial restores that
    checkpoint and reports its last result again; one resumed from an older checkpoint reruns the epochs after
    it. trials.csv holds one value per epoch, the later one (what training continued from)."""
    t = trial("resumed", [0.5, 0.6, 0.7])
    t["history"] = [*t["history"][:2], {"epoch": 2, "val_acc": 0.65}, *t["history"][2:], t["history"][-1]]
    (row,) = rows(t)
    assert row["val_acc_by_epoch"] == "0.5 0.65 0.7"
    assert (row["best_val_acc"], row["best_epoch"], row["epochs"]) == (0.7, 3, 3)
