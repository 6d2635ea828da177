"""What runs inside one trial: data, models, the training engine and metrics.

Nothing here imports Ray except ``ray_adapter``; the backend functions below are what the
orchestration package (``search``) calls.
"""

from ._backend import apply_config, check, checkpoint_conflict, describe, infeasible, prepare, section_schemas
from .data import DataError, Pools, list_datasets, load_pools, make_splits
from .engine import fit
from .final import reevaluate


def explain(model_dir, pools, data, n, split="test"):  # noqa: ANN001, ANN201  (imports grad-cam lazily)
    from .explain import explain as _explain

    return _explain(model_dir, pools, data, n, split)
from .models import WeightsNotFound, create_model, list_models

# Errors caused by the user's input (missing data, missing weights): reported in one line, exit 2.
USER_ERRORS = (DataError, WeightsNotFound)


def make_trainable(spec, pools, flatten=None):  # noqa: ANN001, ANN201  (thin re-export; imports Ray lazily)
    from .ray_adapter import make_trainable as _make

    return _make(spec, pools, flatten)


def make_final_trainable(spec, pools, out_dir):  # noqa: ANN001, ANN201
    from .ray_adapter import make_final_trainable as _make

    return _make(spec, pools, out_dir)


__all__ = ["USER_ERRORS", "DataError", "explain", "Pools", "WeightsNotFound", "apply_config", "check", "checkpoint_conflict", "describe", "create_model", "fit", "infeasible", "list_datasets", "list_models", "load_pools",
           "make_final_trainable", "make_splits", "make_trainable", "prepare", "reevaluate", "section_schemas"]
