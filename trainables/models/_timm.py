"""Any timm model as ``timm/<name>``; pretrained weights from the local caches or a file, never the network."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from ._weights import WeightsNotFound


def _cached_weights(name: str) -> str | None:
    """Path of ``name``'s default pretrained weights in the local HF or torch.hub cache, if there."""
    import torch
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        for fname in filter(None, (cfg.hf_hub_filename, "model.safetensors", "pytorch_model.bin")):
            hit = try_to_load_from_cache(cfg.hf_hub_id, fname)
            if isinstance(hit, str):
                return hit
    if cfg.url:
        url = cfg.url if isinstance(cfg.url, str) else cfg.url[0]  # timm also allows (url, file name)
        hub_file = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        if hub_file.is_file():
            return str(hub_file)
    return None


def _takes_img_size(name: str) -> bool:
    import inspect

    import timm

    entry = timm.models.get_arch_name(name)
    fn = timm.models.model_entrypoint(entry)
    module = inspect.getmodule(fn)
    # ViT-family builders pass **kwargs to a class whose __init__ has img_size.
    return any(
        "img_size" in inspect.signature(c.__init__).parameters
        for c in vars(module).values()
        if isinstance(c, type) and issubclass(c, nn.Module)
    )


def create_timm_model(
    name: str, *, num_classes: int, in_chans: int, image_size: int, pretrained: bool | str = False, **kwargs: Any
) -> nn.Module:
    import timm

    if not timm.is_model(name) and not timm.list_models(name):
        raise KeyError(f"timm has no model {name!r}")
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    native = cfg.input_size[-1] if cfg is not None and cfg.input_size else None
    if native and image_size != native and "img_size" not in kwargs and _takes_img_size(name):
        # Transformers fix their token grid at build time; timm resamples position embeddings to fit.
        kwargs["img_size"] = image_size
    if pretrained is False:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    if isinstance(pretrained, str):
        path = os.path.expanduser(pretrained)
        if not os.path.isfile(path):
            raise WeightsNotFound(f"model.pretrained: weight file {pretrained!r} does not exist")
    else:
        found = _cached_weights(name)
        if found is None:
            raise WeightsNotFound(
                f"model.pretrained=true: weights for timm/{name} are not in the local Hugging Face or torch.hub "
                f"cache; fetch them where there is internet (timm.create_model({name!r}, pretrained=True)) "
                "or set model.pretrained to a weight file"
            )
        path = found
    # Loading through timm's own path keeps its head/in_chans adaptation of the checkpoint.
    return timm.create_model(
        name,
        pretrained=True,
        pretrained_cfg_overlay=dict(file=path),
        num_classes=num_classes,
        in_chans=in_chans,
        **kwargs,
    )
