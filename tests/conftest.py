from __future__ import annotations

import csv
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest

import trainables

REPO = Path(__file__).resolve().parents[1]
SHARED_CIFAR = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


def pytest_configure(config: pytest.Config) -> None:
    """Every cache a test writes lives in a fresh folder of this test session — not one shared by all
    sessions on the host, whose files anyone could replace — for this process and those it starts."""
    cache = tempfile.mkdtemp(prefix="tune-run-test-cache-")
    os.environ["TUNE_CACHE_DIR"] = cache  # console scripts and Ray workers read it at import
    trainables.data.CACHE_DIR = Path(cache)  # this process imported trainables.data already
    config.add_cleanup(lambda: shutil.rmtree(cache, ignore_errors=True))


@pytest.fixture
def backend():
    return trainables


def make_image_tree(root: Path, classes: dict[str, int], size: int = 12, split: str | None = None,
                    seed: int = 0) -> Path:
    """A class-per-folder tree of real PNG files whose colour depends on the class (learnable)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = root / split if split else root
    for ci, (name, n) in enumerate(classes.items()):
        (base / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = np.clip(rng.normal(60 + 120 * (ci % 2), 30, (size, size, 3)), 0, 255).astype(np.uint8)
            img[:, :, ci % 3] = 200
            Image.fromarray(img).save(base / name / f"{i:04d}.png")
    return root


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> Path:
    """The shared CIFAR-10 JPEG tree (train/ and test/ class folders), extracted once per session."""
    if not SHARED_CIFAR.is_file():
        pytest.skip(f"shared CIFAR-10 tree not found at {SHARED_CIFAR}")
    out = tmp_path_factory.mktemp("cifar")
    with tarfile.open(SHARED_CIFAR) as tar:
        tar.extractall(out, filter="data")
    hits = [p.parent for p in out.rglob("train") if p.is_dir() and (p.parent / "test").is_dir()]
    if not hits:
        pytest.skip("shared CIFAR-10 archive has no train/ + test/ folders")
    return hits[0]


# --------------------------------------------------------------------------- shared by the Ray tests


@pytest.fixture(scope="module")
def ray_session():
    """One Ray runtime for a module's in-process studies, shut down after it."""
    import ray

    yield
    ray.shutdown()


def small_spec(tmp_path: Path, name: str, **sections):
    """A resolved spec of a tiny study (synthetic 16 px, a 1-block ViT) writing under ``tmp_path``."""
    from search import resolve

    spec = {
        "experiment": {"name": name, "output_dir": str(tmp_path / "runs")},
        "data": {"dataset": "synthetic", "image_size": 16, "num_classes": 4, "num_samples": 400},
        "model": {"name": "vit", "patch_size": 4, "embed_dim": 16, "depth": 1, "num_heads": 2, "mlp_dim": 32},
        "train": {"epochs": 3, "batch_size": 64, "lr": 3e-3},
        "tracking": {"mlflow_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    }
    for k, v in sections.items():
        spec[k] = v if k == "model" else {**spec.get(k, {}), **v}  # a new model replaces the ViT
    return resolve(spec, trainables)


def mlflow_runs(db: Path, experiment: str):
    """(client, every run of ``experiment``) in the SQLite store ``db``."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{db}")
    exp = c.get_experiment_by_name(experiment)
    return c, (c.search_runs([exp.experiment_id], max_results=1000) if exp else [])


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))
