"""Spec validation: every bad spec ends with one line naming the file, the key and what is allowed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from search import SpecError, load_spec, resolve, smoke_spec
from search.spec._keys import parse_override
from search.spec._schema import coerce
from tests.conftest import console, console_env

BASE = {
    "experiment": {"name": "t"},
    "data": {"dataset": "digits"},
    "model": {"name": "cnn"},
    "train": {"epochs": 2},
    "space": {"train.lr": {"loguniform": [1e-4, 1e-2]}},
    "search": {"algorithm": "random", "num_samples": 2},
}


def with_(path: str, value, base=BASE):
    import copy

    spec = copy.deepcopy(base)
    node = spec
    parts = path.split(".", 1) if path.startswith("space.") else path.split(".")
    if path.startswith("space."):
        spec["space"][parts[1]] = value
        return spec
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return spec


BAD = [
    # (change, key path in the message, words the message must contain)
    (("bogus", {}), "bogus", ["unknown section", "allowed"]),
    (("train.lerning_rate", 0.1), "train.lerning_rate", ["unknown key", "allowed: optimizer, lr,"]),
    (("train.lr_", 0.1), "train.lr_", ["did you mean 'lr'"]),
    (("train.epochs", "ten"), "train.epochs", ["expected an integer", "'ten'"]),
    (("train.lr", True), "train.lr", ["expected a number"]),
    (("final.time_limit_s", -5.0), "final.time_limit_s", ["time_limit_s > 0 must hold", "got time_limit_s=-5.0"]),
    (("train.optimizer", "adamm"), "train.optimizer", ["not allowed", "adamw, adam, sgd", "did you mean 'adam'"]),
    (("data.dataset", "cifar11"), "data.dataset", ["not allowed", "did you mean 'cifar10'"]),
    (("model.name", "vitt"), "model.name", ["unknown model", "vit"]),
    (("model.dropuot", 0.2), "model.dropuot", ["unknown key", "did you mean 'dropout'"]),
    (("model.freeze", "half"), "model.freeze", ["none, head_only or a fraction of layers in [0, 1], got 'half'"]),
    # a registered model's keys are typed by its builder's signature: allowed values, ranges
    (("model.dropout", 1.0), "model.dropout", ["0 <= dropout < 1 must hold, got dropout=1.0"]),
    (("model.conv1", 0), "model.conv1", ["conv1 >= 1 must hold, got conv1=0"]),
    (("model", {"name": "vit", "tokenizer": "linear"}), "model.tokenizer", ["'linear' is not allowed", "patch, conv"]),
    (
        ("space.model.dropout", {"uniform": [0.0, 1.5]}),
        "space.model.dropout",
        ["uniform reaches 1.5: 0 <= dropout < 1"],
    ),
    (("model.freeze", 1.5), "model.freeze", ["0 <= freeze <= 1 must hold, got freeze=1.5"]),
    (("search.algorithm", "tpe"), "search.algorithm", ["not allowed", "random, grid, optuna, nsga2, bohb"]),
    (("scheduler.name", "ashaa"), "scheduler.name", ["did you mean 'asha'"]),
    (
        ("space.train.lr", {"loguniform": [0.1, 0.01]}),
        "space.train.lr",
        ["low <= high must hold, got low=0.1, high=0.01"],
    ),
    (("space.train.lr", {"loguniform": [0, 0.01]}), "space.train.lr", ["log range must lie above 0"]),
    (("space.train.lr", {"normal": [0, 1]}), "space.train.lr", ["unknown distribution", "allowed"]),
    (("space.train.lr", {"uniform": [1]}), "space.train.lr", ["uniform takes [low, high]"]),
    (("space.train.epochs", {"uniform": [1, 5]}), "space.train.epochs", ["integer", "randint"]),
    (("space.train.batch_size", {"choice": ["big"]}), "space.train.batch_size", ["must fit the key's type"]),
    (("space.train.nope", {"choice": [1]}), "space.train.nope", ["has no key 'nope'"]),
    (("space.lr", {"choice": [1]}), "space.lr", ["dotted paths into data, model, train"]),
    (("space.model.name", {"choice": ["vit", "cnn"]}), "space.model.name", ["cannot be searched", "branch"]),
    (("space.model.conv1", {"randint": [8.5, 16]}), "space.model.conv1", ["randint takes integers"]),
    # a space draws only what the key itself takes: its allowed values, its range, its model's rules
    (("space.train.optimizer", {"choice": ["adam", "adamm"]}), "space.train.optimizer", ["'adamm' is not allowed"]),
    (("space.train.lr", {"grid": [0.1, -1.0]}), "space.train.lr", ["lr > 0 must hold, got lr=-1.0"]),
    (
        ("space.train.label_smoothing", {"uniform": [0.0, 1.5]}),
        "space.train.label_smoothing",
        ["uniform reaches 1.5: 0 <= label_smoothing < 1 must hold, got label_smoothing=1.5"],
    ),
    (("space.model.freeze", {"choice": ["none", "half"]}), "space.model.freeze", ["none, head_only or a fraction"]),
    (("space.model.freeze", {"uniform": [0.5, 2]}), "space.model.freeze", ["0 <= freeze <= 1 must hold"]),
    (("search.num_samples", 0), "search.num_samples", ["num_samples >= 1 must hold, got num_samples=0"]),
    (("scheduler.reduction_factor", 1), "scheduler.reduction_factor", ["reduction_factor > 1 must hold"]),
    (("data.val_fraction", 1.5), "data.val_fraction", ["0 < val_fraction < 1 must hold, got val_fraction=1.5"]),
    (("train.lr", -1.0), "train.lr", ["lr > 0 must hold"]),
    (("train.norm_lr_scale", 0.0), "train.norm_lr_scale", ["norm_lr_scale > 0 must hold, got norm_lr_scale=0.0"]),
    (("train.tta", "crop"), "train.tta", ["not allowed", "none, flip"]),
    (("resources.gpu", 1.5), "resources.gpu", ["fraction in [0, 1] or a whole number"]),
    (("resources.max_failures", -1), "resources.max_failures", ["max_failures >= 0 must hold, got max_failures=-1"]),
    (("experiment.name", "a b"), "experiment.name", ["letters, digits"]),
    (("final.seeds", []), "final.seeds", ["at least 1 value must be given, got []"]),
    (("final.seeds", [0, "one"]), "final.seeds", ["expected a list of integers, got [0, 'one']"]),
    (("train.milestones", [5, 2.5]), "train.milestones", ["expected a list of integers"]),
    (("data.mean", ["a", 0.5, 0.5]), "data.mean", ["expected a list of numbers"]),
    (("data.augment.hflipp", 0.5), "data.augment.hflipp", ["did you mean 'hflip'"]),
    (("data.storage", "stream"), "data.storage", ["stream reads image files", "digits is loaded whole"]),
    (("data.storage", "disk"), "data.storage", ["not allowed", "auto, memory, stream"]),
    (("data.workers", -1), "data.workers", ["workers >= 0 must hold, got workers=-1"]),
    (("data.max_memory_gb", 0.0), "data.max_memory_gb", ["max_memory_gb > 0 must hold"]),
    (
        ("experiment.metric", "val_auc"),
        "experiment.metric",
        ["val_auc needs a binary task (2 classes), got 10 classes", "val_f1_macro", "(digits)"],
    ),
    (("experiment.metric", "val_f1"), "experiment.metric", ["did you mean 'val_f1_macro'"]),
    (("experiment.mode", "min"), "experiment.mode", ["val_acc is better when higher"]),
]


@pytest.mark.parametrize("change,path,words", BAD, ids=[b[1] + "-" + str(i) for i, b in enumerate(BAD)])
def test_bad_spec_message(backend, change, path, words):
    spec = with_(*change)
    with pytest.raises(SpecError) as exc:
        resolve(spec, backend, file="s.yaml")
    msg = str(exc.value)
    assert msg.startswith(f"s.yaml: {path}: "), msg
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


def test_a_space_draws_only_values_its_key_takes(backend):
    """What a space can draw is checked as the key's own value: a quantized range by its ends as Tune rounds them,
    a library model's freeze by the same rule as a registered one's, a key searched beside a branch under its own
    name. A rule across keys is not: a trial draws plateau with schedule_per: batch and steps it per epoch."""
    cases = [
        (
            with_("space.train.label_smoothing", {"quniform": [0.0, 0.99, 0.2]}),
            "space.train.label_smoothing: quniform reaches 1.0: 0 <= label_smoothing < 1 must hold",
        ),
        (
            with_("model", {"name": "timm/resnet18", "freeze": "half"}),
            "model.freeze: none, head_only or a fraction of layers in [0, 1], got 'half'",
        ),
        (
            with_("space.model.freeze", {"choice": [0.5, 1.5]}, with_("model", {"name": "tv/resnet18"})),
            "space.model.freeze: 0 <= freeze <= 1 must hold, got freeze=1.5",
        ),
        (
            {
                **BASE,
                "space": {
                    "family": {"grid": [{"model.name": "cnn"}, {"model.name": "vit"}]},
                    "train.lr": {"grid": [0.1, -1.0]},
                },
            },
            "space.train.lr: lr > 0 must hold, got lr=-1.0",
        ),
    ]
    for spec, message in cases:
        with pytest.raises(SpecError) as exc:
            resolve(spec, backend, file="s.yaml")
        assert str(exc.value).startswith(f"s.yaml: {message}"), str(exc.value)
    drawn_together = with_(
        "space.train.schedule", {"choice": ["cosine", "plateau"]}, with_("train.schedule_per", "batch")
    )
    assert resolve(drawn_together, backend)["space"]["train.schedule"] == {"choice": ["cosine", "plateau"]}
    library = with_("space.model.drop_rate", {"uniform": [0.0, 0.5]}, with_("model", {"name": "timm/resnet18"}))
    assert resolve(library, backend)["model"] == {"name": "timm/resnet18", "freeze": "none"}


def test_grid_rejected_by_searchers_that_cannot_take_it(backend):
    for algo in ("optuna", "bohb"):
        spec = with_("space.model.dropout", {"grid": [0.1, 0.2]}, with_("search.algorithm", algo))
        if algo == "bohb":
            spec["scheduler"] = {"name": "hyperband"}
        with pytest.raises(SpecError, match=f"grid is not supported by search.algorithm={algo}"):
            resolve(spec, backend, file="s.yaml")


def test_algorithm_scheduler_pairs(backend):
    with pytest.raises(SpecError, match="bohb needs scheduler.name=hyperband"):
        resolve(with_("search.algorithm", "bohb"), backend)
    spec = with_("scheduler.name", "pbt", with_("search.algorithm", "optuna"))
    with pytest.raises(SpecError, match="pbt .* takes search.algorithm random or grid"):
        resolve(spec, backend)


def test_defaults_and_types_filled(backend):
    spec = resolve(with_("train.lr", "1e-3"), backend, file="s.yaml")  # PyYAML reads 1e-3 as text
    assert spec["train"]["lr"] == 1e-3 and isinstance(spec["train"]["lr"], float)
    assert spec["experiment"]["metric"] == "val_acc" and spec["experiment"]["mode"] == "max"
    assert spec["scheduler"]["max_t"] == 2  # defaults to train.epochs
    assert spec["tracking"]["mlflow_uri"] == "sqlite:///mlflow.db"
    assert spec["data"]["augment"]["hflip"] == 0.0
    assert spec["model"]["dropout"] == 0.5  # the model's own default


def test_selection_metrics_beyond_accuracy_are_maximised(backend):
    for metric in ("val_f1_macro", "val_mcc", "val_balanced_acc"):
        assert resolve(with_("experiment.metric", metric), backend)["experiment"]["mode"] == "max"
    binary = with_("data", {"dataset": "synthetic", "num_classes": 2}, with_("experiment.metric", "val_auc"))
    assert resolve(binary, backend)["experiment"]["mode"] == "max"


def test_set_overrides_are_typed(tmp_path, backend):
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(BASE))
    spec = load_spec(
        f,
        backend,
        [
            "train.lr=1",
            "experiment.name=123",
            "model.dropout=0.25",
            "space.model.hidden={choice: [16, 32]}",
            "data.augment.hflip=0.5",
        ],
    )
    assert spec["train"]["lr"] == 1.0 and isinstance(spec["train"]["lr"], float)
    assert spec["experiment"]["name"] == "123"
    assert spec["model"]["dropout"] == 0.25
    assert spec["space"]["model.hidden"] == {"choice": [16, 32]}
    assert spec["data"]["augment"]["hflip"] == 0.5
    with pytest.raises(SpecError, match=r"s.yaml: train.epochs: expected an integer, got 'many'"):
        load_spec(f, backend, ["train.epochs=many"])
    with pytest.raises(SpecError, match="expected key.path=value"):
        load_spec(f, backend, ["train.epochs"])


def test_coerce_rules():
    assert coerce(3, float) == 3.0
    assert coerce(64.0, int) == 64
    with pytest.raises(TypeError):
        coerce(64.5, int)
    with pytest.raises(TypeError):
        coerce(True, int)
    assert coerce("x", bool | str) == "x" and coerce(False, bool | str) is False
    assert parse_override("a.b=[1, 2]", "f") == ("a.b", [1, 2])


def test_smoke_shrinks(backend):
    spec = resolve(with_("space.model.dropout", {"grid": [0.1, 0.2, 0.3]}, with_("train.epochs", 50)), backend)
    s = smoke_spec(spec, backend)
    assert s["train"]["epochs"] == 2 and s["search"]["num_samples"] <= 2
    assert s["space"]["model.dropout"] == {"grid": [0.1]}
    assert s["data"]["max_per_class"] == 64 and s["scheduler"]["max_t"] == 2
    assert s["experiment"]["name"].endswith("-smoke")
    assert spec["final"]["timing_s"] == 1.0 and s["final"]["timing_s"] == 0.1  # its speed checked, not reported
    assert spec["data"]["test_max_per_class"] is None and s["data"]["test_max_per_class"] == 100  # and its accuracy
    resolve(s, backend)  # still a valid spec


def test_yaml_error_is_one_line(tmp_path, backend):
    f = tmp_path / "bad.yaml"
    f.write_text("data: {dataset: digits\nmodel: [")
    with pytest.raises(SpecError) as exc:
        load_spec(f, backend)
    assert "invalid YAML" in str(exc.value) and "line" in str(exc.value) and "\n" not in str(exc.value)


def test_cli_bad_spec_exits_2_one_line_nothing_on_disk_without_importing_torch_or_ray(tmp_path):
    """The console script itself, as a user meets it: one line, exit 2, nothing on disk, in well under a second
    of imports (torch, Ray and MLflow are never loaded to refuse a spec)."""
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(with_("space.train.lr", {"uniform": [0.1, 0.01]})))
    r = console("tune-run", "s.yaml", cwd=tmp_path, env=console_env(PYTHONPROFILEIMPORTTIME="1"))
    assert r.returncode == 2
    lines = [x for x in r.stderr.splitlines() if not x.startswith("import time:")]
    assert lines == ["tune-run: error: s.yaml: space.train.lr: low <= high must hold, got low=0.1, high=0.01"]
    imported = {x.split("|")[-1].strip() for x in r.stderr.splitlines() if x.startswith("import time:")}
    assert not imported & {"torch", "ray", "mlflow", "optuna", "sklearn"}, sorted(imported & {"torch", "ray"})
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()
    # --help neither.
    r = console("tune-run", "--help", cwd=tmp_path, env=console_env(PYTHONPROFILEIMPORTTIME="1"))
    assert r.returncode == 0 and "usage: tune-run" in r.stdout
    assert not {x.split("|")[-1].strip() for x in r.stderr.splitlines()} & {"torch", "ray", "mlflow"}


def test_a_studys_driver_builds_its_trainables_without_importing_torch():
    """What a study's driver imports to build its search and final trainables (``ray_adapter``; it never trains)
    leaves torch out: the trial processes import it, not the driver (~1.8 CPU-seconds and a few hundred MB a study
    on a 2-core CPU)."""
    code = (
        "import sys, search.cli, search.run, trainables\n"
        "from trainables import ray_adapter, resources\n"
        "ray_adapter.trial_request({'cpu': 1, 'gpu': 0}, 0, False)\n"
        "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], env=console_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_cli_missing_data_root_exits_2_nothing_on_disk(tmp_path, cli):
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(with_("data", {"dataset": "imagefolder", "root": str(tmp_path / "nope")})))
    r = cli("tune-run", str(f), cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "data.root" in r.stderr and "is not a folder" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_cli_dry_run_lists_rejected_configurations(tmp_path, cli):
    spec = {
        "experiment": {"name": "dry"},
        "data": {"dataset": "synthetic", "image_size": 16},
        "model": {"name": "vit", "embed_dim": 48, "depth": 1, "mlp_dim": 32},
        "space": {"model.num_heads": {"grid": [2, 3, 5]}, "model.patch_size": {"grid": [4, 5]}},
        "search": {"algorithm": "random"},
    }
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(spec))
    r = cli("tune-run", str(f), "--dry-run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "# grid points: 6; trials: 6" in r.stdout
    # num_heads=5 does not divide 48; patch 5 does not divide 16: 4 of 6 rejected.
    assert "rejected by the model of 6 previewed configurations: 4" in r.stdout
    assert "embed_dim must be divisible by num_heads" in r.stdout and "patch_size must divide image_size" in r.stdout
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "name", ["quickstart", "vit", "cnn", "resnet18", "paper004-cnn", "paper004-vit", "paper004-resnet18"]
)
def test_shipped_specs_validate(backend, name):
    spec = load_spec(Path(__file__).resolve().parents[1] / "spaces" / f"{name}.yaml", backend)
    assert spec["experiment"]["name"] == name


def test_annotated_example_in_spaces_readme_is_valid(backend):
    import re

    text = (Path(__file__).resolve().parents[1] / "spaces" / "README.md").read_text()
    # the key reference (made from the models) and the space example below it
    block = "".join(re.findall(r"```yaml\n(.*?)```", text, re.S)[:2])
    spec = resolve(yaml.safe_load(block), backend, file="spaces/README.md")
    assert len(spec["space"]) == 9 and spec["model"]["name"] == "vit"


# Keys the driver reads once (data loading and splits): a per-trial value would be ignored or move the test split.
UNSEARCHABLE = [
    ("data.root", {"choice": ["/a", "/b"]}, "loads the data once"),
    ("data.dataset", {"choice": ["digits", "synthetic"]}, "loads one dataset for all trials"),
    ("data.load_max_per_class", {"choice": [10, 20]}, "reads the files once"),
    ("data.storage", {"choice": ["memory", "stream"]}, "decides once"),
    ("data.split_seed", {"randint": [0, 3]}, "move the test and validation split"),
    ("data.val_fraction", {"uniform": [0.1, 0.2]}, "move the validation split"),
    ("data.test_fraction", {"uniform": [0.1, 0.2]}, "move the test split"),
    ("data.positive_class", {"choice": ["0", "1"]}, "orders the classes once"),
]


@pytest.mark.parametrize("key,dist,why", UNSEARCHABLE, ids=[u[0] for u in UNSEARCHABLE])
def test_keys_the_driver_reads_once_cannot_be_searched(backend, key, dist, why):
    with pytest.raises(SpecError) as exc:
        resolve(with_(f"space.{key}", dist), backend, file="s.yaml")
    assert str(exc.value).startswith(f"s.yaml: space.{key}: {key} cannot be searched: "), str(exc.value)
    assert why in str(exc.value) and "\n" not in str(exc.value)
    # Inside a branch option, as a distribution or as the option's fixed value.
    for i, value in enumerate((dist, next(iter(dist.values()))[0])):
        branch = {"grid": [{"name": "a", "train.momentum": 0.9}, {"name": "b", key: value}]}
        with pytest.raises(SpecError) as exc:
            resolve(with_("space.recipe", branch), backend, file="s.yaml")
        assert str(exc.value).startswith(f"s.yaml: space.recipe.grid[1].{key}: {key} cannot be searched: "), (
            i,
            str(exc.value),
        )


def test_data_keys_a_trial_reads_can_be_searched(backend):
    spec = resolve(
        with_(
            "space.data.train_fraction",
            {"uniform": [0.5, 1.0]},
            with_("space.data.augment.hflip", {"choice": [0.0, 0.5]}),
        ),
        backend,
        file="s.yaml",
    )
    assert "data.train_fraction" in spec["space"] and "data.augment.hflip" in spec["space"]


@pytest.mark.parametrize(
    "space,where",
    [
        ({"train.epochs": {"grid": [3, 9]}}, "space.train.epochs up to 9"),
        ({"train.epochs": {"choice": [3, 9]}}, "space.train.epochs up to 9"),
        ({"train.epochs": {"randint": [2, 9]}}, "space.train.epochs up to 9"),
        (
            {"recipe": {"grid": [{"name": "a", "train.epochs": 3}, {"name": "b", "train.epochs": 9}]}},
            "space.recipe.grid[1].train.epochs up to 9",
        ),
        (
            {
                "recipe": {
                    "choice": [{"name": "a", "train.momentum": 0.9}, {"name": "b", "train.epochs": {"choice": [4, 9]}}]
                }
            },
            "space.recipe.choice[1].train.epochs up to 9",
        ),
    ],
    ids=["grid", "choice", "randint", "branch-value", "branch-choice"],
)
def test_max_t_below_a_searched_epochs_value_is_refused(backend, space, where):
    for sched in ("asha", "hyperband"):
        spec = {**BASE, "train": {"epochs": 3}, "space": space, "scheduler": {"name": sched, "max_t": 5}}
        with pytest.raises(SpecError) as exc:
            resolve(spec, backend, file="s.yaml")
        assert str(exc.value) == (
            f"s.yaml: scheduler.max_t: max_t >= every train.epochs a trial can have must hold, got max_t=5, {where}"
        ), str(exc.value)
    # Unset, max_t is the longest trial; fifo never stops a trial, so its max_t cuts nothing.
    spec = resolve({**BASE, "train": {"epochs": 3}, "space": space, "scheduler": {"name": "asha"}}, backend)
    assert spec["scheduler"]["max_t"] == 9
    resolve({**BASE, "train": {"epochs": 3}, "space": space, "scheduler": {"name": "fifo", "max_t": 5}}, backend)


@pytest.mark.parametrize(
    "key,dist,why",
    [
        ("model.hidden", {"choice": [16, 32]}, "it changes the model"),
        ("model.dropout", {"uniform": [0.0, 0.5]}, "it changes the model"),
        ("data.image_size", {"choice": [8, 16]}, "it changes the input size"),
        ("train.optimizer", {"choice": ["adamw", "sgd"]}, "it changes the optimizer's state"),
        ("train.loss", {"choice": ["ce", "bce"]}, "it changes the classifier head"),
    ],
)
def test_pbt_refuses_keys_another_trials_checkpoint_would_not_fit(backend, key, dist, why):
    spec = with_(f"space.{key}", dist, with_("scheduler", {"name": "pbt"}))
    with pytest.raises(SpecError) as exc:
        resolve(spec, backend, file="s.yaml")
    assert str(exc.value).startswith(f"s.yaml: space.{key}: pbt cannot perturb {key}: {why}"), str(exc.value)
    # Other schedulers retrain each trial from its own start: the key is searchable there.
    if key != "train.loss":  # digits has 10 classes: bce is refused for its own reason
        resolve(with_(f"space.{key}", dist), backend, file="s.yaml")


def test_pbt_perturbs_training_keys(backend):
    spec = resolve(
        with_("space.train.weight_decay", {"loguniform": [1e-4, 1e-1]}, with_("scheduler", {"name": "pbt"})),
        backend,
        file="s.yaml",
    )
    assert set(spec["space"]) == {"train.lr", "train.weight_decay"}


def test_a_pbt_result_is_a_schedule_not_a_recipe(backend):
    from search.store._export import best_spec

    study = resolve(with_("scheduler", {"name": "pbt"}), backend, file="s.yaml")
    best = best_spec(study, {"train.lr": 0.003}, backend)  # what best.yaml holds: the best trial's last values
    with pytest.raises(SpecError) as exc:
        resolve(best, backend, file="best.yaml")
    assert str(exc.value).startswith(
        "best.yaml: scheduler.name: pbt perturbs the keys in space and this spec "
        "searches none; a pbt trial's hyperparameters change while it trains"
    )
    assert "--set scheduler.name=fifo" in str(exc.value)
    assert resolve({**best, "scheduler": {"name": "fifo"}}, backend)["train"]["lr"] == 0.003
    with pytest.raises(SpecError, match="s.yaml: final: no final training after a pbt search"):
        resolve({**with_("scheduler", {"name": "pbt"}), "final": {"seeds": [0]}}, backend, file="s.yaml")


def test_grace_period_is_checked_against_the_max_t_a_searched_epochs_raises(backend):
    """max_t defaults to the longest trial; grace_period is compared with that, not with train.epochs."""
    spec = resolve(
        with_("space.train.epochs", {"grid": [20, 40]}, with_("scheduler", {"name": "asha", "grace_period": 12})),
        backend,
        file="s.yaml",
    )
    assert spec["scheduler"]["max_t"] == 40 and spec["scheduler"]["grace_period"] == 12
    with pytest.raises(SpecError, match="1 <= grace_period <= max_t must hold, got grace_period=50, max_t=40"):
        resolve(
            with_("space.train.epochs", {"grid": [20, 40]}, with_("scheduler", {"name": "asha", "grace_period": 50})),
            backend,
            file="s.yaml",
        )
