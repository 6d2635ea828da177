"""Models by registry name: ``create_model("vit", num_classes=10, in_chans=3, image_size=32, depth=6)``."""

from . import cnn, coins, fast_cnn, luna, resnet, vit  # noqa: F401  (register the built-in models)
from ._registry import (
    DATA_ARGS,
    PREFIXES,
    TIMM_PREFIX,
    TV_PREFIX,
    ModelConfigError,
    check_model,
    count_parameters,
    create_model,
    is_model,
    list_models,
    model_section,
    register_model,
)
from ._weights import WeightsNotFound

__all__ = [
    "DATA_ARGS",
    "PREFIXES",
    "TIMM_PREFIX",
    "TV_PREFIX",
    "ModelConfigError",
    "WeightsNotFound",
    "check_model",
    "count_parameters",
    "create_model",
    "is_model",
    "list_models",
    "model_section",
    "register_model",
]
