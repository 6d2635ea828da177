"""Final models as MLflow models: each seed's network with its input signature, spec and class names,
so ``mlflow.pytorch.load_model`` and the model registry take it as is."""

from __future__ import annotations

import logging
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

# Pinned from this environment: MLflow's own requirement inference would import-scan the model (slow).
REQUIREMENTS = ("torch", "torchvision", "timm", "numpy", "safetensors")


class ExportBackend(Protocol):
    def exportable(self, model_dir: Path) -> tuple[Any, Any]: ...


def seed_runs(client: Any, parent: str) -> dict[str, str]:
    """The final run's per-seed child runs, {seed: run id}."""
    exp = client.get_run(parent).info.experiment_id
    runs = client.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")
    return {r.data.params["seed"]: r.info.run_id for r in runs if "seed" in r.data.params}


def log_final_models(
    uri: str, parent: str, out: Path, seeds: list[int], backend: ExportBackend, log: Any = print
) -> dict[int, str]:
    """Log every seed's model (in its own run, else the final run); returns {seed: model URI}.

    A model MLflow cannot take is reported and skipped: the trained models and metrics are on disk already.
    """
    import mlflow
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    from ._tracking import client_for

    mlflow.set_tracking_uri(uri)
    # Its warning on pickled models is for loading someone else's; these are the study's own.
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
    runs = seed_runs(client_for(uri), parent)
    reqs = [f"{p}=={metadata.version(p)}" for p in REQUIREMENTS if _installed(p)]
    uris = {}
    for seed in seeds:
        d = out / str(seed)
        try:
            model, example = backend.exportable(d)
            with torch.no_grad():
                signature = infer_signature(example, model(torch.from_numpy(example)).numpy())
            with mlflow.start_run(run_id=runs.get(str(seed), parent)):
                info = mlflow.pytorch.log_model(
                    model,
                    name=f"model-seed{seed}",
                    signature=signature,
                    extra_files=[str(d / "spec.yaml"), str(d / "meta.json")],
                    pip_requirements=reqs,
                    params={"seed": seed},
                    # pickle, not MLflow's torch.export default: every model exports
                    serialization_format="pickle",
                )
            uris[seed] = info.model_uri
        except Exception as err:  # noqa: BLE001  (whatever MLflow or the model raises, the results stand)
            log(f"warning: seed {seed}'s model was not logged to MLflow: {type(err).__name__}: {err}")
    return uris


def _installed(pkg: str) -> bool:
    try:
        metadata.version(pkg)
        return True
    except metadata.PackageNotFoundError:
        return False
