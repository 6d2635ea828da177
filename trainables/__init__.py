"""What runs inside one trial: data, models, the training engine and metrics.

Nothing here imports Ray except ``ray_adapter``; the backend functions below are what the
orchestration package (``search``) calls.
"""

from ._backend import (
    USER_ERRORS,
    apply_config,
    checkpoint_conflict,
    data_summary,
    dataset_info,
    describe,
    infeasible,
    node_paths,
    oom_reason,
    prepare,
    report_axes,
    section_models,
    section_schemas,
    skipped_images,
    tags,
)
from .data import DataError, Pools, make_splits
from .datasets import list_datasets, load_pools
from .models import WeightsNotFound, create_model, list_models
from .resources import gpu_hours
from .sections import BRANCH_KEYS, COST_METRICS, METRICS, data_fidelity, final_epochs, settings_only, shortened
from .smoke import smoke
from .spec_rules import check


def exportable(model_dir):  # noqa: ANN001, ANN201  (a final model and an example input, for MLflow's registry)
    from .export import exportable as _exportable

    return _exportable(model_dir)


def log_model(model_dir, name, params):  # noqa: ANN001, ANN201  (MLflow's model format, torch lazily)
    from .export import log_model as _log_model

    return _log_model(model_dir, name, params)


def explain(model_dir, pools, data, n, split="test", splits=None):  # noqa: ANN001, ANN201  (grad-cam lazily)
    from .explaining import explain as _explain

    return _explain(model_dir, pools, data, n, split, splits=splits)


# Names whose modules import torch, loaded on first use: checking a spec, refusing bad input and --help
# never import torch (PEP 562). No module here is named like a function of this face (importing a submodule
# binds its name on the package).
_LAZY = {
    "fit": "engine",
    "eval_set": "final",
    "reevaluate": "final",
    "probe": "probing",
    "probe_shape": "probing",
}


def __getattr__(name: str):  # noqa: ANN202
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_trainable(spec, pools, flatten=None, limits=None):  # noqa: ANN001, ANN201  (thin re-export; Ray lazily)
    from .ray_adapter import make_trainable as _make

    return _make(spec, pools, flatten, limits)


def make_final_trainable(spec, pools, out_dir, ends_by=None):  # noqa: ANN001, ANN201
    from .ray_adapter import make_final_trainable as _make

    return _make(spec, pools, out_dir, ends_by)


__all__ = [
    "BRANCH_KEYS",
    "METRICS",
    "COST_METRICS",
    "USER_ERRORS",
    "DataError",
    "Pools",
    "WeightsNotFound",
    "apply_config",
    "check",
    "checkpoint_conflict",
    "create_model",
    "data_fidelity",
    "data_summary",
    "final_epochs",
    "settings_only",
    "shortened",
    "dataset_info",
    "describe",
    "eval_set",
    "explain",
    "exportable",
    "log_model",
    "fit",
    "gpu_hours",
    "infeasible",
    "list_datasets",
    "list_models",
    "load_pools",
    "make_final_trainable",
    "make_splits",
    "make_trainable",
    "node_paths",
    "oom_reason",
    "prepare",
    "probe",
    "probe_shape",
    "reevaluate",
    "report_axes",
    "section_models",
    "section_schemas",
    "skipped_images",
    "smoke",
    "tags",
]
