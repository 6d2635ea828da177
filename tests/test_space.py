"""Space conversion: every distribution to Ray Tune, and on to each searcher's own space."""

from __future__ import annotations

import numpy as np
import pytest
from ray import tune
from ray.tune.search.sample import Categorical, Float, Integer

import trainables
from search import grid_points, preview_configs, resolve, to_tune
from search.run._algorithms import build_scheduler, build_searcher
from search.spec._space import sample

SPACE = {
    "train.lr": {"loguniform": [1e-4, 1e-2]},
    "train.weight_decay": {"qloguniform": [1e-4, 1e-1, 1e-4]},
    "train.gamma": {"uniform": [0.8, 0.99]},
    "train.label_smoothing": {"quniform": [0.0, 0.2, 0.05]},
    "train.epochs": {"randint": [2, 4]},
    "train.batch_size": {"qrandint": [32, 128, 32]},
    "model.hidden": {"choice": [16, 32]},
}


def test_each_distribution_becomes_its_tune_domain():
    d = to_tune({**SPACE, "model.dropout": {"grid": [0.1, 0.2]}}, "random")
    assert isinstance(d["train.lr"], Float) and isinstance(d["train.lr"].sampler, Float._LogUniform)
    assert isinstance(d["train.weight_decay"].sampler.get_sampler(), Float._LogUniform)
    assert isinstance(d["train.gamma"], Float) and isinstance(d["train.gamma"].sampler, Float._Uniform)
    assert isinstance(d["train.epochs"], Integer)
    assert (d["train.epochs"].lower, d["train.epochs"].upper) == (2, 5)  # our high is inclusive, Ray's exclusive
    assert isinstance(d["model.hidden"], Categorical) and d["model.hidden"].categories == [16, 32]
    assert d["model.dropout"] == {"grid_search": [0.1, 0.2]}
    # Quantized domains keep their step.
    assert d["train.label_smoothing"].sampler.q == 0.05 and d["train.batch_size"].sampler.q == 32


def test_grid_algorithm_turns_choices_into_grids():
    d = to_tune({"model.hidden": {"choice": [16, 32, 64]}, "model.dropout": {"grid": [0.1, 0.2]}}, "grid")
    assert d["model.hidden"] == tune.grid_search([16, 32, 64])
    assert grid_points({"a": {"grid": [1, 2, 3]}, "b": {"grid": [1, 2]}, "c": {"choice": [1]}}) == 6


def test_samples_stay_in_bounds_and_on_their_grid():
    rng = np.random.default_rng(0)
    for _ in range(300):
        assert 1e-4 <= sample(SPACE["train.lr"], rng) <= 1e-2
        e = sample(SPACE["train.epochs"], rng)
        assert isinstance(e, int) and 2 <= e <= 4
        b = sample(SPACE["train.batch_size"], rng)
        assert b % 32 == 0 and 32 <= b <= 128
        ls = sample(SPACE["train.label_smoothing"], rng)
        assert abs(ls / 0.05 - round(ls / 0.05)) < 1e-9
    seen = {sample(SPACE["train.epochs"], rng) for _ in range(200)}
    assert seen == {2, 3, 4}


def test_preview_crosses_grid_with_samples():
    cfgs = preview_configs({"a": {"grid": [1, 2]}, "b": {"uniform": [0, 1]}}, num_samples=3, seed=0)
    assert len(cfgs) == 6 and [c["a"] for c in cfgs] == [1, 1, 1, 2, 2, 2]
    assert cfgs == preview_configs({"a": {"grid": [1, 2]}, "b": {"uniform": [0, 1]}}, num_samples=3, seed=0)


def spec_for(algo, sched="fifo"):
    space = {
        k: v
        for k, v in SPACE.items()
        if not (algo == "optuna" and "qloguniform" in v) and not (sched == "pbt" and k.startswith("model."))
    }  # pbt cannot perturb the model's shapes
    return resolve(
        {
            "experiment": {"name": "s"},
            "data": {"dataset": "digits"},
            "model": {"name": "cnn"},
            "train": {"epochs": 4},
            "space": space,
            "search": {"algorithm": algo, "max_concurrent": 2},
            "scheduler": {"name": sched},
        },
        trainables,
    )


def test_optuna_converts_every_sampled_distribution():
    from ray.tune.search.optuna import OptunaSearch

    space = {k: v for k, v in SPACE.items() if "qloguniform" not in v}
    converted = OptunaSearch.convert_search_space(to_tune(space, "optuna"))
    assert set(converted) == set(space)
    searcher = build_searcher(spec_for("optuna"))
    # as Tune runs a Searcher (a SearchGenerator, which snapshots each checkpoint), two at a time
    assert type(searcher.searcher).__name__ == "ConcurrencyLimiter" and searcher.searcher.max_concurrent == 2


def test_bohb_converts_every_sampled_distribution():
    from ray.tune.search.bohb import TuneBOHB

    cs = TuneBOHB.convert_search_space(to_tune(SPACE, "bohb"))
    assert set(cs.keys()) == set(SPACE)
    assert type(build_scheduler(spec_for("bohb", "hyperband"))).__name__ == "HyperBandForBOHB"


@pytest.mark.parametrize(
    "sched,cls",
    [
        ("fifo", "FIFOScheduler"),
        ("asha", "AsyncHyperBandScheduler"),
        ("hyperband", "HyperBandScheduler"),
        ("median", "MedianStoppingRule"),
        ("pbt", "PopulationBasedTraining"),
    ],
)
def test_schedulers(sched, cls):
    from ray.tune import schedulers

    s = build_scheduler(spec_for("random", sched))
    assert isinstance(s, getattr(schedulers, cls))  # Ray's own (subclassed to skip infeasible trials)
    if sched == "pbt":
        assert set(s._hyperparam_mutations) == set(SPACE) - {"model.hidden"}
    if sched in ("asha", "hyperband", "median"):
        assert s._time_attr == "training_iteration"


def test_random_search_is_seeded():
    from ray.tune.search import BasicVariantGenerator

    def draws(seed):
        spec = spec_for("random")
        spec["search"]["seed"] = seed
        spec["search"]["max_concurrent"] = 0
        gen = build_searcher(spec)
        assert isinstance(gen, BasicVariantGenerator)
        tune.register_trainable("f", lambda config: None)
        gen.add_configurations({"e": {"run": "f", "config": to_tune(SPACE, "random"), "num_samples": 3}})
        out = []
        while (t := gen.next_trial()) is not None:
            out.append(t.config["train.lr"])
        return out

    assert draws(0) == draws(0) and draws(0) != draws(1) and len(draws(0)) == 3


def test_optuna_refuses_quantized_log_ranges():
    from search import SpecError

    with pytest.raises(SpecError, match="qloguniform is not supported by search.algorithm=optuna"):
        resolve(
            {
                "data": {"dataset": "digits"},
                "model": {"name": "cnn"},
                "experiment": {"name": "q"},
                "space": {"train.lr": {"qloguniform": [1e-4, 1e-2, 1e-4]}},
                "search": {"algorithm": "optuna"},
            },
            trainables,
        )


# ----------------------------------------------------------------------------- conditional sub-spaces

FAMILIES = {
    "grid": [
        {"name": "small", "model.name": "cnn", "model.conv1": {"grid": [4, 8]}, "model.conv2": 8},
        {"name": "luna", "model.name": "luna", "model.conv_channels": {"grid": [2, 4, 8]}, "train.epochs": 3},
        {"name": "pre", "model.name": "timm/resnet10t", "model.pretrained": False, "model.freeze": 0.33},
    ]
}


def branch_spec(space, algorithm="random", sched="fifo"):
    return {
        "experiment": {"name": "b"},
        "data": {"dataset": "synthetic", "image_size": 32, "num_classes": 2},
        "train": {"epochs": 2},
        "search": {"algorithm": algorithm},
        "scheduler": {"name": sched},
        "space": space,
    }


def test_grid_branch_adds_its_options_grids_and_previews_only_chosen_keys():
    from search.spec._space import flat_config

    spec = resolve(branch_spec({"family": FAMILIES, "train.lr": {"grid": [1e-3, 1e-2]}}), trainables)
    assert spec["model"]["name"] == "cnn"  # the first option's model stands in for the base spec
    assert grid_points(spec["space"]) == 2 * (2 + 3 + 1)
    configs = preview_configs(spec["space"], 1, 0)
    assert len(configs) == 12
    for c in configs:
        fam = c["family"]
        keys = {k for k in c if k.startswith("model.")}
        expected = {
            "small": {"model.name", "model.conv1", "model.conv2"},
            "luna": {"model.name", "model.conv_channels"},
            "pre": {"model.name", "model.pretrained", "model.freeze"},
        }[fam]
        assert keys == expected, (fam, keys)
        model = trainables.apply_config(spec, c)["model"]
        # A branch naming another family starts a fresh model section: no cnn widths reach luna or timm.
        assert ("conv1" in model) == (fam == "small")
    # Optuna/BOHB put a branch's values under its label; random/grid directly — both read the same.
    assert flat_config(
        {"family": {"#": "luna", "luna": {"model.conv_channels": 4}}, "train.lr": 0.1}, spec["space"]
    ) == {"family": "luna", "model.name": "luna", "model.conv_channels": 4, "train.epochs": 3, "train.lr": 0.1}


def test_branch_options_are_validated_as_whole_specs():
    from search import SpecError

    bad = {"grid": [{"model.name": "cnn", "model.conv9": 3}]}
    with pytest.raises(SpecError, match=r"space\.family\.grid\[0\]\.model\.conv9: unknown key"):
        resolve(branch_spec({"family": bad}), trainables)
    bad = {"grid": [{"model.name": "cnn", "model.conv1": {"grid": ["wide"]}}]}
    with pytest.raises(SpecError, match=r"space\.family\.grid\[0\]\.model\.conv1: grid values must fit"):
        resolve(branch_spec({"family": bad}), trainables)
    with pytest.raises(SpecError, match=r"space\.family\.grid\[0\]\.model\.name: unknown model 'nope'"):
        resolve(branch_spec({"family": {"grid": [{"model.name": "nope"}]}}), trainables)
    with pytest.raises(SpecError, match="choice over a list of options"):
        resolve(branch_spec({"family": FAMILIES}, "optuna", "asha"), trainables)
    with pytest.raises(SpecError, match="pbt perturbs one flat space"):
        resolve(branch_spec({"family": FAMILIES}, "random", "pbt"), trainables)
    with pytest.raises(SpecError, match="make it a branch"):
        resolve({**branch_spec({"model.name": {"grid": ["cnn", "luna"]}}), "model": {"name": "cnn"}}, trainables)
    dup = {"grid": [{"name": "a", "model.name": "cnn"}, {"name": "a", "model.name": "luna"}]}
    with pytest.raises(SpecError, match="unique label"):
        resolve(branch_spec({"family": dup}), trainables)


def test_model_based_searchers_get_conditional_spaces():
    import optuna

    from search.spec._space import OptunaSpace, bohb_space

    space = {
        "family": {
            "choice": [
                {"name": "a", "model.name": "cnn", "model.conv1": {"choice": [4, 8]}},
                {"name": "b", "model.name": "luna", "model.conv_channels": {"randint": [2, 6]}},
            ]
        },
        "train.lr": {"loguniform": [1e-4, 1e-2]},
    }
    spec = resolve(branch_spec(space, "optuna", "asha"), trainables)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    seen = set()
    for _ in range(12):
        t = study.ask()
        OptunaSpace(spec["space"])(t)
        label = t.params["family/#"]
        seen.add(label)
        other = "b" if label == "a" else "a"
        assert not any(k.startswith(f"family/{other}/") for k in t.params)  # only the chosen option's keys
        study.tell(t, 0.5)
    assert seen == {"a", "b"}
    cs = bohb_space(spec["space"], seed=0)
    assert {c.child.name for c in cs.conditions} == {"family/a/model.conv1", "family/b/model.conv_channels"}
    for cfg in cs.sample_configuration(10):
        d = dict(cfg)
        assert ("family/a/model.conv1" in d) == (d["family/#"] == "a")


def test_smoke_keeps_the_first_option_of_a_grid_branch():
    from search.spec._spec import smoke_spec

    spec = resolve(branch_spec({"family": FAMILIES}), trainables)
    smoke = resolve(smoke_spec(spec, trainables), trainables)
    (opts,) = smoke["space"]["family"].values()
    assert len(opts) == 1 and opts[0]["model.conv1"] == {"grid": [4]}


def test_dry_run_counts_and_previews_what_grid_search_runs(tmp_path, cli):
    """Under algorithm grid a choice is tried whole: 3 choices x 2 grid values are 6 trials, not 2."""
    import yaml
    from ray.tune.search.variant_generator import generate_variants

    raw = {
        "experiment": {"name": "g"},
        "data": {"dataset": "synthetic", "image_size": 16},
        "model": {"name": "vit", "embed_dim": 48, "depth": 1, "mlp_dim": 32},
        "space": {
            "model.num_heads": {"choice": [2, 3, 5]},
            "model.patch_size": {"grid": [4, 8]},
            "recipe": {
                "choice": [
                    {"name": "a", "train.momentum": {"choice": [0.8, 0.9]}},
                    {"name": "b", "train.optimizer": "sgd"},
                ]
            },
        },
        "search": {"algorithm": "grid", "num_samples": 2},
    }
    spec = resolve(raw, trainables)
    tune_runs = len(list(generate_variants(to_tune(spec["space"], "grid")))) * 2  # what BasicVariantGenerator makes
    assert tune_runs == 3 * 2 * (2 + 1) * 2
    f = tmp_path / "g.yaml"
    f.write_text(yaml.safe_dump(raw))
    r = cli("tune-run", str(f), "--dry-run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"# grid points: {tune_runs // 2}; trials: {tune_runs} " in r.stdout
    # num_heads 5 does not divide embed_dim 48: a third of them, in every other combination.
    assert f"rejected by the model of {tune_runs} previewed configurations: {tune_runs // 3}" in r.stdout


def test_schedulers_rank_a_diverged_trials_infinite_score_as_a_finite_worst():
    """ASHA's rung cutoff is a nanpercentile: two -inf scores in a rung made it nan (nothing stopped)."""
    import numpy as np

    from search.run._schedulers import FINITE_WORST, ASHAScheduler, MedianStoppingRule

    asha = ASHAScheduler(max_t=9, grace_period=1)
    asha.set_search_properties("val_acc", "max")
    seen = [asha._finite({"val_acc": v})["val_acc"] for v in (float("-inf"), float("nan"), 0.5)]
    assert seen == [-FINITE_WORST, -FINITE_WORST, 0.5]
    assert np.isfinite(np.nanpercentile(seen, 66.7))
    median = MedianStoppingRule()
    median.set_search_properties("val_loss", "min")
    assert median._finite({"val_loss": float("inf")})["val_loss"] == FINITE_WORST


class _Controller:
    """What Ray's Hyperband asks of Tune's controller here: stopping a trial."""

    def __init__(self) -> None:
        self.stopped: list = []

    def stop_trial(self, trial) -> None:
        self.stopped.append(trial)
        trial.status = "TERMINATED"


class _Trial:
    def __init__(self, trial_id: str) -> None:
        self.trial_id, self.status, self.is_saving = trial_id, "RUNNING", False


def test_hyperband_stops_a_trial_at_max_t_instead_of_pausing_it_for_peers_whose_end_may_never_come():
    """Ray's Hyperband paused the first bracket peer to reach max_t until the other got there; when the
    other's last result reached Tune with its end (on_trial_complete, not on_trial_result), or while the
    paused one was still saving, nothing resumed or stopped it and the study waited for ever (a CI hang of
    search_efficiency.py --quick, reproduced under load; Ray 2.60's own class answers PAUSE to a's epoch 2). Ours
    stops it at max_t, where it has nothing left to train; the bracket ends with no trial left in it."""
    from ray.tune.schedulers import TrialScheduler

    from search.run._schedulers import HyperBandScheduler

    hb = HyperBandScheduler(time_attr="epoch", max_t=2, reduction_factor=3, metric="val_acc", mode="max")
    ctl, a, b = _Controller(), _Trial("a"), _Trial("b")
    hb.on_trial_add(ctl, a)
    hb.on_trial_add(ctl, b)
    bracket = hb._trial_info[a][0]
    assert hb._trial_info[b][0] is bracket, "one bracket, so that a would wait for b"
    for t in (a, b):
        assert hb.on_trial_result(ctl, t, {"epoch": 1, "val_acc": 0.5}) == TrialScheduler.CONTINUE
    assert hb.on_trial_result(ctl, a, {"epoch": 2, "val_acc": 0.6}) == TrialScheduler.STOP
    a.status = "TERMINATED"
    hb.on_trial_complete(ctl, a, {"epoch": 2, "val_acc": 0.6})  # what Tune does with a STOP
    hb.on_trial_complete(ctl, b, {"epoch": 2, "val_acc": 0.7})  # b's last report arrives with its end
    assert bracket.current_trials() == [] and hb.choose_trial_to_run(ctl) is None and ctl.stopped == []
