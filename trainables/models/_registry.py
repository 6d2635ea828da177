"""Model registry in the style of timm: ``@register_model`` + ``create_model(name, ...)``.

Every builder takes the data-derived arguments ``num_classes``, ``in_chans`` and ``image_size``
as keywords, plus its own typed keyword arguments with defaults. Those defaults are the
schema the spec validator checks ``model.*`` keys against, so a builder's signature is the
single place its arguments are declared.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from pydantic import create_model as section_model

from ..sections import ModelBase

if TYPE_CHECKING:
    from torch import nn

# Arguments the data section supplies; a spec cannot set them under ``model``.
DATA_ARGS = ("num_classes", "in_chans", "image_size")


# Argument types for builders' signatures: a bound here is the bound of the spec's key (checked before a trial runs,
# shown by the JSON Schema), and ``check_model`` applies it to direct calls.
Count = Annotated[int, Field(ge=1)]  # a width, a depth, a number of heads or of layers
Whole = Annotated[int, Field(ge=0)]  # 0 allowed: padding, or a size where 0 means off
Rate = Annotated[float, Field(ge=0, lt=1)]  # a probability of dropping (dropout, stochastic depth)


class ModelConfigError(ValueError):
    """A model's arguments break one of its constraints (the configuration is infeasible)."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    check: Callable[..., str | None] | None
    defaults: dict[str, Any]
    types: dict[str, Any]


_MODELS: dict[str, ModelEntry] = {}
TIMM_PREFIX = "timm/"
TV_PREFIX = "tv/"
PREFIXES = (TIMM_PREFIX, TV_PREFIX)  # families whose arguments the library checks at build time


def register_model(
    name: str | None = None, *, check: Callable[..., str | None] | None = None
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register ``builder`` under ``name``; ``check(**args)`` returns why a config is infeasible."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or builder.__name__
        params = inspect.signature(builder).parameters
        defaults = {
            k: p.default for k, p in params.items() if k not in DATA_ARGS and p.default is not inspect.Parameter.empty
        }
        _MODELS[key] = ModelEntry(key, builder, check, defaults, {k: _hint(builder, params[k]) for k in defaults})
        return builder

    return wrap


def _hint(builder: Callable[..., Any], param: inspect.Parameter) -> Any:
    """An argument's type, its annotation evaluated alone: the return type names torch, which a spec's
    check does not import."""
    if param.annotation is inspect.Parameter.empty:
        return Any
    if isinstance(param.annotation, str):
        return eval(param.annotation, builder.__globals__)  # noqa: S307  (our own annotations)
    return param.annotation


def list_models() -> list[str]:
    return sorted(_MODELS) + [p + "<name>" for p in PREFIXES]


def is_model(name: str) -> bool:
    return name in _MODELS or any(name.startswith(p) and len(name) > len(p) for p in PREFIXES)


@functools.cache
def model_section(name: str) -> type[BaseModel] | None:
    """The ``model`` section of a registered model: ``name``, ``freeze`` and the builder's own arguments with their
    types, defaults and (from its docstring's ``Args:``) meanings; None for timm/tv models (free-form kwargs)."""
    entry = _MODELS.get(name)
    return None if entry is None else _section(entry)


def _section(entry: ModelEntry) -> type[BaseModel]:
    docs = _arg_docs(entry.builder.__doc__ or "")
    fields: dict[str, Any] = {
        k: (entry.types[k], Field(v, description=docs.get(k, f"{entry.name}'s {k}"))) for k, v in entry.defaults.items()
    }
    name: Any = Literal.__getitem__(entry.name)  # a Literal made at run time
    summary = (entry.builder.__doc__ or "").strip().splitlines()[:1] or [f"the model {entry.name}"]
    return section_model(
        f"model_{entry.name}",
        __base__=ModelBase,
        __doc__=summary[0],
        name=(name, Field(description=f"the model: {entry.name}")),
        **fields,
    )


def _arg_docs(doc: str) -> dict[str, str]:
    """``{arg: meaning}`` from a Google-style ``Args:`` block (one line an argument, continuation lines joined)."""
    out: dict[str, str] = {}
    lines = inspect.cleandoc(doc).splitlines()
    if "Args:" not in lines:
        return out
    last = ""
    for line in lines[lines.index("Args:") + 1 :]:
        if not line.strip():
            break
        head, sep, text = line.strip().partition(": ")
        if line.startswith("    ") and not line.startswith("      ") and sep and head.isidentifier():
            last = head
            out[head] = text.strip()
        elif last:
            out[last] += " " + line.strip()
    return out


def check_model(name: str, **kwargs: Any) -> str | None:
    """Why this configuration cannot be built (None when it can), without building it."""
    entry = _MODELS.get(name)
    if entry is None:
        return None
    args = {**entry.defaults, **kwargs}
    for key in entry.types:
        why = _argument_problem(entry, key, args[key])
        if why:
            return why
    return entry.check(**args) if entry.check is not None else None


def _argument_problem(entry: ModelEntry, key: str, value: Any) -> str | None:
    """What the signature's type of ``key`` says of ``value`` (its allowed values, its bounds). A spec's value was
    checked against the same type before (in the spec's words); this is for direct calls."""
    try:
        _adapter(entry.name, key).validate_python(value)
    except ValidationError as err:
        return f"{key}={value!r}: {err.errors()[0]['msg']}"
    return None


@functools.cache
def _adapter(model: str, key: str) -> TypeAdapter[Any]:
    return TypeAdapter(_MODELS[model].types[key])


def create_model(name: str, *, num_classes: int, in_chans: int, image_size: int, **kwargs: Any) -> nn.Module:
    """Build a registered model, any timm model as ``timm/<name>``, any torchvision one as ``tv/<name>``."""
    if name.startswith(TV_PREFIX):
        from ._torchvision import create_tv_model

        return create_tv_model(
            name[len(TV_PREFIX) :], num_classes=num_classes, in_chans=in_chans, image_size=image_size, **kwargs
        )
    if name.startswith(TIMM_PREFIX):
        from ._timm import create_timm_model

        return create_timm_model(
            name[len(TIMM_PREFIX) :], num_classes=num_classes, in_chans=in_chans, image_size=image_size, **kwargs
        )
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    reason = check_model(name, num_classes=num_classes, in_chans=in_chans, image_size=image_size, **kwargs)
    if reason:
        raise ModelConfigError(reason)
    return _MODELS[name].builder(num_classes=num_classes, in_chans=in_chans, image_size=image_size, **kwargs)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
