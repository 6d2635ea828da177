"""A final model as an MLflow model: the network with its input signature, the spec that rebuilds it and its
class names, pinned requirements, so that ``mlflow.pytorch.load_model`` and the model registry take it as is.
The trial side owns this (torch, the model's files); the orchestration calls ``log_model`` in the run it chose."""

from __future__ import annotations

import logging
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from .batches import predictor
from .model_folder import load_model

# Pinned from this environment: MLflow's own requirement inference would import-scan the model (slow).
REQUIREMENTS = ("torch", "torchvision", "timm", "numpy", "safetensors")


def exportable(model_dir: Path) -> tuple[torch.nn.Module, np.ndarray]:
    """The model of ``model_dir`` (eval mode, CPU; predicting as its test metrics were measured, test-time views
    included) and one normalised float32 input (1 x C x H x W) that fixes its input signature; the model returns
    one logit per class (one for a BCE head)."""
    model, spec, meta = load_model(Path(model_dir), torch.device("cpu"))
    model = predictor(model, str(spec["train"].get("tta", "none")))
    size = int(meta["image_size"])
    return model.eval(), np.zeros((1, int(meta["in_chans"]), size, size), dtype=np.float32)


def log_model(model_dir: Path, name: str, params: dict[str, int | str]) -> str:
    """Log the final model of ``model_dir`` as ``name`` into MLflow's active run; returns its model URI."""
    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature

    # Its warning on pickled models is for loading someone else's; these are the study's own.
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
    model, example = exportable(model_dir)
    with torch.no_grad():
        signature = infer_signature(example, model(torch.from_numpy(example)).numpy())
    info = mlflow.pytorch.log_model(
        model,
        name=name,
        signature=signature,
        extra_files=[str(Path(model_dir) / "spec.yaml"), str(Path(model_dir) / "meta.json")],
        pip_requirements=[f"{p}=={metadata.version(p)}" for p in REQUIREMENTS if _installed(p)],
        params=params,
        # pickle, not MLflow's torch.export default: every model exports
        serialization_format="pickle",
    )
    return str(info.model_uri)


def _installed(pkg: str) -> bool:
    try:
        metadata.version(pkg)
        return True
    except metadata.PackageNotFoundError:
        return False
