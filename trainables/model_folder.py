"""A final model's folder as files: ``save_model`` writes the weights, spec.yaml and meta.json, and the readers
rebuild the model from them; ``DamagedFile`` names a file there that does not hold what tune-run wrote.

Reading files users hand us without a traceback (bytes that are not UTF-8, broken JSON or YAML) is the
orchestration's rule: ``tune-eval`` reads a folder's spec.yaml and meta.json through it before the files reach
these readers, which check only what the files must hold.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml

from .data import DataError, Pools
from .device import resolve_device
from .engine import FitResult
from .models import create_model
from .recipe import head_outputs
from .sections import model_kwargs


class DamagedFile(DataError):
    """A file a saved model's folder holds is damaged; the message starts with its path."""

    names_file = True  # the CLI prints the message as is, without a file of its own in front

    def __init__(self, path: str | Path, message: str) -> None:
        super().__init__(f"{path}: {message}")


def save_model(
    res: FitResult, pools: Pools, spec: dict[str, Any], out_dir: Path, threshold: float | None = None
) -> None:
    from safetensors.torch import save_model as st_save

    st_save(res.model.cpu(), str(out_dir / "model.safetensors"))
    res.model.to(res.device)
    (out_dir / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    meta = {
        "classes": pools.classes,
        "mean": res.mean,
        "std": res.std,
        "image_size": res.image_size,
        "in_chans": pools.in_chans,
        "dataset": pools.name,
        "threshold": threshold,
        "positive_class": pools.classes[1] if pools.num_classes == 2 else None,
    }
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2))


# What a model folder's meta.json must hold (save_model writes it).
META_KEYS = {"classes": list, "mean": list, "std": list, "image_size": int, "in_chans": int}


def _mapping(data: Any, path: Path, keys: dict[str, type]) -> dict[str, Any]:
    """``data`` when it is a mapping whose ``keys`` hold their types; else DamagedFile naming the first that does not."""
    if not isinstance(data, dict):
        raise DamagedFile(path, f"expected a mapping, got {type(data).__name__}")
    for key, kind in keys.items():
        if not isinstance(data.get(key), kind):
            raise DamagedFile(path, f"{key}: missing or not a {kind.__name__}: not written by tune-run --final")
    return data


def read_meta(model_dir: Path) -> dict[str, Any]:
    """A model folder's meta.json (classes, normalisation, image size)."""
    path = model_dir / "meta.json"
    return _mapping(json.loads(path.read_text(encoding="utf-8")), path, META_KEYS)


def read_model_spec(model_dir: Path) -> dict[str, Any]:
    """A model folder's spec.yaml (the resolved spec it was trained with)."""
    path = model_dir / "spec.yaml"
    spec = _mapping(yaml.safe_load(path.read_text(encoding="utf-8")), path, {"model": dict, "train": dict})
    _mapping(spec["model"], path, {"name": str})
    return spec


def load_model(model_dir: Path, device: torch.device | None = None) -> tuple[torch.nn.Module, dict[str, Any], dict]:
    """Rebuild a final model from its folder (architecture from spec.yaml, weights from safetensors)."""
    from safetensors.torch import load_model as st_load

    spec, meta = read_model_spec(model_dir), read_meta(model_dir)
    name, m = spec["model"]["name"], model_kwargs(spec["model"])
    if "pretrained" in m:
        m["pretrained"] = False  # the saved weights replace the pretrained start
    model = create_model(
        name,
        num_classes=head_outputs(spec, len(meta["classes"])),
        in_chans=meta["in_chans"],
        image_size=meta["image_size"],
        **m,
    )
    try:
        st_load(model, str(model_dir / "model.safetensors"))
    except Exception as exc:  # safetensors' own error, or weights that do not fit spec.yaml's model
        raise DamagedFile(model_dir / "model.safetensors", f"cannot be loaded: {str(exc).splitlines()[0]}") from None
    device = device or resolve_device(spec["train"].get("device", "auto"))
    return model.to(device), spec, meta
