"""What the orchestration layer asks of trainables, without Ray: schemas, checks, data loading.

``search`` treats the ``data``, ``model`` and ``train`` sections as opaque apart from these calls.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field
from pydantic import create_model as section_model

from .data import NATIVE, NOT_SEARCHABLE, DataError, Pools, make_splits
from .datasets import list_datasets, load_pools
from .folders import tree_summary
from .images import ImageFiles
from .models import PREFIXES, WeightsNotFound, check_model, list_models, model_section
from .sections import (
    Augment,
    Data,
    Final,
    FreeModel,
    ModelBase,
    Train,
    metric_problem,
    model_kwargs,
    scale_configured_schedule,
)

# Errors caused by the user's input (missing data, missing weights): reported in one line, exit 2.
USER_ERRORS = (DataError, WeightsNotFound)


def _data_section() -> type[BaseModel]:
    """The data section with the registered datasets as ``data.dataset``'s allowed values (those registered now)."""
    return _data_section_of(tuple(list_datasets()))


@functools.cache
def _data_section_of(datasets: tuple[str, ...]) -> type[BaseModel]:
    names: Any = Literal.__getitem__(datasets)  # a Literal made at run time
    given = Data.model_fields["dataset"]
    dataset = Field(None, description=given.description, examples=given.examples)
    return section_model("Data", __base__=Data, __doc__=Data.__doc__, dataset=(names | None, dataset))


def section_schemas(spec: dict[str, Any]) -> dict[str, type[BaseModel] | None]:
    """The models of the sections trainables owns, for this spec's model."""
    name = (spec.get("model") or {}).get("name")
    model: type[BaseModel]
    if isinstance(name, str) and name.startswith(PREFIXES):
        model = FreeModel  # its own keys, then any timm/torchvision keyword argument (the library's to refuse)
    else:
        model = (model_section(name) if isinstance(name, str) else None) or ModelBase
    return {"data": _data_section(), "data.augment": Augment, "model": model, "train": Train, "final": Final}


# The model spaces/README.md's key reference shows in full (paper 003's ViT); the others' keys are tables.
EXAMPLE_MODEL = "vit"


def section_models() -> dict[str, Any]:
    """Every model of the trial side's sections, for the spec's JSON Schema: ``model`` is the list of each
    registered model's section (EXAMPLE_MODEL's first) and the free-form timm/tv one (``name`` tells them apart);
    ``not_searchable``: the
    dotted keys a space may not name."""
    names = sorted((n for n in list_models() if not n.startswith(PREFIXES)), key=lambda n: n != EXAMPLE_MODEL)
    models = [model_section(name) for name in names]
    return {
        "data": _data_section(),
        "model": [*models, FreeModel],
        "train": Train,
        "final": Final,
        "not_searchable": [f"data.{key}" for key in NOT_SEARCHABLE],
    }


# Train keys whose value shapes saved state: a checkpoint of another value cannot be loaded into it.
_STATE_SHAPING = {
    "train.optimizer": "it changes the optimizer's state (adamw's moment estimates, sgd's momentum buffers)",
    "train.schedule": "it changes the schedule's saved state",
    "train.loss": "it changes the classifier head (one logit for bce, one per class for ce)",
    "data.image_size": "it changes the input size, and with it the shapes of position embeddings",
}


def checkpoint_conflict(key: str) -> str | None:
    """Why a trial resumed from a checkpoint saved under another value of ``key`` (a PBT exploit) would not
    fit it; None = it would."""
    if key.startswith("model."):
        return "it changes the model (its layers and their shapes)"
    return _STATE_SHAPING.get(key)


def model_args(spec: dict[str, Any]) -> dict[str, Any]:
    side, chans = NATIVE.get(spec["data"]["dataset"], (None, 3))
    return {
        "image_size": spec["data"].get("image_size") or side,
        "in_chans": chans,
        "num_classes": spec["data"].get("num_classes", 10),
    }


def infeasible(spec: dict[str, Any]) -> str | None:
    """Why the model cannot be built with this configuration (None = it can); cheap, builds nothing."""
    m = spec["model"]
    args = model_kwargs(m)
    info = model_args(spec)
    if info["image_size"] is None:  # imagefolder without image_size: size unknown until data load
        return None
    return check_model(m["name"], **info, **args)


def prepare(spec: dict[str, Any]) -> Pools:
    """Load the dataset once (in the driver); trials receive it through the object store."""
    pools = load_pools(spec["data"])
    problem = metric_problem((spec.get("experiment") or {}).get("metric"), pools.num_classes)
    if problem:  # an image folder's class count is known only now (check() catches the built-in sets)
        raise DataError(f"experiment.metric: {problem} ({pools.name})")
    return pools


def describe(pools: Pools, data: dict[str, Any] | None = None) -> str:
    """One line on what the trials will read and where it lives; with the spec's ``data`` section, the sizes of
    the splits as the trials use them (a test split held out of the train pool counted as test, not train)."""
    x = pools.train_x
    n_test = 0 if pools.test_x is None else len(pools.test_x)
    sizes = f"{len(x):,} train/val + {n_test:,} test images"
    if data is not None:
        s = make_splits(pools, data)
        held = " (held out of the train pool)" if s.test_from_train else ""
        sizes = f"{len(s.train):,} train + {len(s.val):,} val + {len(s.test):,} test images{held}"
    shape = "x".join(str(v) for v in x.shape[1:])
    gb = (x.nbytes + (0 if pools.test_x is None else pools.test_x.nbytes)) / 2**30
    where = (
        f"streamed from disk (decoded it would take {gb:.2f} GB; see data.storage)"
        if pools.streamed
        else f"decoded in memory, {gb:.2f} GB, one copy shared by all trials"
    )
    classes = f"{pools.num_classes} classes" + (f" (positive: {pools.classes[1]})" if pools.num_classes == 2 else "")
    return f"{pools.name}, {sizes}, {classes}, {shape}, {where}{_skipped(pools)}"


def _skipped(pools: Pools, shown: int = 3) -> str:
    """The unreadable files left out, the first few by path (all of them: ``skipped_images``)."""
    if not pools.skipped:
        return ""
    more = f", … {len(pools.skipped) - shown} more" if len(pools.skipped) > shown else ""
    return (
        f"; skipped {len(pools.skipped)} unreadable image(s) ({pools.test_skipped} test): "
        f"{', '.join(pools.skipped[:shown])}{more}"
    )


def skipped_images(pools: Pools) -> list[str]:
    """Paths of the image files that could not be read and were left out (``data.on_bad_image: skip``)."""
    return list(pools.skipped)


def node_paths(spec: dict[str, Any], pools: Pools) -> list[str]:
    """A streamed set's root, which each trial reads on its own node; a set in memory is in the object store."""
    if not pools.streamed:
        return []
    return [str(Path(spec["data"]["root"]).expanduser().resolve())]  # as list_tree resolves it


def data_summary(spec: dict[str, Any]) -> list[str]:
    """Lines on the data a study would read, from listing files only (``--dry-run``); DataError when bad."""
    return tree_summary(spec["data"])


def dataset_info(spec: dict[str, Any], pools: Pools) -> dict[str, Any]:
    """The data set as tracking records it: name, source, a content digest, images per split, classes."""
    data = spec["data"]
    splits = make_splits(pools, data)
    counts = {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)}
    h = hashlib.sha256(json.dumps([pools.classes, counts, list(pools.train_x.shape)]).encode())
    for x, y in ((pools.train_x, pools.train_y), (pools.test_x, pools.test_y)):
        if x is None:
            continue
        h.update(np.ascontiguousarray(y).tobytes())
        if isinstance(x, ImageFiles):
            h.update("\n".join(x.paths).encode())
        else:  # every image of a small set, an evenly spaced 10,000 of a large one: a digest in well under a second
            h.update(np.ascontiguousarray(x[:: max(1, len(x) // 10_000)]).tobytes())
    return {
        "name": pools.name,
        "source": data.get("root") or data["dataset"],
        "local": bool(data.get("root")),
        "digest": h.hexdigest()[:12],
        "counts": counts,
        "classes": list(pools.classes),
        "image_shape": [int(v) for v in pools.train_x.shape[1:]],
    }


def apply_config(spec: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """A copy of a raw or resolved spec with the dotted-key values set, typed like the keys they replace.

    Keys without a dot (branch labels) are skipped. A different ``model.name`` (a branch choosing the
    family) starts a fresh model section, keeping ``freeze``: one family's arguments mean nothing to
    another, and the builder's defaults fill the rest.
    """
    out = copy.deepcopy(spec)
    model = out.get("model") or {}
    name = config.get("model.name")
    if name is not None and name != model.get("name"):
        out["model"] = {k: v for k, v in model.items() if k == "freeze"}
    schemas = section_schemas({**out, "model": {"name": name or model.get("name")}})
    for key, value in config.items():
        if "." not in key:
            continue
        parent, _, leaf = key.rpartition(".")
        node = out
        for part in parent.split("."):
            if not isinstance(node.get(part), dict):  # a raw spec may leave a section out
                node[part] = {}
            node = node[part]
        section = schemas.get(parent)
        field = section.model_fields.get(leaf) if section else None
        typ = field.annotation if field else None
        if typ in (int, int | None) and isinstance(value, float):
            value = int(round(value))  # PBT perturbs by factors (1.2, 0.8); integer keys stay integers
        elif typ in (float, float | None) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        node[leaf] = value
    if isinstance(out.get("train"), dict):
        scale_configured_schedule(out["train"], config)
    return out


def oom_reason(spec: dict[str, Any], values: dict[str, Any] | None = None, host: bool = True) -> str:
    """Why a trial ran out of memory, naming its model and sizes and what to lower. ``values``: the trial's
    dotted-key values over ``spec``; ``host``: Ray's memory monitor killed it for the node's memory (else
    the GPU's ran out)."""
    s = apply_config(spec, values) if values else spec
    what = "host memory (Ray's memory monitor killed the trial)" if host else "memory"
    return (
        f"out of {what} at batch_size={s['train']['batch_size']}, model={s['model']['name']}, "
        f"image_size={s['data'].get('image_size')}: lower train.batch_size or data.image_size"
    )


def tags(spec: dict[str, Any]) -> dict[str, str]:
    """Labels of a study for tracking and reports."""
    return {"model": str(spec["model"].get("name")), "dataset": str(spec["data"]["dataset"])}


def report_axes(spec: dict[str, Any]) -> dict[str, list[Any]]:
    """What a cross-study report plots against (tune-compare's data efficiency): each axis's key, which a search
    may vary, and its value in ``spec``."""
    return {
        "model": ["model.name", str(spec["model"].get("name"))],
        "fraction": ["data.train_fraction", float(spec["data"]["train_fraction"])],
        "seed": ["train.seed", int(spec["train"]["seed"])],
    }
