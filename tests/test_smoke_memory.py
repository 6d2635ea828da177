"""The host-memory peak of every shipped spec's ``--smoke`` run, stated: one training step of the largest
configuration its smoke space can sample, through the engine's own step (``setup`` + ``train_epoch``: batcher,
augmentation, model, loss, optimizer), on CPU, in a process of its own per spec (forked from one that imported
torch, timm and the project: the peak a fresh process would reach, without paying the imports per spec); the
process's peak resident size (``ru_maxrss``, imports included) must stay under ``BOUND_MB``.

The largest configuration: the spec after the smoke caps (``load_spec(..., smoke=True)``, the code ``--smoke``
runs), with each searched key at its most memory-hungry value — the largest batch, image size, width and depth
(``randint``'s upper bound itself, one past what Tune draws), the smallest ``patch_size`` (the most tokens) —
and every option of a branch. Pretrained models are built without their weights (nothing is downloaded here;
the weights do not change the model's size). The data is the smoke run's own size: 64 images per class.

Measured peaks per spec: ``PEAKS_MB`` (the largest, cars-hyperband's ConvNeXt-B, 2.2 GB; before the caps its
smoke run peaked above 11 GB, issue 11).
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SPECS = sorted(p.name for p in (REPO / "spaces").glob("*.yaml"))
BOUND_MB = 3 * 1024  # "a few GB": what a smoke run may take of a laptop or a CI runner
# Measured 2026-11-22 10:00 UTC on the development machine (2 shared cores, 23 GB, torch CPU build), peak resident
# MB of each spec's measuring child (about 450 MB of it is the imports of torch, timm and the project). Before the
# smoke run's patch floor (trainables.smoke.SMOKE_TOKENS) paper004-vit.yaml's patch 2 took >20 GB (killed);
# before the caps, cars-hyperband's smoke run peaked above 11 GB (issue 11).
PEAKS_MB = {
    "cars-hyperband.yaml": 2178,  # timm/convnext_base, 64 px, batch 32, both augmentation options
    "casting-freeze.yaml": 693,  # tv/alexnet (the family grid's first), 64 px
    "cnn-vs-vit-pareto.yaml": 596,  # fast_cnn 64/256/256 and vit embed 192, depth 6, 32 px (measured 2026-12-06)
    "cnn.yaml": 494,  # fast_cnn 32/128/128, CIFAR's 32 px, batch 64 (measured 2026-12-05; the plain cnn's was 502)
    "coins-cnn.yaml": 492,  # coins_cnn, 64 px
    "coins-vit-pretrained.yaml": 1943,  # timm/vit_base_patch16, 64 px
    "coins-vit.yaml": 487,  # vit embed 256, depth 1, 64 px
    "data-efficiency.yaml": 659,  # resnet18 (cifar stem), 32 px
    "paper004-cnn.yaml": 501,  # cnn 64/128/256, hidden 512, 32 px
    "paper004-vit.yaml": 847,  # vit patch 4 (the floor at 32 px), embed 256, depth 8, mlp 1024
    "quickstart.yaml": 603,  # cnn on digits (8 px)
    "paper004-resnet18.yaml": 662,  # resnet18 (ImageNet stem), 32 px
    "resnet18.yaml": 662,  # resnet18 (cifar stem), 32 px
    "vit.yaml": 513,  # vit conv tokenizer, patch 8, embed 128, depth 4, 32 px (measured 2026-12-07)
}
SMALLER_IS_LARGER = ("patch_size",)  # keys whose smallest value makes the largest activations


def _extreme(key: str, values: list[Any]) -> Any:
    """The value of ``values`` that takes the most memory: the largest number (the smallest patch size); the
    first of non-numbers (optimizers, activations: the same tensors either way)."""
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) != len(values) or not numbers:
        return values[0]
    return min(numbers) if key.rsplit(".", 1)[-1] in SMALLER_IS_LARGER else max(numbers)


def largest_configs(space: dict[str, Any]) -> list[dict[str, Any]]:
    """The largest configurations a (smoke) space can sample: one per combination of branch options."""
    fixed: dict[str, Any] = {}
    branches: list[list[dict[str, Any]]] = []
    for key, dist in space.items():
        if not isinstance(dist, dict):
            fixed[key] = dist
            continue
        ((kind, values),) = dist.items()
        if "." not in key:  # a branch: every option, each with its own keys at their largest
            branches.append(
                [
                    {
                        k: _extreme(k, next(iter(v.values())) if isinstance(v, dict) else [v])
                        for k, v in opt.items()
                        if k != "name"
                    }
                    for opt in values
                ]
            )
        else:
            fixed[key] = _extreme(key, list(values) if kind in ("grid", "choice") else list(values[:2]))
    return [{**fixed, **{k: v for opt in combo for k, v in opt.items()}} for combo in itertools.product(*branches)]


def measure(spec_file: str, root: str) -> dict[str, Any]:
    """In this (fresh) process: one training step of each largest configuration; the peak resident MB."""
    import torch

    import trainables
    from search import load_spec
    from trainables.engine import setup, train_epoch

    # The tree's classes are a and b: binary specs name their own positive class, here b.
    overrides = ["train.device=cpu"] + (
        [] if spec_file.endswith("quickstart.yaml") else [f"data.root={root}", "data.positive_class=b"]
    )
    spec = load_spec(spec_file, trainables, overrides, smoke=True)
    shapes = []
    for values in largest_configs(spec["space"]):
        s = trainables.apply_config(spec, values)
        if "pretrained" in s["model"]:
            s["model"]["pretrained"] = False  # no download; weights do not change the size
        pools = trainables.prepare(s)
        run = setup(s, pools, torch.device("cpu"))
        try:
            train_epoch(run, 0, first=True, max_batches=1)
        finally:
            run.batcher.close()
        shapes.append(
            {
                "batch_size": s["train"]["batch_size"],
                "image_size": s["data"]["image_size"],
                **{f"model.{k}": v for k, v in s["model"].items() if not isinstance(v, (float, dict))},
            }
        )
        del run, pools
    return {"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, "configs": shapes}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """Two classes of 64 images each (the smoke run's count), train and test."""
    from tests.conftest import make_image_tree

    root = tmp_path_factory.mktemp("tree")
    make_image_tree(root, {"a": 64, "b": 64}, size=16, split="train")
    return make_image_tree(root, {"a": 4, "b": 4}, size=16, split="test")


@pytest.fixture(scope="module")
def peaks(tree) -> dict[str, dict[str, Any]]:
    """Every spec measured by one fresh process that imports torch, timm and the project once, then forks a
    child per spec: each child's peak starts from the same imports a fresh process would hold (a forked
    process's high-water mark begins at its parent's resident size), without paying them per spec."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    r = subprocess.run(
        [sys.executable, __file__, str(tree), *(str(REPO / "spaces" / n) for n in SPECS)],
        capture_output=True,
        text=True,
        timeout=1200,
        env=env,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return {Path(k).name: v for k, v in json.loads(r.stdout.strip().splitlines()[-1]).items()}


@pytest.mark.parametrize("name", SPECS)
def test_smoke_run_of_every_shipped_spec_stays_within_a_few_gb(name, peaks):
    result = peaks[name]
    assert "error" not in result, result.get("error")
    assert result["peak_mb"] < BOUND_MB, (name, result)
    print(f"{name}: peak {result['peak_mb']} MB (stated: {PEAKS_MB.get(name)} MB) for {result['configs']}")


def _measure_each(root: str, spec_files: list[str]) -> dict[str, Any]:
    """Import once, then one forked child per spec (its own peak); what each child measured, or its error."""
    import timm  # noqa: F401  (imported before forking: every child starts from the same imports)
    import torch  # noqa: F401

    import search  # noqa: F401
    import trainables  # noqa: F401

    out: dict[str, Any] = {}
    for spec_file in spec_files:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: measure, report through the pipe, leave without running atexit handlers
            os.close(read)
            try:
                payload = json.dumps(measure(spec_file, root))
            except BaseException as err:  # noqa: BLE001 - reported to the test, which fails on it
                payload = json.dumps({"error": f"{type(err).__name__}: {err}"})
            os.write(write, payload.encode())
            os.close(write)
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as f:
            data = f.read()
        _, status = os.waitpid(pid, 0)
        out[spec_file] = json.loads(data) if data else {"error": f"the measuring child died (status {status})"}
    return out


if __name__ == "__main__":  # the measuring process: python tests/test_smoke_memory.py ROOT SPEC...
    print(json.dumps(_measure_each(sys.argv[1], sys.argv[2:])))
