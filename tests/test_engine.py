"""The training engine without Ray: learning, determinism, resume equivalence, augmentation, schedules."""

from __future__ import annotations

import copy
import itertools
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import trainables
from search import resolve
from trainables.augment import augment_batch
from trainables.engine import fit
from trainables.ray_adapter import save_checkpoint
from trainables.recipe import build_schedule
from trainables.sections import AUGMENT_DEFAULTS

SPEC = {
    "experiment": {"name": "e"},
    "data": {
        "dataset": "synthetic",
        "image_size": 16,
        "num_classes": 4,
        "num_samples": 400,
        "augment": {"hflip": 0.5, "pad_crop": 2},
    },
    "model": {"name": "cnn", "conv1": 8, "conv2": 16, "conv3": 16, "hidden": 32, "dropout": 0.0},
    "train": {
        "epochs": 3,
        "batch_size": 32,
        "lr": 3e-3,
        "schedule": "cosine",
        "warmup_epochs": 1,
        "seed": 3,
        "device": "cpu",
    },
}


@pytest.fixture(scope="module")
def setup():
    spec = resolve(copy.deepcopy(SPEC), trainables)
    return spec, trainables.prepare(spec)


def test_learns_synthetic(setup):
    spec, pools = setup
    res = fit(spec, pools)
    h = res.history
    assert [m["epoch"] for m in h] == [1, 2, 3]
    assert h[-1]["val_acc"] > 0.8 > 0.25  # 4 classes: chance is 0.25
    # The selection metrics beyond accuracy, every epoch (val_auc: binary tasks only).
    assert all({"val_f1_macro", "val_mcc", "val_balanced_acc"} <= m.keys() and "val_auc" not in m for m in h)
    assert h[-1]["val_f1_macro"] > 0.8 and h[-1]["val_mcc"] > 0.7 and h[-1]["val_balanced_acc"] > 0.8
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    assert all(m["images_per_s"] > 0 and m["epoch_time_s"] > 0 for m in h)
    # train_seconds (an objective beside accuracy): the epochs' wall time so far
    assert [m["train_seconds"] for m in h] == pytest.approx(list(itertools.accumulate(m["epoch_time_s"] for m in h)))
    assert all(m["gpu_hours"] == 0.0 for m in h)  # on CPU no GPU is held (resources.gpu_hours: the budget's gpu-h)


def test_same_seed_same_metrics_on_cpu(setup):
    spec, pools = setup
    a, b = fit(spec, pools).history, fit(spec, pools).history
    timing = ("epoch_time_s", "images_per_s", "train_seconds", "gpu_hours")
    strip = lambda h: [{k: v for k, v in m.items() if k not in timing} for m in h]
    assert strip(a) == strip(b)
    other = copy.deepcopy(spec)
    other["train"]["seed"] = 4
    assert strip(fit(other, pools).history) != strip(a)


def test_resume_from_checkpoint_equals_uninterrupted(setup, tmp_path):
    """A run stopped after epoch 1 and resumed from its saved checkpoint ends exactly where a straight run
    ends — with dropout and augmentation drawing random numbers all along."""
    spec, pools = setup
    spec = copy.deepcopy(spec)
    spec["model"]["dropout"] = 0.3
    assert spec["data"]["augment"]["hflip"] > 0 and spec["data"]["augment"]["pad_crop"] > 0
    straight = fit(spec, pools).history

    def grab(metrics, get_state):
        if metrics["epoch"] == 1:  # written and read back as the Ray adapter does
            save_checkpoint(get_state(), str(tmp_path / "state.pt"))

    fit(spec, pools, on_epoch=grab)
    saved = torch.load(tmp_path / "state.pt", map_location="cpu", weights_only=True)
    resumed = fit(spec, pools, state=saved).history
    assert [m["epoch"] for m in resumed] == [1, 2, 3]
    keys = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")
    assert [[m[k] for k in keys] for m in resumed] == [[m[k] for k in keys] for m in straight]
    # The resumed run's training time counts on from the checkpoint's epochs.
    assert resumed[1]["train_seconds"] == pytest.approx(resumed[0]["epoch_time_s"] + resumed[1]["epoch_time_s"])
    assert torch.serialization.get_crc32_options()  # the writer's setting (no CRC-32) stays its own
    assert {i.CRC for i in zipfile.ZipFile(tmp_path / "state.pt").infolist()} == {0}  # written without them
    # A checkpoint cut short (a node lost mid-write) does not load as a state: it fails.
    data = (tmp_path / "state.pt").read_bytes()
    (tmp_path / "torn.pt").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises((RuntimeError, OSError)):  # torch's "failed finding central directory", or EINVAL
        torch.load(tmp_path / "torn.pt", map_location="cpu", weights_only=True)


FAST_CNN = {"name": "fast_cnn", "width1": 8, "width2": 16, "width3": 16}


def test_fast_cnn_whitens_the_training_patches_keeps_the_stem_fixed_and_resumes_exactly(setup, tmp_path):
    """fast_cnn's stem is set from the training images before the first step: on those images its 2x2 patch
    responses are decorrelated with unit variance (a whitening, not random filters). Training leaves the stem's
    filters where the data put them, learns, and a resumed run ends where an uninterrupted one does."""
    from trainables.batches import Batcher, pixels
    from trainables.engine import INIT_IMAGES

    spec, pools = setup
    spec = copy.deepcopy(spec)
    spec["model"] = dict(FAST_CNN)
    spec = resolve(spec, trainables)
    seen = []

    def grab(metrics, get_state):
        seen.append(copy.deepcopy(get_state()))
        if metrics["epoch"] == 1:
            save_checkpoint(get_state(), str(tmp_path / "state.pt"))

    res = fit(spec, pools, on_epoch=grab)
    assert res.history[-1]["val_acc"] > 0.8  # 4 classes: chance is 0.25
    again = pickle.loads(pickle.dumps(res.model))  # as MLflow stores a final model (export.py: pickle)
    assert torch.equal(again.whiten.weight, res.model.whiten.weight)
    stem = res.model.whiten.weight.detach()
    assert all(torch.equal(s["model"]["whiten.weight"], stem) for s in seen)  # fixed while the rest trains
    # On the (unaugmented, normalised) training images the stem saw, its filters' responses to 2x2 patches have
    # the identity as covariance, up to the eigenvalue floor (WHITEN_EPS) that keeps noisy directions bounded.
    assert len(res.splits.train) < INIT_IMAGES  # so it saw every training image
    b = Batcher(
        pixels(pools.train_x), torch.as_tensor(pools.train_y), 16, res.mean, res.std, torch.device("cpu"), False
    )
    x = b(torch.as_tensor(res.splits.train))[0]
    k = stem.shape[0] // 2  # the other half are the same filters negated
    resp = torch.nn.functional.conv2d(x, stem[:k]).permute(0, 2, 3, 1).reshape(-1, k)
    cov = torch.cov(resp.T.double())
    assert torch.allclose(cov, torch.diag(cov.diagonal()), atol=1e-4)
    assert cov.diagonal().min() > 0.6 and cov.diagonal().max() < 1.0 + 1e-4
    assert torch.equal(stem[k:], -stem[:k])
    saved = torch.load(tmp_path / "state.pt", map_location="cpu", weights_only=True)
    resumed = fit(spec, pools, state=saved).history
    keys = ("train_loss", "val_loss", "val_acc", "lr")
    assert [[m[k] for k in keys] for m in resumed] == [[m[k] for k in keys] for m in res.history]


def test_norm_lr_scale_trains_batch_norm_shifts_faster_with_the_same_decay_per_step(setup):
    """train.norm_lr_scale: the normalisation layers' parameters (fast_cnn: batch norm's shifts; its scales are
    fixed) step at scale x the lr with weight decay / scale, the rest at the lr; the reported lr is the rest's; a
    restored run with other values (a PBT exploit) takes the new ones, and the shape of its schedule."""
    from trainables.engine import restore
    from trainables.engine import setup as setup_run
    from trainables.recipe import NORM_LAYERS

    spec, pools = setup
    spec = copy.deepcopy(spec)
    spec["model"] = dict(FAST_CNN)
    spec["train"].update(optimizer="sgd", lr=0.05, weight_decay=1e-3, norm_lr_scale=64.0, schedule="none")
    spec = resolve(spec, trainables)
    run = setup_run(spec, pools, torch.device("cpu"))
    rest, norm = run.opt.param_groups
    shifts = [m.bias for m in run.model.modules() if isinstance(m, NORM_LAYERS)]
    assert {id(p) for p in norm["params"]} == {id(b) for b in shifts}  # the scales are not trained at all
    assert not any(m.weight.requires_grad for m in run.model.modules() if isinstance(m, NORM_LAYERS))
    assert (rest["lr"], rest["weight_decay"]) == (pytest.approx(0.05), 1e-3)
    assert norm["lr"] == pytest.approx(0.05 * 64) and norm["lr"] * norm["weight_decay"] == pytest.approx(0.05e-3)
    state = {"model": run.model.state_dict(), "optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict()}
    other = copy.deepcopy(spec)
    other["train"].update(lr=0.02, norm_lr_scale=8.0)
    again = setup_run(other, pools, torch.device("cpu"))
    restore(again, {**state, "epoch": 1})
    assert [g["lr"] for g in again.opt.param_groups] == pytest.approx([0.02, 0.16])
    assert fit(spec, pools).history[0]["lr"] == pytest.approx(0.05)  # the lr a user set, not the scaled one


@pytest.mark.parametrize("schedule", ["cosine", "plateau"])
def test_a_checkpoint_from_before_the_norm_group_resumes_with_each_parameters_state(setup, schedule):
    """Checkpoints written before the normalisation layers had an optimizer group of their own hold one group (every
    trainable parameter in the model's order): a study started then resumes now, each parameter's momentum with
    it, and a plateau schedule saved with one group still reduces every group's rate."""
    from trainables.engine import restore
    from trainables.engine import setup as setup_run
    from trainables.recipe import build_optimizer

    spec, pools = setup
    spec = copy.deepcopy(spec)
    spec["train"].update(optimizer="sgd", momentum=0.9, schedule=schedule, warmup_epochs=0, norm_lr_scale=64.0)
    spec = resolve(spec, trainables)
    old = setup_run(spec, pools, torch.device("cpu"))
    trainable = [p for p in old.model.parameters() if p.requires_grad]
    opt = build_optimizer(trainable, spec["train"])  # as the earlier version built it: one group
    sched = build_schedule(opt, spec["train"])
    sum((p.float() ** 2).sum() for p in trainable).backward()  # a step that leaves momentum on every parameter
    opt.step()
    state = {
        "epoch": 1,
        "model": old.model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
    }
    new = setup_run(spec, pools, torch.device("cpu"))
    assert len(new.opt.param_groups) == 2  # the cnn's batch norms have their own group now
    restore(new, state)
    again = [p for p in new.model.parameters() if p.requires_grad]
    assert all(
        torch.equal(new.opt.state[q]["momentum_buffer"], opt.state[p]["momentum_buffer"])
        for p, q in zip(trainable, again)
    )
    rest, norm = new.opt.param_groups
    assert norm["lr"] == pytest.approx(64 * rest["lr"]) and rest["lr"] == pytest.approx(3e-3)  # the spec's rates
    if schedule == "plateau":
        for _ in range(int(spec["train"]["plateau_patience"]) + 2):  # no improvement: one reduction
            new.sched.step(1.0)
        gamma = float(spec["train"]["gamma"])
        assert [g["lr"] for g in new.opt.param_groups] == pytest.approx([3e-3 * gamma, 64 * 3e-3 * gamma])


def test_flip_tta_predicts_the_mean_of_an_image_and_its_mirror(setup):
    """train.tta=flip: validation (and every later prediction) averages the logits of each image and its mirror
    image, so a mirrored image gets the very same prediction."""
    from trainables.batches import Batcher, pixels, predict

    spec, pools = setup
    spec = copy.deepcopy(spec)
    spec["train"].update(epochs=1, tta="flip")
    res = fit(spec, pools)
    b = Batcher(
        pixels(pools.train_x), torch.as_tensor(pools.train_y), 16, res.mean, res.std, torch.device("cpu"), False
    )
    idx = res.splits.val[:64]
    tta, _ = predict(res.model, b, idx, 32, autocast=False, tta="flip")
    x = b(torch.as_tensor(idx))[0]
    with torch.no_grad():
        plain, mirror = res.model(x), res.model(x.flip(-1))
    assert torch.allclose(tta, (plain + mirror) / 2, atol=1e-5) and not torch.allclose(plain, mirror, atol=1e-3)
    flipped = Batcher(
        pixels(pools.train_x.copy()[..., ::-1].copy()),
        torch.as_tensor(pools.train_y),
        16,
        res.mean,
        res.std,
        torch.device("cpu"),
        False,
    )
    assert torch.allclose(predict(res.model, flipped, idx, 32, autocast=False, tta="flip")[0], tta, atol=1e-5)
    assert res.tta == "flip"  # predict_split (final test, tune-eval) predicts the same way
    logits, labels = trainables.engine.predict_split(res, pools, "val")
    assert res.history[-1]["val_acc"] == pytest.approx(float((logits.argmax(1) == labels).mean()))


def test_flip_shift_tta_averages_airbench94s_six_views_by_their_weights():
    """train.tta=flip_shift: half the flip mean of the image, a quarter each of the flip means of the windows one pixel
    up-left and one down-right of it, edges reflected (airbench94's); computed here from the views by hand."""
    from trainables.batches import predictor

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(5)).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        model(x)

        def mirrored(v: torch.Tensor) -> torch.Tensor:
            return (model(v) + model(v.flip(-1))) / 2

        padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
        up_left, down_right = padded[..., :8, :8], padded[..., 2:, 2:]
        assert torch.equal(up_left[..., 1:, 1:], x[..., :7, :7]) and torch.equal(
            down_right[..., :7, :7], x[..., 1:, 1:]
        )
        want = mirrored(x) / 2 + mirrored(up_left) / 4 + mirrored(down_right) / 4
        assert torch.allclose(predictor(model, "flip_shift")(x), want, atol=1e-6)
        assert torch.allclose(predictor(model, "flip")(x), mirrored(x), atol=1e-6)
        assert predictor(model, "none") is model


def test_augment_identity_when_off_and_changes_when_on():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 8, 8) * 255
    off = dict(AUGMENT_DEFAULTS)
    assert torch.equal(augment_batch(x, off, g), x)
    flip = {**off, "hflip": 1.0}
    assert torch.equal(augment_batch(x, flip, g), x.flip(3))
    gated = {**off, "hflip": 1.0, "p": 0.0}
    assert torch.equal(augment_batch(x, gated, g), x)
    crop = {**off, "pad_crop": 2}
    y = augment_batch(x, crop, g)
    assert y.shape == x.shape and not torch.equal(y, x)
    rot = augment_batch(x, {**off, "rotation": 30.0, "resized_crop": 0.5}, g)
    assert rot.shape == x.shape and not torch.equal(rot, x)


def test_pad_crop_is_a_shift():
    g = torch.Generator().manual_seed(1)
    x = torch.arange(64.0).view(1, 1, 8, 8).repeat(4, 1, 1, 1)
    y = augment_batch(x, {**AUGMENT_DEFAULTS, "pad_crop": 1}, g)
    for i in range(4):  # every output is the input shifted by at most one pixel, zero-filled
        ok = any(
            torch.equal(y[i, 0], torch.nn.functional.pad(x[i, 0], (1, 1, 1, 1))[dy : dy + 8, dx : dx + 8])
            for dy in range(3)
            for dx in range(3)
        )
        assert ok


@pytest.mark.parametrize(
    "train,expected",
    [
        ({"schedule": "exponential", "gamma": 0.5}, [1.0, 0.5, 0.25, 0.125]),
        ({"schedule": "multistep", "gamma": 0.1, "milestones": [2, 3]}, [1.0, 1.0, 0.1, 0.01]),
        ({"schedule": "cosine", "warmup_epochs": 2}, [0.5, 1.0, 1.0, 0.5]),
        ({"schedule": "linear", "warmup_epochs": 1}, [1.0, 1.0, 2 / 3, 1 / 3]),
        ({"schedule": "linear", "warmup_epochs": 0}, [1.0, 0.75, 0.5, 0.25]),
        ({"schedule": "none"}, [1.0, 1.0, 1.0, 1.0]),
    ],
)
def test_schedules(train, expected):
    t = {
        "schedule": "none",
        "gamma": 0.1,
        "milestones": [],
        "warmup_epochs": 0,
        "epochs": 4,
        "plateau_patience": 1,
        **train,
    }
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_schedule(opt, t)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx(expected)


def test_image_size_resizes_on_the_fly(setup):
    spec, pools = setup
    s = copy.deepcopy(spec)
    s["data"]["image_size"] = 24
    s["train"]["epochs"] = 1
    res = fit(s, pools)
    first_fc = next(m for m in res.model if isinstance(m, torch.nn.Linear))
    assert first_fc.in_features == 16 * 3 * 3  # 24 px -> three 2x2 pools -> 3 x 3 x conv3


def test_bf16_autocast_path_runs_on_cpu(setup):
    """The GPU recipe's mixed precision (bf16 autocast) exercised where CI can run it."""
    spec, pools = setup
    s = copy.deepcopy(spec)
    s["train"]["precision"] = "bf16"
    res = fit(s, pools)
    assert res.autocast and res.history[-1]["val_acc"] > 0.6
    from trainables.cost import measure_cost

    cost = measure_cost(res.model, 3, 16, torch.device("cpu"), autocast=True, batch=8, seconds=0.2)
    assert cost["latency_ms"] > 0 and cost["flops_per_image"] > 0


def test_a_trials_latency_is_timed_as_a_final_models(setup, monkeypatch):
    """One definition: a trial's latency_ms (an objective) is measure_cost's one-image timing at the final models'
    length; the batch throughput, which no objective reads, is not timed in a trial."""
    from trainables import cost as cost_module

    spec, pools = setup
    model = fit({**spec, "train": {**spec["train"], "epochs": 1}}, pools).model
    timings: list[tuple[int, float]] = []
    real = cost_module._timed

    def timed(model, x, autocast, min_iters, min_seconds):
        timings.append((x.shape[0], min_seconds))
        return real(model, x, autocast, min_iters, 0.01)

    monkeypatch.setattr(cost_module, "_timed", timed)
    final = cost_module.measure_cost(model, 3, 16, torch.device("cpu"), autocast=False)
    final_timings, timings[:] = list(timings), []
    trial = cost_module.trial_cost(model, 3, 16, torch.device("cpu"), autocast=False)
    assert final_timings == [(16, 1.0), (1, 1.0)] and timings == [(1, 1.0)]
    timings[:] = []
    assert cost_module.measure_cost(model, 3, 16, torch.device("cpu"), autocast=False, seconds=0.3)["timing_s"] == 0.3
    assert timings == [(16, 0.3), (1, 0.3)]  # final.timing_s: both timings run that long
    assert set(trial) == {"params", "flops", "latency_ms"} and trial["params"] == final["params"]
    assert trial["flops"] == final["flops_per_image"] and trial["latency_ms"] > 0


def test_compile_switch_reports_compile_time_and_keeps_results(setup):
    spec, pools = setup
    s = copy.deepcopy(spec)
    s["train"]["epochs"] = 1
    plain = fit(s, pools).history[0]
    s["train"]["compile"] = True
    compiled = fit(s, pools).history[0]
    assert compiled["compile_s"] > 0 and "compile_s" not in plain
    assert compiled["val_acc"] == pytest.approx(plain["val_acc"], abs=0.05)


def _trainable_modules(model):
    return [
        type(m).__name__
        for m in model.modules()
        if any(True for _ in m.parameters(recurse=False)) and all(p.requires_grad for p in m.parameters(recurse=False))
    ]


@pytest.mark.parametrize(
    "name,head",
    [
        ("cnn", "Linear"),
        ("vit", "Linear"),
        ("resnet18", "Linear"),
        ("luna", "Linear"),
        ("coins_cnn", "Linear"),
        ("tv/resnet18", "Linear"),
    ],
)
def test_freeze_head_only_leaves_only_the_classifier(name, head):
    from trainables.recipe import freeze, head_module

    m = trainables.create_model(name, num_classes=5, in_chans=3, image_size=32)
    freeze(m, "head_only")
    trainable = [p for p in m.parameters() if p.requires_grad]
    assert trainable and {id(p) for p in trainable} == {id(p) for p in head_module(m).parameters()}
    assert _trainable_modules(m) == [head] and head_module(m).out_features == 5


def test_freeze_fraction_counts_parameterised_layers_before_the_head():
    from trainables.recipe import freeze

    m = trainables.create_model("cnn", num_classes=5, in_chans=3, image_size=32)
    # Layers before the head: conv, bn, conv, bn, conv, bn, linear (7); half -> the first 4 frozen.
    freeze(m, 0.5)
    assert _trainable_modules(m) == ["Conv2d", "BatchNorm2d", "Linear", "Linear"]
    assert [mod.requires_grad for mod in [m[0].weight, m[1].weight, m[4].weight, m[5].weight, m[8].weight]] == [
        False,
        False,
        False,
        False,
        True,
    ]


def test_frozen_weights_do_not_move_in_training(setup):
    spec, pools = setup
    s = copy.deepcopy(spec)
    s["model"]["freeze"] = "head_only"
    s["train"]["epochs"] = 1
    torch.manual_seed(s["train"]["seed"])
    from trainables.engine import model_kwargs

    before = trainables.create_model("cnn", num_classes=4, in_chans=3, image_size=16, **model_kwargs(s["model"]))
    res = fit(s, pools)
    assert torch.equal(res.model[0].weight.cpu(), before[0].weight)  # a frozen conv: unchanged
    assert not torch.equal(res.model[-1].weight.cpu(), before[-1].weight)  # the head: trained


def test_frozen_batchnorm_keeps_its_running_statistics(setup):
    """Freezing half the CNN freezes its first two conv/BN pairs: their BN buffers stay as built over an
    epoch of training, while the unfrozen third BN layer keeps learning its statistics."""
    spec, pools = setup
    s = copy.deepcopy(spec)
    s["model"]["freeze"] = 0.5
    s["train"]["epochs"] = 1
    res = fit(s, pools)
    fresh = torch.nn.BatchNorm2d(1)
    for i in (1, 5):  # frozen
        bn = res.model[i]
        assert torch.equal(bn.running_mean.cpu(), torch.zeros_like(bn.running_mean.cpu()))
        assert torch.equal(bn.running_var.cpu(), torch.ones_like(bn.running_var.cpu()))
        assert int(bn.num_batches_tracked) == int(fresh.num_batches_tracked) == 0
    trained = res.model[9]
    assert not torch.equal(trained.running_mean.cpu(), torch.zeros_like(trained.running_mean.cpu()))
    assert not torch.equal(trained.running_var.cpu(), torch.ones_like(trained.running_var.cpu()))
    assert int(trained.num_batches_tracked) == -(-len(res.splits.train) // s["train"]["batch_size"])


def test_balanced_class_weights():
    from trainables.recipe import balanced_weights

    w = balanced_weights(np.array([0] * 30 + [1] * 10), 2)
    assert w.tolist() == pytest.approx([40 / 60, 40 / 20])


def test_early_stopping_ends_the_run(setup):
    spec, pools = setup
    s = copy.deepcopy(spec)
    s["train"].update(epochs=20, lr=5.0, schedule="none", warmup_epochs=0, early_stopping=2)
    h = fit(s, pools).history
    assert len(h) < 20 and h[-1].get("early_stopped") == 1
    best = min(range(len(h)), key=lambda i: h[i]["val_loss"])
    assert len(h) - 1 - best == 2  # stopped exactly `patience` epochs after the best val_loss


def test_freeze_values_validated(backend):
    from search import SpecError

    base = {"data": {"dataset": "digits"}, "experiment": {"name": "x"}}
    with pytest.raises(SpecError, match="none, head_only or a fraction"):
        resolve({**base, "model": {"name": "cnn", "freeze": "half"}}, backend)
    with pytest.raises(SpecError, match="0 <= freeze <= 1 must hold"):
        resolve({**base, "model": {"name": "cnn", "freeze": 1.5}}, backend)
    assert resolve({**base, "model": {"name": "cnn", "freeze": 0.33}}, backend)["model"]["freeze"] == 0.33


def test_color_jitter_changes_colour_not_shape_and_respects_p():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 8, 8) * 255
    cfg = {**AUGMENT_DEFAULTS, "color_jitter": 0.4}
    y = augment_batch(x, cfg, g)
    assert y.shape == x.shape and not torch.equal(y, x) and y.min() >= 0 and y.max() <= 255
    assert torch.equal(augment_batch(x, {**cfg, "color_jitter_p": 0.0}, g), x)


def test_mixup_and_cutmix_weights():
    """Image 0 is ones, the rest zeros: each output's mean is exactly the weight image 0 got in it."""
    from trainables.augment import mix_batch

    g = torch.Generator().manual_seed(0)
    x = torch.zeros(4, 1, 10, 10)
    x[0] = 1.0
    y = torch.arange(4)
    for mixup, cutmix in ((0.4, 0.0), (0.0, 1.0)):
        xm, ya, yb, lam = mix_batch(x, y, mixup=mixup, cutmix=cutmix, g=g)
        assert 0 <= lam <= 1 and torch.equal(ya, y) and sorted(yb.tolist()) == [0, 1, 2, 3]
        expected = lam * (ya == 0).float() + (1 - lam) * (yb == 0).float()
        assert xm.mean(dim=(1, 2, 3)).tolist() == pytest.approx(expected.tolist(), abs=1e-6)


def test_mixup_training_runs_and_is_deterministic(setup):
    spec, pools = setup
    s = copy.deepcopy(spec)
    s["train"].update(epochs=1, mixup=0.2, cutmix=1.0)
    a, b = fit(s, pools).history, fit(s, pools).history
    assert a[0]["train_loss"] == b[0]["train_loss"] and a[0]["val_acc"] > 0.25


def test_bce_head_has_one_logit_and_the_threshold_decides(setup):
    from trainables.engine import predict_split
    from trainables.recipe import decide

    spec = resolve(
        {
            **copy.deepcopy(SPEC),
            "data": {**SPEC["data"], "num_classes": 2},
            "train": {**SPEC["train"], "loss": "bce", "epochs": 2},
        },
        trainables,
    )
    pools = trainables.prepare(spec)
    res = fit(spec, pools)
    assert res.model[-1].out_features == 1 and res.history[-1]["val_acc"] > 0.8
    assert res.history[-1]["val_auc"] > 0.8  # ranks P(class 1), whatever the threshold
    logits, labels = predict_split(res, pools, "val")
    assert logits.shape[1] == 2 and np.allclose(logits[:, 0], 0)  # read as [0, z]: softmax = sigmoid
    # The threshold is applied: at 0.999 almost everything is class 0.
    strict = resolve({**spec, "train": {**spec["train"], "threshold": 0.999}}, trainables)
    h = fit(strict, pools).history[-1]
    assert h["val_acc"] < res.history[-1]["val_acc"]
    z = torch.tensor([[-1.0], [0.2], [3.0]])
    assert decide(z, 0.5).tolist() == [0, 1, 1] and decide(z, 0.6).tolist() == [0, 0, 1]
    with pytest.raises(Exception, match="bce trains one logit for a binary task"):
        resolve({**copy.deepcopy(SPEC), "train": {"loss": "bce"}}, trainables)


def test_randaugment_is_seeded_batched_and_gated():
    x = torch.rand(24, 3, 16, 16) * 255
    cfg = {**AUGMENT_DEFAULTS, "randaugment": 2, "randaugment_magnitude": 15}
    a = augment_batch(x, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(a, augment_batch(x, cfg, torch.Generator().manual_seed(0)))
    assert not torch.equal(a, augment_batch(x, cfg, torch.Generator().manual_seed(1)))
    assert a.shape == x.shape and 0 <= a.min() and a.max() <= 255
    off = augment_batch(x, {**cfg, "p": 0.0}, torch.Generator().manual_seed(0))
    assert torch.equal(off, x)


def _private_dirty_mb() -> float:
    with open("/proc/self/smaps_rollup") as f:
        return sum(int(line.split()[1]) for line in f if line.startswith("Private_Dirty")) / 1024


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux /proc")
def test_channel_stats_chunked_and_heap_released_after_batches():
    from trainables.batches import Batcher, channel_stats
    from trainables.device import release_host_memory

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (3000, 3, 64, 64), dtype=torch.uint8, generator=g)
    idx = np.arange(0, 3000, 3)
    mean, std = channel_stats(x, idx)
    ref = x[torch.as_tensor(idx)].float() / 255
    assert np.allclose(mean, ref.mean(dim=(0, 2, 3)).tolist(), atol=1e-5)
    assert np.allclose(std, ref.std(dim=(0, 2, 3)).tolist(), atol=1e-5)
    del ref
    release_host_memory()
    before = _private_dirty_mb()
    batcher = Batcher(x, torch.zeros(3000, dtype=torch.long), 64, mean, std, torch.device("cpu"), False)
    aug = {**AUGMENT_DEFAULTS, "hflip": 0.5, "pad_crop": 4}
    for _ in range(3):  # batches' freed temporaries: glibc would keep ~100 MB of them resident
        for i in range(0, 3000, 256):
            xb, _ = batcher(torch.arange(i, min(i + 256, 3000)), aug, g)
            channel_stats(x, idx)
    del xb
    release_host_memory()
    assert _private_dirty_mb() - before < 30


def test_streamed_training_equals_in_memory_training(tmp_path, monkeypatch):
    """Same files, seeds and augmentation: reading from disk with loader workers changes nothing but memory."""
    from tests.conftest import make_image_tree
    from trainables.datasets import load_pools

    monkeypatch.setattr("trainables.folders.CACHE_DIR", tmp_path / "cache")
    make_image_tree(tmp_path / "t", {"a": 30, "b": 30, "c": 30}, size=12)
    spec = resolve(
        {
            "experiment": {"name": "s"},
            "model": {"name": "cnn", "conv1": 4, "conv2": 8, "conv3": 8, "hidden": 16},
            "data": {
                "dataset": "imagefolder",
                "root": str(tmp_path / "t"),
                "image_size": 12,
                "storage": "memory",
                "augment": {"hflip": 0.5, "pad_crop": 2},
            },
            "train": {"epochs": 2, "batch_size": 16, "device": "cpu"},
        },
        trainables,
    )
    ref = fit(spec, load_pools(spec["data"]))
    keys = ("train_loss", "train_acc", "val_loss", "val_acc")
    for workers in (0, 2):
        s = copy.deepcopy(spec)
        s["data"].update(storage="stream", workers=workers)
        pools = load_pools(s["data"])
        assert pools.streamed
        got = fit(s, pools)
        assert [[h[k] for k in keys] for h in got.history] == [[h[k] for k in keys] for h in ref.history]


def test_streamed_loader_workers_persist_across_epochs(tmp_path):
    """One loader per trial: the same worker processes decode every pass (training epochs and evaluation)."""
    from tests.conftest import make_image_tree
    from trainables.batches import Batcher, as_tensor
    from trainables.datasets import load_pools

    make_image_tree(tmp_path / "t", {"a": 10, "b": 10}, size=8)
    data = resolve(
        {
            "experiment": {"name": "w"},
            "model": {"name": "cnn"},
            "data": {"dataset": "imagefolder", "root": str(tmp_path / "t"), "storage": "stream"},
        },
        trainables,
    )["data"]
    pools = load_pools(data)
    batcher = Batcher(
        pools.train_x, as_tensor(pools.train_y), 8, [0.5] * 3, [0.25] * 3, torch.device("cpu"), False, workers=2
    )
    seen = []
    try:
        for epoch in range(3):
            order = torch.randperm(20, generator=torch.Generator().manual_seed(epoch))
            got = list(batcher.batches(order, 6))
            assert torch.equal(torch.cat([y for _, y in got]), as_tensor(pools.train_y)[order])
            seen.append(sorted(w.pid for w in batcher._loader._iterator._workers))
        assert len(seen[0]) == 2 and seen[0] == seen[1] == seen[2]
    finally:
        batcher.close()


@pytest.mark.parametrize("schedule", ["cosine", "plateau"])
def test_resume_takes_the_new_configs_lr_weight_decay_and_momentum(setup, schedule):
    """PBT exploit: a trial resumes from another trial's state with perturbed values; they take effect
    (the schedule's progress kept), not the values saved with the state."""
    spec, pools = setup
    old = copy.deepcopy(spec)
    old["train"].update(optimizer="sgd", lr=0.01, weight_decay=0.01, momentum=0.9, nesterov=False, schedule=schedule)
    new = copy.deepcopy(old)
    new["train"].update(lr=0.05, weight_decay=0.001, momentum=0.5, nesterov=True)
    saved, groups = {}, []

    def grab(metrics, get_state):
        if metrics["epoch"] == 1:
            saved.update(copy.deepcopy(get_state()))

    fit(old, pools, on_epoch=grab)
    resumed = fit(
        new,
        pools,
        state=saved,
        on_epoch=lambda m, get_state: groups.append(get_state()["optimizer"]["param_groups"][0]),
    ).history
    straight = fit(new, pools).history  # the new values from the start: the lr the schedule gives at each epoch
    assert [m["lr"] for m in resumed[1:]] == pytest.approx([m["lr"] for m in straight[1:]])
    assert resumed[1]["lr"] != pytest.approx(fit(old, pools).history[1]["lr"])
    assert {(g["weight_decay"], g["momentum"], g["nesterov"]) for g in groups} == {(0.001, 0.5, True)}


class _OomModel(torch.nn.Module):
    """Runs out of (simulated) GPU memory on batches larger than ``max_batch``."""

    def __init__(self, num_classes: int, in_chans: int, image_size: int, max_batch: int) -> None:
        super().__init__()
        self.max_batch = max_batch
        self.head = torch.nn.Linear(in_chans * image_size * image_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.max_batch:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.head(x.flatten(1))


@trainables.models.register_model("test_oom")
def _test_oom(num_classes: int = 10, in_chans: int = 3, image_size: int = 32, max_batch: int = 16) -> torch.nn.Module:
    return _OomModel(num_classes, in_chans, image_size, max_batch)


@pytest.mark.parametrize(
    "batch_size, expected",
    [
        (
            64,
            {
                "epoch": 0,
                "oom": 1,
                "reason": "out of memory at batch_size=64, model=test_oom, image_size=16: "
                "lower train.batch_size or data.image_size",
            },
        ),
        (16, None),
    ],
)
def test_out_of_memory_ends_the_trial_as_oom_with_batch_size_and_model(tmp_path, batch_size, expected):
    from search.store._export import status_reason, trial_status
    from tests.conftest import small_spec
    from trainables.ray_adapter import fit_or_oom, scored

    spec = small_spec(
        tmp_path,
        "oom",
        model={"name": "test_oom"},
        train={"epochs": 1, "batch_size": batch_size, "eval_batch_size": 16},
    )
    epochs = []
    result = fit_or_oom(spec, trainables.prepare(spec), None, lambda m, _: epochs.append(m))
    assert result == expected
    if expected is None:  # it fits: trained as usual
        assert [m["epoch"] for m in epochs] == [1]
        return
    assert trial_status(result, "", 1) == "oom" and status_reason(result, "oom") == expected["reason"]
    assert scored(result, {"val_acc": "max"})["val_acc"] == float("-inf")  # a bad result for searchers, not NaN


def test_a_user_error_in_a_trial_is_its_result_not_an_exception_tune_would_retry(tmp_path):
    """Missing weights fail the same way on every node: the trial ends with status error and the reason,
    as a result (Tune retries what raises, resources.max_failures times)."""
    from search.store._export import status_reason, trial_status
    from tests.conftest import small_spec
    from trainables.ray_adapter import fit_or_oom, scored

    missing = tmp_path / "missing.pth"
    spec = small_spec(
        tmp_path,
        "weights",
        model={"name": "resnet18", "stem": "cifar", "pretrained": str(missing)},
        train={"epochs": 1},
    )
    result = fit_or_oom(spec, trainables.prepare(spec), None, lambda m, _: None)
    assert result["epoch"] == 0 and result["error"] == 1
    assert result["reason"].startswith("WeightsNotFound: ") and "does not exist" in result["reason"]
    assert trial_status(result, "", 1) == "error" and status_reason(result, "error") == result["reason"]
    assert scored(result, {"val_acc": "max"})["val_acc"] == float("-inf")


def test_a_trial_rays_memory_monitor_killed_is_oom_with_its_sizes_not_rays_text(tmp_path):
    """The status rule reads Ray's kill message (whichever of its lines is kept); the reason is the trial
    side's, for the trial's own values. A torch OutOfMemoryError that escaped is an error, not this."""
    from functools import partial

    from search.store._export import error_reason, trial_status
    from tests.conftest import small_spec

    spec = small_spec(tmp_path, "oom")
    ray_text = (
        "ray.exceptions.OutOfMemoryError: 1 worker(s) were killed due to the node running low on memory.\n"
        "To adjust the kill threshold, set the environment variable `RAY_memory_usage_threshold` ..."
    )
    assert trial_status({}, ray_text, 3) == "oom" and trial_status({}, ray_text.splitlines()[-1], 3) == "oom"
    assert trial_status({}, "torch.OutOfMemoryError: CUDA out of memory.", 3) == "error"
    reason = error_reason(ray_text, {"train.batch_size": 8}, partial(trainables.oom_reason, spec))
    assert reason == (
        "out of host memory (Ray's memory monitor killed the trial) at batch_size=8, model=vit, "
        "image_size=16: lower train.batch_size or data.image_size"
    )


def test_a_trial_restored_from_its_last_epochs_checkpoint_reports_its_end_again(tmp_path, monkeypatch):
    """A driver killed after a trial's last epoch, before Tune recorded it: the resumed trial restores a
    checkpoint with nothing left to train and must report that last result again (Tune otherwise keeps the
    older one it had as the trial's last: a completed trial read as stopped one epoch short)."""
    import os

    import ray.tune

    from tests.conftest import small_spec
    from trainables import ray_adapter

    spec = small_spec(tmp_path, "restored", train={"epochs": 2})
    pools = trainables.prepare(spec)
    saved = []
    ray_adapter.fit_or_oom(spec, pools, None, lambda m, get_state: saved.append((m, get_state())))
    last_metrics, last_state = saved[-1]
    folder = tmp_path / "checkpoint_000001"
    folder.mkdir()
    torch.save(last_state, os.path.join(folder, ray_adapter.CKPT_FILE))
    reports = []
    monkeypatch.setattr(ray.tune, "get_checkpoint", lambda: ray.tune.Checkpoint.from_directory(str(folder)))
    monkeypatch.setattr(ray.tune, "report", lambda metrics, checkpoint=None: reports.append(metrics))
    ray_adapter.trial({}, spec=spec, pools=pools)
    assert len(reports) == 1 and reports[0]["epoch"] == 2
    assert reports[0]["val_acc"] == last_metrics["val_acc"]


@pytest.mark.parametrize("schedule", ["exponential", "multistep", "cosine", "linear", "none"])
def test_a_batch_schedule_starts_each_epoch_where_the_epoch_schedule_is_and_moves_within_it(schedule):
    """schedule_per: batch: after warm-up, each epoch's first step is at the per-epoch schedule's factor; cosine and
    linear then fall step by step, so a short run ends near 0 (the per-epoch linear of 4 epochs ends at 1/4)."""
    from trainables.recipe import batch_factor

    t = {"schedule": schedule, "gamma": 0.5, "milestones": [2, 3], "warmup_epochs": 1, "epochs": 4}
    t["plateau_patience"] = 1
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_schedule(opt, t)
    steps = 10
    for epoch in range(4):
        factors = [batch_factor(t, epoch, i / steps, 1 / steps) for i in range(steps)]
        if epoch == 0:  # warm-up rises to 1 by the epoch's last step, the first step already trains
            assert factors == pytest.approx([(i + 1) / steps for i in range(steps)])
        else:
            assert factors[0] == pytest.approx(opt.param_groups[0]["lr"])
            moving = schedule in ("cosine", "linear")
            assert (factors[-1] < factors[0]) == moving and all(f > 0 for f in factors)
        opt.step()
        sched.step()
    if schedule == "linear":
        assert factors[-1] == pytest.approx(1 / (3 * steps))  # the last step: 1/30 of the rate, not 1/3


def test_a_batch_schedule_is_the_rate_the_optimizer_steps_with_and_resumes_exactly(setup, tmp_path):
    """The lr an epoch reports under schedule_per: batch is its last step's (below the epoch's start), and a run
    resumed from its epoch-1 checkpoint ends where an uninterrupted one does (with dropout on)."""
    spec, pools = setup
    spec = copy.deepcopy(spec)
    spec["model"]["dropout"] = 0.3
    spec["train"].update(schedule="linear", schedule_per="batch", warmup_epochs=0)
    straight = fit(spec, pools).history
    per_epoch = copy.deepcopy(spec)
    per_epoch["train"]["schedule_per"] = "epoch"
    epoch_lrs = [m["lr"] for m in fit(per_epoch, pools).history]
    lr = float(spec["train"]["lr"])
    assert epoch_lrs == pytest.approx([lr, lr * 2 / 3, lr / 3])
    batch_lrs = [m["lr"] for m in straight]
    assert all(b < e for b, e in zip(batch_lrs, epoch_lrs, strict=True)) and batch_lrs[-1] < lr / 10

    def grab(metrics, get_state):
        if metrics["epoch"] == 1:
            save_checkpoint(get_state(), str(tmp_path / "state.pt"))

    fit(spec, pools, on_epoch=grab)
    saved = torch.load(tmp_path / "state.pt", map_location="cpu", weights_only=True)
    resumed = fit(spec, pools, state=saved).history
    keys = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")
    assert [[m[k] for k in keys] for m in resumed] == [[m[k] for k in keys] for m in straight]
