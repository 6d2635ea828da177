"""``--smoke`` caps every trial's batch and image sizes (``trainables.smoke.smoke_cap``), in the spec's
sections and wherever its space sets them, so that the smoke run of any shipped spec stays within a few GB
of host memory: checked on the resolved spec ``--smoke --dry-run`` prints, for every shipped spec."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import make_image_tree
from trainables.smoke import SMOKE_BATCH, SMOKE_LOAD_PER_CLASS, smoke_cap

REPO = Path(__file__).resolve().parents[1]
SPECS = sorted(p.name for p in (REPO / "spaces").glob("*.yaml"))


def _values(dist):
    """The values a space entry can take: a fixed value, a list's values or a range's bounds."""
    if not isinstance(dist, dict):
        return [dist]
    ((kind, values),) = dist.items()
    return list(values) if kind in ("grid", "choice") else list(values[:2])


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    make_image_tree(root, {"a": 3, "b": 3}, size=16, split="train")
    return make_image_tree(root, {"a": 2, "b": 2}, size=16, split="test")


@pytest.mark.parametrize("name", SPECS)
def test_smoke_caps_batch_and_image_size_of_every_shipped_spec(name, tree, cli):
    args = [str(REPO / "spaces" / name), "--smoke", "--dry-run"]
    if name != "quickstart.yaml":  # the quickstart's digits come with scikit-learn
        args += ["--set", f"data.root={tree}"]
    r = cli("tune-run", *args, cwd=tree)
    assert r.returncode == 0, r.stderr[-2000:]
    spec = yaml.safe_load("\n".join(ln for ln in r.stdout.splitlines() if not ln.startswith("#")))
    model = spec["model"]["name"]
    from trainables.data import NATIVE

    size = spec["data"]["image_size"] or NATIVE[spec["data"]["dataset"]][0]  # null: the set's native size
    assert size is not None and size <= smoke_cap("data.image_size", model)
    if spec["data"]["dataset"] in ("cifar10", "digits"):  # a native size under the cap is kept, not upscaled
        assert spec["data"]["image_size"] is None
    assert spec["train"]["batch_size"] <= SMOKE_BATCH and spec["train"]["eval_batch_size"] <= SMOKE_BATCH
    # Final training reads the training split anew: capped too (it trained all 50,000 CIFAR images once).
    assert spec["final"]["max_per_class"] <= 64 and spec["final"]["epochs"] <= 2
    # An image tree is read up to a few hundred files per class, not decoded whole (CIFAR-10's 50,000 took 17 s).
    assert spec["data"]["load_max_per_class"] <= SMOKE_LOAD_PER_CLASS
    entries = [(k, d, model) for k, d in spec["space"].items() if "." in k]
    for key, dist in spec["space"].items():
        if "." not in key:  # a branch: each option's own keys, with its own model
            entries += [
                (k, v, opt.get("model.name", model))
                for opt in next(iter(dist.values()))
                for k, v in opt.items()
                if k != "name"
            ]
    for key, dist, m in entries:
        if key in ("train.batch_size", "train.eval_batch_size", "data.image_size"):
            assert max(_values(dist)) <= smoke_cap(key, m), (key, dist)


@pytest.mark.parametrize("size,floor", [(None, 4), (64, 8)])  # CIFAR's native 32 px: 4; 64 px: 8
def test_smoke_floors_vit_patches_at_64_tokens(tree, size, floor):
    """paper004-vit.yaml's space samples patch 2 (1,024 tokens of a 64 px image, over 20 GB in one step: see
    tests/test_smoke_memory.py); its smoke run samples patches of at least side / 8 px (64 tokens)."""
    import trainables
    from search import load_spec

    sets = [f"data.root={tree}", *([f"data.image_size={size}"] if size else [])]
    spec = load_spec(REPO / "spaces" / "paper004-vit.yaml", trainables, sets, smoke=True)
    assert min(spec["space"]["model.patch_size"]["choice"]) == floor  # {2, 4, 8} floored
    assert spec["model"]["patch_size"] >= floor and (spec["data"]["image_size"] or 32) // floor == 8
