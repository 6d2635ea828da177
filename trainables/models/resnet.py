"""ResNet-18 (torchvision) with a CIFAR stem (3x3 conv, stride 1, no max-pool) or the ImageNet stem.

Parameter counts with 10 classes: ImageNet stem 11,181,642 (paper 003's Table 4.1 figure),
CIFAR stem 11,173,962.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ._registry import register_model
from ._weights import WeightsNotFound, load_state_dict

if TYPE_CHECKING:
    import torch
    from torch import nn

# torchvision's file name for IMAGENET1K_V1; looked up in torch.hub's checkpoint cache.
_TV_FILE = "resnet18-f37072fd.pth"


def _check(*, pretrained: bool | str, in_chans: int, **_: object) -> str | None:
    if pretrained is not False and in_chans != 3:
        return f"pretrained weights need 3 input channels, got in_chans={in_chans}"
    return None


def _imagenet_weights(pretrained: bool | str) -> dict[str, torch.Tensor]:
    import torch

    if pretrained is True:
        path = Path(torch.hub.get_dir()) / "checkpoints" / _TV_FILE
        if not path.is_file():
            raise WeightsNotFound(
                f"model.pretrained=true: ImageNet weights for resnet18 are not in the local cache ({path}); "
                "download them where there is internet (torchvision.models.resnet18(weights='DEFAULT')) "
                "or set model.pretrained to a weight file"
            )
        return load_state_dict(path)
    return load_state_dict(str(pretrained))


@register_model("resnet18", check=_check)
def resnet18(
    *,
    num_classes: int,
    in_chans: int,
    image_size: int,
    stem: Literal["cifar", "imagenet"] = "cifar",
    pretrained: bool | str = False,
) -> nn.Module:
    """ResNet-18.

    Args:
        stem: cifar (3x3 conv, stride 1, no max-pool: for 32 px images) or imagenet (7x7 conv, stride 2, max-pool)
        pretrained: false (from scratch), true (torchvision's ImageNet weights from the cache) or a weight file's path
    """
    from torch import nn  # at build time only: a spec is checked without torch
    from torchvision.models import resnet18 as tv_resnet18

    model = tv_resnet18(weights=None, num_classes=1000 if pretrained is not False else num_classes)
    if pretrained is not False:
        missing, unexpected = model.load_state_dict(_imagenet_weights(pretrained), strict=False)
        if missing:
            raise WeightsNotFound(
                f"model.pretrained: weight file lacks {len(missing)} resnet18 tensors, e.g. {missing[0]!r}"
            )
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    if in_chans != 3 or stem == "cifar":
        # CIFAR stem keeps 32x32 inputs from shrinking to 1x1 before the last stage.
        k, s, p = (3, 1, 1) if stem == "cifar" else (7, 2, 3)
        model.conv1 = nn.Conv2d(in_chans, 64, k, s, p, bias=False)
    if stem == "cifar":
        model.maxpool = nn.Identity()
    return model
