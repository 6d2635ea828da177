"""Final evaluation without Ray: metrics against scikit-learn, interval math, weights round trip, cost."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

import trainables
import trainables.data
import trainables.final
from search import resolve
from search.report._stats import t_interval
from trainables.final import reevaluate, train_final
from trainables.metrics import bootstrap_interval, classification_metrics, softmax

LABELS = np.array([0, 0, 1, 1, 2, 2, 2, 1])
LOGITS = np.log(
    np.array(
        [
            [0.7, 0.2, 0.1],
            [0.3, 0.6, 0.1],
            [0.1, 0.8, 0.1],
            [0.2, 0.5, 0.3],
            [0.1, 0.1, 0.8],
            [0.5, 0.2, 0.3],
            [0.2, 0.2, 0.6],
            [0.1, 0.3, 0.6],
        ]
    )
)


def test_metrics_match_scikit_learn_on_fixed_predictions():
    m = classification_metrics(LOGITS, LABELS, ["a", "b", "c"], topk=2)
    pred = LOGITS.argmax(1)  # [0, 1, 1, 1, 2, 0, 2, 2]
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["per_class_accuracy"] == pytest.approx({"a": 0.5, "b": 2 / 3, "c": 2 / 3})
    p, r, f, _ = skm.precision_recall_fscore_support(LABELS, pred, average="macro")
    # By hand: precision a 1/2, b 2/3, c 2/3 -> 0.6111; recall 1/2, 2/3, 2/3 -> 0.6111.
    assert m["precision_macro"] == pytest.approx(p) == pytest.approx((1 / 2 + 2 / 3 + 2 / 3) / 3)
    assert m["recall_macro"] == pytest.approx(r) and m["f1_macro"] == pytest.approx(f)
    assert m["mcc"] == pytest.approx(skm.matthews_corrcoef(LABELS, pred))
    assert m["top2_accuracy"] == pytest.approx(skm.top_k_accuracy_score(LABELS, softmax(LOGITS), k=2))
    assert m["auc_roc"] == pytest.approx(skm.roc_auc_score(LABELS, softmax(LOGITS), multi_class="ovr"))
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 1], [1, 0, 2]]


def test_selection_metrics_match_scikit_learn_on_hand_made_labels():
    from trainables.metrics import selection_metrics

    y = np.array([0, 0, 1, 1, 2, 2, 2, 1])
    pred = np.array([0, 1, 1, 1, 2, 0, 2, 2])  # LOGITS' arg-max
    m = selection_metrics(y, pred, softmax(LOGITS))
    # By hand: recall a 1/2, b 2/3, c 2/3 -> balanced accuracy 11/18; F1 = 2tp / (2tp + fp + fn) per class:
    # a 2/4, b 4/6, c 4/6 -> macro 11/18 as well.
    assert m["val_balanced_acc"] == pytest.approx(11 / 18) == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["val_f1_macro"] == pytest.approx(11 / 18) == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["val_mcc"] == pytest.approx(skm.matthews_corrcoef(y, pred))
    assert "val_auc" not in m  # binary tasks only
    yb, pb = np.array([1, 0, 0, 1, 0]), np.array([0.9, 0.2, 0.6, 0.4, 0.1])
    m = selection_metrics(yb, (pb >= 0.5).astype(int), np.stack([1 - pb, pb], 1))
    assert m["val_auc"] == pytest.approx(5 / 6)  # 5 of the 6 (positive, negative) pairs ranked right
    assert m["val_mcc"] == pytest.approx(skm.matthews_corrcoef(yb, pb >= 0.5))
    # A model that predicts one class only: F1 and MCC are defined (0 for the empty class), not errors.
    m = selection_metrics(yb, np.zeros(5, int), np.stack([1 - pb, pb], 1))
    assert m["val_f1_macro"] == pytest.approx(0.75 / 2) and m["val_mcc"] == 0.0 and m["val_balanced_acc"] == 0.5


def test_binary_auc_uses_the_positive_score():
    logits = np.array([[0.0, 2.0], [0.0, -1.0], [0.0, 0.5], [0.0, -2.0]])
    y = np.array([1, 0, 0, 0])
    m = classification_metrics(logits, y, ["neg", "pos"])
    assert m["auc_roc"] == pytest.approx(1.0) and "top5_accuracy" not in m


def test_t_interval_math():
    v = t_interval([1.0, 2.0, 3.0])
    assert v["mean"] == 2.0 and v["std"] == pytest.approx(1.0)
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, df=2)
    assert (v["ci_low"], v["ci_high"]) == pytest.approx((2 - half, 2 + half))
    assert t_interval([0.5])["ci_low"] is None and t_interval([])["mean"] is None


def test_bootstrap_interval_brackets_the_estimate_and_narrows_with_n():
    rng = np.random.default_rng(0)
    acc = lambda y, p: float((y == p).mean())
    widths = []
    for n in (100, 2000):
        y = rng.integers(0, 2, n)
        p = np.where(rng.random(n) < 0.8, y, 1 - y)
        lo, hi = bootstrap_interval(y, p, acc, n_boot=400)
        assert lo <= acc(y, p) <= hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2


@pytest.fixture(scope="module")
def final_run(tmp_path_factory):
    spec = resolve(
        {
            "experiment": {"name": "f"},
            "data": {"dataset": "synthetic", "image_size": 16, "num_classes": 3, "num_samples": 300},
            "model": {"name": "cnn", "conv1": 8, "conv2": 8, "conv3": 8, "hidden": 16},
            "train": {"epochs": 2, "batch_size": 32, "device": "cpu"},
            "final": {"seeds": [5], "bootstrap": 200, "topk": 2, "timing_s": 0.2},
        },
        trainables,
    )
    out = tmp_path_factory.mktemp("final") / "5"
    pools = trainables.prepare(spec)
    return spec, pools, out, train_final(spec, pools, 5, out)


def test_final_folder_has_everything_to_rebuild_and_recheck(final_run):
    spec, pools, out, m = final_run
    for name in (
        "model.safetensors",
        "spec.yaml",
        "meta.json",
        "metrics.json",
        "per_class.csv",
        "confusion.png",
        "roc.png",
        "curves.png",
        "predictions.npz",
    ):
        assert (out / name).is_file(), name
    # Per test image, what a paired comparison needs: plain arrays, no pickle.
    with np.load(out / "predictions.npz", allow_pickle=False) as z:
        labels, pred, probs, digest = z["labels"], z["pred"], z["probs"], str(z["test_digest"])
        assert list(z["classes"]) == pools.classes
    assert labels.shape == pred.shape == (60,) and probs.shape == (60, 3)
    assert np.allclose(probs.sum(1), 1, atol=1e-5) and (probs.argmax(1) == pred).all()
    assert (pred == labels).mean() == pytest.approx(m["test"]["accuracy"])
    assert np.array_equal(np.bincount(labels * 3 + pred, minlength=9).reshape(3, 3), m["test"]["confusion_matrix"])
    assert len(digest) == 16
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["seed"] == 5 and saved["test"]["n"] == 60  # 20 % of 300 held out, never trained on
    assert saved["cost"]["params"] > 0 and saved["cost"]["flops_per_image"] > 0 and saved["cost"]["latency_ms"] > 0
    assert saved["cost"]["timing_s"] == 0.2  # final.timing_s: how long each speed was timed, recorded with it
    # train + val: 300 - 60 test = 240 images in final training
    assert saved["train_images"] == 240


def test_weights_round_trip_to_the_same_numbers(final_run):
    spec, pools, out, m = final_run
    again = reevaluate(out, pools, spec["data"], "test")
    for k in ("accuracy", "f1_macro", "mcc", "auc_roc", "confusion_matrix", "accuracy_bootstrap_ci"):
        assert again[k] == m["test"][k], k


def test_a_flip_tta_model_is_tested_rechecked_and_exported_as_it_was_measured(final_run, tmp_path, capsys):
    """train.tta=flip: the test metrics, tune-eval's re-check and the MLflow export all predict the mean of the
    image's and its mirror image's logits; tune-eval --set train.tta=... re-checks it under other views."""
    from trainables.batches import TestTimeAveraged
    from trainables.export import exportable

    spec, pools, _, _ = final_run
    spec = copy.deepcopy(spec)
    spec["train"]["tta"] = "flip"
    m = train_final(spec, pools, 5, tmp_path / "5")
    again = reevaluate(tmp_path / "5", pools, spec["data"], "test")
    assert again["accuracy"] == m["test"]["accuracy"] and again["confusion_matrix"] == m["test"]["confusion_matrix"]
    model, example = exportable(tmp_path / "5")
    assert isinstance(model, TestTimeAveraged) and model.tta == "flip"
    # Its cost is a prediction's: two passes of the network (FLOPs), the same parameters.
    from trainables.cost import flops_per_image

    plain = flops_per_image(model.model, example.shape[1], example.shape[-1], torch.device("cpu"))
    assert m["cost"]["flops_per_image"] == 2 * plain and m["cost"]["params"] == sum(
        p.numel() for p in model.model.parameters()
    )
    x = torch.randn(4, *example.shape[1:])
    with torch.no_grad():
        assert torch.allclose(model(x), (model.model(x) + model.model(x.flip(-1))) / 2)
        assert not torch.allclose(model(x), model.model(x), atol=1e-4)
    # tune-eval: the model's own views by default, the ones --set train.tta asks for otherwise (the same model
    # scored without its flips, or with airbench94's six views).
    from search.cli import eval_main

    scores = {}
    for tta in ("flip", "none", "flip_shift"):
        capsys.readouterr()
        assert eval_main([str(tmp_path / "5"), *(["--set", f"train.tta={tta}"] if tta != "flip" else [])]) == 0
        scores[tta] = json.loads(capsys.readouterr().out)
        expected = reevaluate(tmp_path / "5", pools, spec["data"], "test", tta=tta)
        assert scores[tta]["confusion_matrix"] == expected["confusion_matrix"], tta
    assert scores["flip"]["accuracy"] == m["test"]["accuracy"]
    assert len({str(scores[t]["confusion_matrix"]) for t in scores}) > 1, scores  # not one prediction thrice


def test_test_metrics_are_fp32_whatever_trained_the_model(tmp_path):
    """A model trained under bf16 autocast is tested in fp32, so tune-eval gives the same numbers on any machine
    (bf16 arithmetic differs between CPUs and GPUs; here its re-check would differ in the third decimal)."""
    spec = resolve(
        {
            "experiment": {"name": "f"},
            "data": {"dataset": "digits"},
            "model": {"name": "cnn", "conv1": 8, "conv2": 8, "conv3": 8, "hidden": 16},
            "train": {"epochs": 2, "batch_size": 64, "device": "cpu", "precision": "bf16"},
            "final": {"seeds": [0], "bootstrap": 100, "timing_s": 0.2},
        },
        trainables,
    )
    pools = trainables.prepare(spec)
    m = train_final(spec, pools, 0, tmp_path / "0")
    again = reevaluate(tmp_path / "0", pools, spec["data"], "test")
    assert again["accuracy"] == m["test"]["accuracy"] and again["confusion_matrix"] == m["test"]["confusion_matrix"]
    with np.load(tmp_path / "0" / "predictions.npz", allow_pickle=False) as z:
        probs = z["probs"]
    model, _, meta = trainables.final.load_model(tmp_path / "0")
    split = trainables.data.make_splits(pools, spec["data"]).test
    x = torch.as_tensor(pools.train_x[split]).float().div(255)
    x = (x - torch.tensor(meta["mean"]).view(1, -1, 1, 1)) / torch.tensor(meta["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        fp32 = torch.softmax(model.eval()(x).double(), 1).float().numpy()
    assert np.allclose(probs, fp32, atol=1e-5)  # the reported probabilities are the fp32 model's


def test_a_seed_folder_appears_whole_or_leaves_the_previous_one(final_run, tmp_path, monkeypatch):
    """A write that fails part-way (a full disk while plotting) leaves no partial seed folder, and a model
    retrained over an earlier one keeps the earlier one until the new one is complete."""
    import errno

    import trainables.final as tf

    spec, pools, out, m = final_run
    seed = tmp_path / "5"

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tf, "plots", full)
    with pytest.raises(OSError, match="No space left"):
        train_final(spec, pools, 5, seed)
    assert list(tmp_path.iterdir()) == []  # neither the seed folder nor its staging copy
    monkeypatch.undo()
    train_final(spec, pools, 5, seed)
    before = (seed / "model.safetensors").read_bytes()
    monkeypatch.setattr(tf, "plots", full)
    with pytest.raises(OSError):
        train_final(spec, pools, 5, seed)
    assert (seed / "model.safetensors").read_bytes() == before and (seed / "curves.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["5"]


def test_same_seed_same_final_metrics(final_run, tmp_path):
    spec, pools, out, m = final_run
    m2 = train_final(spec, pools, 5, tmp_path / "5")
    assert m2["test"]["accuracy"] == m["test"]["accuracy"]
    assert m2["test"]["confusion_matrix"] == m["test"]["confusion_matrix"]
    digest = lambda d: str(np.load(d / "predictions.npz", allow_pickle=False)["test_digest"])  # noqa: E731
    assert digest(tmp_path / "5") == digest(out)  # the same test images: the two models pair
    assert [h["train_loss"] for h in m2["history"]] == [h["train_loss"] for h in m["history"]]


def test_final_on_train_val_holds_nothing_out(tmp_path):
    """train+val: no val_* metric anywhere (it would be measured on training images), and the fixed number
    of epochs even with early stopping set (it would stop on that in-sample "validation")."""
    spec = resolve(
        {
            "experiment": {"name": "tv"},
            "data": {"dataset": "synthetic", "image_size": 8, "num_classes": 3, "num_samples": 150},
            "model": {"name": "cnn", "conv1": 4, "conv2": 4, "conv3": 4, "hidden": 8},
            "train": {
                "epochs": 2,
                "batch_size": 32,
                "device": "cpu",
                "lr": 5.0,
                "early_stopping": 1,
                "schedule": "plateau",
                "plateau_patience": 0,
            },
            "final": {"epochs": 4, "bootstrap": 20, "timing_s": 0.2},
        },
        trainables,
    )
    m = train_final(spec, trainables.prepare(spec), 0, tmp_path / "0")
    saved = json.loads((tmp_path / "0" / "metrics.json").read_text())
    assert [h["epoch"] for h in saved["history"]] == [1, 2, 3, 4]  # final.epochs, not train.epochs, all of them
    assert not any(k.startswith("val_") or k == "early_stopped" for h in saved["history"] for k in h)
    # What it computed in and why: 4 epochs of ~130 images are too short to repay timing the candidates
    # (train.precision: auto), so this device's rule chose, untimed.
    arith = {k: saved["training"].pop(k) for k in ("arithmetic", "source", "images_per_s")}
    assert arith["source"] == "short-run rule" and arith["images_per_s"] == {}
    assert arith["arithmetic"] in {"fp32", "bf16+channels_last"}
    assert saved["training"] == {
        "train_on": "train+val",
        "validation": False,
        "epochs": 4,
        "epochs_from": "final.epochs",
        "epochs_planned": 4,
        "time_limit_s": None,  # no wall-clock budget: nothing to re-plan to
        "time_limit_s_planned": None,
        "replanned_to_time_limit": False,
        "early_stopping": 0,
        "schedule_monitor": "train_loss",
    }
    assert (tmp_path / "0" / "curves.png").is_file() and m["history"] == saved["history"]


def test_final_on_train_keeps_real_validation(tmp_path):
    spec = resolve(
        {
            "experiment": {"name": "t"},
            "data": {"dataset": "synthetic", "image_size": 8, "num_classes": 3, "num_samples": 150},
            "model": {"name": "cnn", "conv1": 4, "conv2": 4, "conv3": 4, "hidden": 8},
            "train": {"epochs": 2, "batch_size": 32, "device": "cpu", "early_stopping": 3},
            "final": {"train_on": "train", "bootstrap": 20, "timing_s": 0.2},
        },
        trainables,
    )
    m = train_final(spec, trainables.prepare(spec), 0, tmp_path / "0")
    assert all("val_loss" in h and "val_acc" in h for h in m["history"]) and len(m["history"]) == 2
    assert m["training"].pop("arithmetic") and m["training"].pop("source") and m["training"].pop("images_per_s") == {}
    assert m["training"] == {
        "train_on": "train",
        "validation": True,
        "epochs": 2,
        "epochs_from": "train.epochs",
        "epochs_planned": 2,
        "time_limit_s": None,
        "time_limit_s_planned": None,
        "replanned_to_time_limit": False,
        "early_stopping": 3,
        "schedule_monitor": "val_loss",
    }


def test_reevaluate_refuses_other_classes(final_run):
    spec, pools, out, m = final_run
    other = copy.copy(pools)
    other.classes = ["x", "y", "z"]
    with pytest.raises(ValueError, match="do not match"):
        reevaluate(out, other, spec["data"])


def test_binary_threshold_changes_predictions():
    logits = np.log(np.array([[0.6, 0.4], [0.3, 0.7], [0.55, 0.45], [0.9, 0.1]]))
    y = np.array([1, 1, 1, 0])
    assert classification_metrics(logits, y, ["n", "p"])["accuracy"] == pytest.approx(0.5)
    m = classification_metrics(logits, y, ["n", "p"], threshold=0.35)
    assert m["accuracy"] == pytest.approx(1.0) and m["threshold"] == 0.35
    assert m["auc_roc"] == pytest.approx(1.0)  # ranking-based: the threshold does not move it


def test_threshold_tuned_on_validation_is_saved_and_reused(tmp_path):
    spec = resolve(
        {
            "experiment": {"name": "b"},
            "data": {"dataset": "synthetic", "image_size": 8, "num_classes": 2, "num_samples": 200},
            "model": {"name": "cnn", "conv1": 4, "conv2": 4, "conv3": 4, "hidden": 8},
            "train": {"epochs": 1, "batch_size": 32, "device": "cpu"},
            "final": {"threshold": "tune", "train_on": "train", "bootstrap": 50, "timing_s": 0.2},
        },
        trainables,
    )
    pools = trainables.prepare(spec)
    m = train_final(spec, pools, 0, tmp_path / "0")
    t = m["test"]["threshold"]
    assert t is not None and 0.05 <= t <= 0.95
    assert json.loads((tmp_path / "0" / "meta.json").read_text())["threshold"] == t
    assert reevaluate(tmp_path / "0", pools, spec["data"])["accuracy"] == m["test"]["accuracy"]


def test_threshold_rules(backend):
    from search import SpecError

    base = {"data": {"dataset": "digits"}, "model": {"name": "cnn"}, "experiment": {"name": "x"}}
    with pytest.raises(SpecError, match="final.train_on: train"):
        resolve({**base, "final": {"threshold": "tune"}}, backend)
    with pytest.raises(SpecError, match="0 < threshold < 1 must hold"):
        resolve({**base, "final": {"threshold": 1.5}}, backend)
    with pytest.raises(SpecError, match="or 'tune'"):
        resolve({**base, "final": {"threshold": "auto"}}, backend)


def test_positive_class_metrics_are_the_named_class(tmp_path, monkeypatch, capsys):
    """coin/ + other/ with positive_class: coin: the reported recall is the share of coin images (found by
    their folder, not their label) predicted coin; meta.json and re-evaluation keep that order."""
    from tests.conftest import make_image_tree
    from trainables.engine import FitResult, predict_split
    from trainables.metrics import predict_labels
    from trainables.model_folder import load_model

    monkeypatch.setattr("trainables.folders.CACHE_DIR", tmp_path / "cache")
    make_image_tree(tmp_path / "t", {"coin": 30, "other": 40}, size=8)
    spec = resolve(
        {
            "experiment": {"name": "coins"},
            "data": {"dataset": "imagefolder", "root": str(tmp_path / "t"), "positive_class": "coin"},
            "model": {"name": "cnn", "conv1": 4, "conv2": 4, "conv3": 4, "hidden": 8},
            "train": {"epochs": 1, "batch_size": 16, "device": "cpu", "loss": "bce", "threshold": 0.6},
            "final": {"bootstrap": 20, "timing_s": 0.2},
        },
        trainables,
    )
    pools = trainables.prepare(spec)
    assert "2 classes (positive: coin)" in trainables.describe(pools)
    m = train_final(spec, pools, 0, tmp_path / "0")["test"]
    meta = json.loads((tmp_path / "0" / "meta.json").read_text())
    assert m["positive_class"] == meta["positive_class"] == "coin" and meta["classes"] == ["other", "coin"]
    # By hand: coin files are the first 30 of the listing (coin/ sorts first), whatever their label.
    model, _, meta = load_model(tmp_path / "0")
    splits = trainables.make_splits(pools, spec["data"])
    res = FitResult(
        model, [], splits, meta["mean"], meta["std"], meta["image_size"], next(model.parameters()).device, False
    )
    logits, _ = predict_split(res, pools, "test")
    coin_files = splits.test < 30
    pred = predict_labels(logits, 0.6)
    assert m["recall"] == pytest.approx(float((pred[coin_files] == meta["classes"].index("coin")).mean()))
    assert m["recall"] == m["per_class_recall"]["coin"]
    assert reevaluate(tmp_path / "0", pools, spec["data"])["recall"] == m["recall"]
    # tune-eval reads the class order from meta.json: the model's output 1 is coin, whatever --set says.
    from search.cli import eval_main

    capsys.readouterr()
    assert eval_main([str(tmp_path / "0"), "--set", "data.positive_class=other"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["positive_class"] == "coin" and out["recall"] == m["recall"]


def test_a_diverged_final_seed_is_an_error_not_a_model(tmp_path):
    """NaN weights give no numbers worth averaging: the seed fails (run_final lists it under errors)."""
    spec = resolve(
        {
            "experiment": {"name": "d"},
            "model": {"name": "cnn", "conv1": 8, "conv2": 8, "conv3": 8, "hidden": 16},
            "data": {"dataset": "synthetic", "image_size": 16, "num_classes": 3, "num_samples": 300},
            "train": {"epochs": 2, "batch_size": 32, "lr": 1.0e9, "device": "cpu"},
            "final": {"seeds": [0], "timing_s": 0.2},
        },
        trainables,
    )
    with pytest.raises(FloatingPointError, match="final seed 0: training loss became nan at epoch 1"):
        train_final(spec, trainables.prepare(spec), 0, tmp_path / "0")
    assert not (tmp_path / "0" / "metrics.json").exists()


def test_an_interruption_before_any_seed_finished_is_reported_not_a_traceback(capsys):
    """Ctrl-C before Tune ended any seed: no numbers and no cost to print (it raised KeyError: 'params')."""
    from search.run._final import summarise
    from search.run._summary import final_summary as _final_summary

    summary = {
        "summary": summarise([], 5),
        "experiment": "x",
        "seeds": [],
        "errors": [],
        "out_dir": "/tmp/x",
        "unfinished": [0, 1],
    }
    assert _final_summary(summary, "f.yaml") == 130
    assert "Interrupted: seeds [0, 1] unfinished" in capsys.readouterr().out
