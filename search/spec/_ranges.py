"""The distributions a search space may use: a range's arguments typed with their rules (``RANGES``), what
each distribution takes (``DISTRIBUTIONS``), which searcher takes which (``SUPPORTED``), and the check of one
distribution against its key's type (``check_distribution``)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.json_schema import JsonDict
from typing_extensions import Self

from ._schema import RULE, SpecError, coerce, did_you_mean, is_numeric, rule

_ABOVE_0: JsonDict = {"exclusiveMinimum": 0}  # for the JSON Schema; the validators below state it in resolve's words


def _n(x: float) -> float | int:
    """A number as a spec would write it in a message (0, not 0.0: a model's float field made it a float)."""
    return int(x) if float(x).is_integer() and abs(x) < 1e15 else x


def _step(q: float) -> None:
    if not q > 0:
        raise rule("q", f"q > 0 must hold, got q={_n(q)}")


class _Range(BaseModel):
    """``uniform``'s arguments by name (a spec writes them as a list); its subclasses are the other ranges."""

    model_config = ConfigDict(extra="forbid")
    WHAT: ClassVar[str] = "[low, high]"

    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if not self.low <= self.high:
            raise rule("low", f"low <= high must hold, got low={_n(self.low)}, high={_n(self.high)}")
        return self


class _QRange(_Range):
    WHAT: ClassVar[str] = "[low, high, q]"

    q: float = Field(json_schema_extra=_ABOVE_0)

    @model_validator(mode="after")
    def _q(self) -> Self:
        _step(self.q)
        return self


class _LogRange(_Range):
    WHAT: ClassVar[str] = "[low, high], low > 0"

    low: float = Field(json_schema_extra=_ABOVE_0)
    high: float = Field(json_schema_extra=_ABOVE_0)

    @model_validator(mode="after")
    def _above_0(self) -> Self:
        if not self.low > 0:
            raise rule("low", f"a log range must lie above 0, got low={_n(self.low)}, high={_n(self.high)}")
        return self


class _QLogRange(_LogRange):
    WHAT: ClassVar[str] = "[low, high, q], low > 0"

    q: float = Field(json_schema_extra=_ABOVE_0)

    @model_validator(mode="after")
    def _q(self) -> Self:
        _step(self.q)
        return self


class _IntRange(_Range):
    WHAT: ClassVar[str] = "[low, high], integers, high included"

    low: int = Field(strict=True)  # 8.0 is no integer bound, as written
    high: int = Field(strict=True)


class _QIntRange(_IntRange):
    WHAT: ClassVar[str] = "[low, high, q], integers, high included"

    q: int = Field(strict=True, json_schema_extra=_ABOVE_0)

    @model_validator(mode="after")
    def _q(self) -> Self:
        _step(self.q)
        return self


# The ranges by name: their arguments (low, high[, q]) typed, with their rules.
RANGES: dict[str, type[_Range]] = {
    "uniform": _Range,
    "quniform": _QRange,
    "loguniform": _LogRange,
    "qloguniform": _QLogRange,
    "randint": _IntRange,
    "qrandint": _QIntRange,
}
# name -> (number of arguments or None for a list of values, what the arguments are)
DISTRIBUTIONS: dict[str, tuple[int | None, str]] = {
    "grid": (None, "a list of values, each tried (crossed with the other grids)"),
    "choice": (None, "a list of values, one sampled per trial"),
    **{kind: (len(model.model_fields), model.WHAT) for kind, model in RANGES.items()},
}
# What each searcher can take.
SUPPORTED: dict[str, tuple[str, ...]] = {
    "random": tuple(DISTRIBUTIONS),
    "grid": ("grid", "choice"),
    # Optuna drops the step of a quantized log range; refusing it beats silently ignoring q.
    "optuna": tuple(d for d in DISTRIBUTIONS if d not in ("grid", "qloguniform")),
    "nsga2": tuple(d for d in DISTRIBUTIONS if d not in ("grid", "qloguniform")),  # an Optuna sampler too
    "bohb": tuple(d for d in DISTRIBUTIONS if d != "grid"),
}
INT_ONLY = ("randint", "qrandint")
# The ranges an integer key takes: those that draw integers (a quantized one with a whole step).
INT_DRAWS = (*INT_ONLY, "quniform", "qloguniform")


def check_distribution(file: str, kp: str, dist: Any, typ: Any, algorithm: str) -> dict[str, list[Any]]:
    """Validate one distribution against the searched key's type and the searcher; return it normalised."""
    if not isinstance(dist, dict) or len(dist) != 1:
        raise SpecError(file, kp, f"expected one of {{{', '.join(DISTRIBUTIONS)}}}: [...], got {dist!r}")
    ((kind, args),) = dist.items()
    if kind not in DISTRIBUTIONS:
        raise SpecError(
            file,
            kp,
            f"unknown distribution {kind!r}; allowed: {', '.join(DISTRIBUTIONS)}"
            f"{did_you_mean(str(kind), DISTRIBUTIONS)}",
        )
    if kind not in SUPPORTED[algorithm]:
        raise SpecError(
            file,
            kp,
            f"{kind} is not supported by search.algorithm={algorithm}; allowed with "
            f"{algorithm}: {', '.join(SUPPORTED[algorithm])}",
        )
    nargs, what = DISTRIBUTIONS[kind]
    if not isinstance(args, list) or (nargs is None and not args) or (nargs is not None and len(args) != nargs):
        raise SpecError(file, kp, f"{kind} takes {what}, got {args!r}")
    if nargs is None:
        try:
            return {kind: [coerce(v, typ) for v in args]}
        except TypeError:
            raise SpecError(file, kp, f"{kind} values must fit the key's type, got {args!r}") from None
    nums = _range(file, kp, kind, args)
    if typ is int and kind not in INT_DRAWS:
        raise SpecError(file, kp, f"the key is an integer; use randint, qrandint, choice or grid, not {kind}")
    if typ is int and kind in ("quniform", "qloguniform") and not float(nums[2]).is_integer():
        raise SpecError(file, kp, f"the key is an integer; q must be whole, got q={nums[2]}")
    if not is_numeric(typ):
        raise SpecError(file, kp, f"{kind} gives numbers but the key is not numeric; use choice or grid")
    return {kind: nums}


def _range(file: str, kp: str, kind: str, args: list[Any]) -> list[Any]:
    """A range's arguments as numbers, as written (YAML reads ``1e-3`` as text), checked by its model."""
    model, what = RANGES[kind], DISTRIBUTIONS[kind][1]
    try:
        nums = [a if isinstance(a, (int, float)) and not isinstance(a, bool) else float(a) for a in args]
    except (TypeError, ValueError):
        raise SpecError(file, kp, f"{kind} takes {what}, got {args!r}") from None
    if any(isinstance(a, bool) for a in args):
        raise SpecError(file, kp, f"{kind} takes {what}, got {args!r}")
    try:
        model.model_validate(dict(zip(model.model_fields, nums, strict=True)))
    except ValidationError as err:
        for e in err.errors():
            if e["type"] == RULE:
                raise SpecError(file, kp, str((e.get("ctx") or {})["message"])) from None
        raise SpecError(file, kp, f"{kind} takes {'integers' if kind in INT_ONLY else what}, got {args!r}") from None
    return nums
