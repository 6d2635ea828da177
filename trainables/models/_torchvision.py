"""Any torchvision classification model as ``tv/<name>`` (AlexNet and others timm lacks).

Pretrained weights come from the local torch.hub cache or a file, never the network; the last
``nn.Linear`` (the classifier in every torchvision classification model) is replaced for ``num_classes``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from ._weights import WeightsNotFound, load_state_dict


def last_linear(model: nn.Module) -> tuple[nn.Module, str, nn.Linear]:
    """(parent module, attribute name, layer) of the model's last ``nn.Linear``."""
    found = None
    for parent in model.modules():
        for attr, child in parent.named_children():
            if isinstance(child, nn.Linear):
                found = (parent, attr, child)
    if found is None:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier to replace")
    return found


def create_tv_model(
    name: str, *, num_classes: int, in_chans: int, image_size: int, pretrained: bool | str = False, **kwargs: Any
) -> nn.Module:
    import torch
    import torchvision

    if name not in torchvision.models.list_models(module=torchvision.models):
        raise KeyError(f"torchvision has no classification model {name!r}")
    if in_chans != 3:
        raise ValueError(f"tv/{name} takes 3-channel images, got in_chans={in_chans}")
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    if pretrained is not False:
        if isinstance(pretrained, str):
            state = load_state_dict(pretrained)
        else:
            weights = torchvision.models.get_model_weights(name).DEFAULT
            path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
            if not path.is_file():
                raise WeightsNotFound(
                    f"model.pretrained=true: weights for tv/{name} ({weights}) are not in the torch.hub cache at "
                    f"{path}; fetch them where there is internet (torchvision.models.get_model({name!r}, "
                    f"weights='DEFAULT')) or set model.pretrained to a weight file"
                )
            state = load_state_dict(path)
        model.load_state_dict(state)
    parent, attr, old = last_linear(model)
    setattr(parent, attr, nn.Linear(old.in_features, num_classes))
    return model
