"""A search space's values, typed: each distribution a model (``{loguniform: [a, b]}`` is ``Loguniform`` with a
range's arguments by name and their rules, ``RANGES``), told apart by its one key; which searcher takes which
(``SUPPORTED``); a branch (a key without a dot: options that each set several keys) a model too. A distribution
is checked against the type of the key it searches, given as validation context (``check_distribution``)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, TypeVar, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictInt,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    create_model,
    model_validator,
)
from pydantic.json_schema import JsonDict
from pydantic_core import PydanticCustomError
from typing_extensions import Self

from ._schema import NAME_RE, RULE, coerce, did_you_mean, is_numeric, rule

_ABOVE_0: JsonDict = {"exclusiveMinimum": 0}  # for the JSON Schema; the validators below state it in resolve's words
_SHAPE = "distribution_shape"  # a range's arguments are not a list of its length: "takes [low, high]"


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):  # YAML's true is no bound
        raise PydanticCustomError(_SHAPE, "a number, not true/false")
    return value


# A bound as written: 16 stays an integer (a quantized range over an integer key draws integers), "1e-3" (PyYAML
# reads an exponent without a dot as text) is a number.
Number = Annotated[StrictInt | float, BeforeValidator(_no_bool), WithJsonSchema({"type": "number"})]


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

    low: Number
    high: Number

    @model_validator(mode="before")
    @classmethod
    def _by_position(cls, data: Any) -> Any:
        """A spec lists the arguments ([low, high, q]); a list of another length or anything else is refused."""
        if not isinstance(data, list) or len(data) != len(cls.model_fields):
            raise PydanticCustomError(_SHAPE, "takes {what}", {"what": cls.WHAT})
        return dict(zip(cls.model_fields, data, strict=True))

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if not self.low <= self.high:
            raise rule("low", f"low <= high must hold, got low={_n(self.low)}, high={_n(self.high)}")
        return self


class _QRange(_Range):
    WHAT: ClassVar[str] = "[low, high, q]"

    q: Number = Field(json_schema_extra=_ABOVE_0)

    @model_validator(mode="after")
    def _q(self) -> Self:
        _step(self.q)
        return self


class _LogRange(_Range):
    WHAT: ClassVar[str] = "[low, high], low > 0"

    low: Number = Field(json_schema_extra=_ABOVE_0)
    high: Number = Field(json_schema_extra=_ABOVE_0)

    @model_validator(mode="after")
    def _above_0(self) -> Self:
        if not self.low > 0:
            raise rule("low", f"a log range must lie above 0, got low={_n(self.low)}, high={_n(self.high)}")
        return self


class _QLogRange(_LogRange):
    WHAT: ClassVar[str] = "[low, high, q], low > 0"

    q: Number = Field(json_schema_extra=_ABOVE_0)

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
_VALUES = {
    "grid": "a list of values, each tried (crossed with the other grids)",
    "choice": "a list of values, one sampled per trial",
}
# name -> (number of arguments or None for a list of values, what the arguments are)
DISTRIBUTIONS: dict[str, tuple[int | None, str]] = {
    **{kind: (None, what) for kind, what in _VALUES.items()},
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


class _OneKey(BaseModel):
    """A mapping of one key, its kind, to what that kind takes: each kind a subclass with that one field."""

    model_config = ConfigDict(extra="forbid")
    KIND: ClassVar[str]


_M = TypeVar("_M", bound=_OneKey)


def _one_key_model(base: type[_M], name: str, kind: str, field: Any, doc: str) -> type[_M]:
    model = create_model(name, __base__=base, __doc__=doc, **{kind: field})
    model.KIND = kind
    return model


def _one_key(value: Any) -> str | None:
    """The discriminator: the kind of a one-key mapping."""
    return str(next(iter(value))) if isinstance(value, dict) and len(value) == 1 else None


def _tagged(models: dict[str, type[BaseModel]]) -> TypeAdapter[Any]:
    """One of ``models``, chosen by the value's one key (each model's name for it)."""
    union: Any = Union[tuple(Annotated[m, Tag(k)] for k, m in models.items())]  # noqa: UP007  (a run-time list)
    return TypeAdapter(Annotated[union, Discriminator(_one_key)])


def _stated(err: ValidationError) -> Any:
    """The error to state: a broken rule (its own line) before what pydantic found."""
    errors = err.errors()
    return next((e for e in errors if e["type"] == RULE), errors[0])


class _Distribution(_OneKey):
    """One searched key's distribution: a mapping of one kind to its arguments (each kind a subclass, ``KINDS``).
    Validation context: ``algorithm`` (the searcher, which takes some kinds only) and ``type`` (the searched key's:
    what a grid's or choice's values must be, which ranges it takes)."""

    @property
    def args(self) -> list[Any]:
        """The arguments as a spec writes them: the values, or the range's [low, high(, q)]."""
        value = getattr(self, self.KIND)
        return list(value) if isinstance(value, list) else [getattr(value, f) for f in type(value).model_fields]

    @model_validator(mode="before")
    @classmethod
    def _supported(cls, data: Any, info: ValidationInfo) -> Any:
        algorithm = (info.context or {}).get("algorithm")
        if algorithm is not None and cls.KIND not in SUPPORTED[algorithm]:
            raise rule(
                cls.KIND,
                f"{cls.KIND} is not supported by search.algorithm={algorithm}; allowed with "
                f"{algorithm}: {', '.join(SUPPORTED[algorithm])}",
            )
        return data

    @model_validator(mode="after")
    def _fits_the_key(self, info: ValidationInfo) -> Self:
        typ, kind = (info.context or {}).get("type", Any), self.KIND
        if kind in _VALUES:
            try:
                setattr(self, kind, [coerce(v, typ) for v in self.args])
            except TypeError:
                raise rule(kind, f"{kind} values must fit the key's type, got {self.args!r}") from None
            return self
        if typ is int and kind not in INT_DRAWS:
            raise rule(kind, f"the key is an integer; use randint, qrandint, choice or grid, not {kind}")
        if typ is int and kind in ("quniform", "qloguniform") and not float(self.args[2]).is_integer():
            raise rule(kind, f"the key is an integer; q must be whole, got q={self.args[2]}")
        if not is_numeric(typ):
            raise rule(kind, f"{kind} gives numbers but the key is not numeric; use choice or grid")
        return self


KINDS: dict[str, type[_Distribution]] = {
    kind: _one_key_model(
        _Distribution,
        kind.title(),
        kind,
        (list[Any], Field(min_length=1)) if kind in _VALUES else (RANGES[kind], ...),
        DISTRIBUTIONS[kind][1],
    )
    for kind in DISTRIBUTIONS
}
_DISTRIBUTION = _tagged(dict(KINDS))


def check_distribution(dist: Any, typ: Any, algorithm: str) -> dict[str, list[Any]]:
    """One distribution, checked against the searched key's type and the searcher; returned normalised (a
    grid's values as the key's type). A broken rule raises ValueError with its line."""
    try:
        parsed = _DISTRIBUTION.validate_python(dist, context={"type": typ, "algorithm": algorithm})
    except ValidationError as err:
        raise ValueError(_distribution_error(err, dist)) from None
    return {parsed.KIND: parsed.args}


def _distribution_error(err: ValidationError, dist: Any) -> str:
    first = _stated(err)
    if first["type"] == RULE:
        return str((first.get("ctx") or {})["message"])
    if first["type"] == "union_tag_not_found":
        return f"expected one of {{{', '.join(DISTRIBUTIONS)}}}: [...], got {dist!r}"
    ((kind, args),) = dist.items()
    if first["type"] == "union_tag_invalid":
        return f"unknown distribution {kind!r}; allowed: {', '.join(DISTRIBUTIONS)}{did_you_mean(str(kind), DISTRIBUTIONS)}"
    what = DISTRIBUTIONS[kind][1]
    return f"{kind} takes {'integers' if kind in INT_ONLY and first['type'] != _SHAPE else what}, got {args!r}"


# --------------------------------------------------------------------------- branches (conditional sub-spaces)

# A branch's option: dotted keys to values or distributions, and an optional name (its label).
Option = Annotated[dict[str, Any], Field(min_length=1)]


def option_label(option: dict[str, Any], i: int) -> str:
    return str(option.get("name", i))


def is_distribution(v: Any) -> bool:
    return _one_key(v) in DISTRIBUTIONS


def option_parts(option: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, list[Any]]]]:
    """(constants, distributions) of one branch option."""
    consts = {k: v for k, v in option.items() if k != "name" and not is_distribution(v)}
    dists = {k: v for k, v in option.items() if k != "name" and is_distribution(v)}
    return consts, dists


class _Branch(_OneKey):
    """A key without a dot: ``{grid|choice: [option, ...]}``. Validation context: ``algorithm``, ``scheduler`` and
    ``space`` (the spec's other searched keys, which no option may set again)."""

    @property
    def options(self) -> list[dict[str, Any]]:
        return list(getattr(self, self.KIND))

    @model_validator(mode="before")
    @classmethod
    def _supported(cls, data: Any, info: ValidationInfo) -> Any:
        context = info.context or {}
        if cls.KIND not in branch_kinds(context.get("algorithm")):
            raise PydanticCustomError("branch_kind", "not taken by this searcher")
        if context.get("scheduler") == "pbt":
            raise rule("", "pbt perturbs one flat space; conditional branches need another scheduler")
        return data

    @model_validator(mode="after")
    def _options(self, info: ValidationInfo) -> Self:
        context, kind = info.context or {}, self.KIND
        labels: list[str] = []
        for i, option in enumerate(self.options):
            at = f"{kind}[{i}]"
            label = option_label(option, i)
            if not NAME_RE.match(label) or label in labels:
                raise rule(f"{at}.name", f"a unique label of letters, digits, '.', '_', '-', got {label!r}")
            labels.append(label)
            consts, drawn = option_parts(option)
            if context.get("algorithm") != "grid" and kind == "choice" and any("grid" in d for d in drawn.values()):
                raise rule(at, "grid inside a choice branch would cross only that option; use choice")
            for key in option:
                if key in (context.get("space") or {}):
                    raise rule(f"{at}.{key}", "is also searched outside the branch; set it in one place")
            for key in consts:
                if "." not in str(key):
                    raise rule(f"{at}.{key}", "option keys are dotted paths into data, model or train")
        return self


def branch_kinds(algorithm: str | None) -> tuple[str, ...]:
    """A branch's kinds a searcher takes: Optuna and BOHB sample an option; they cannot cross a grid of them."""
    return ("choice",) if algorithm in ("optuna", "nsga2", "bohb") else ("grid", "choice")


_BRANCHES = {
    kind: _one_key_model(
        _Branch,
        f"{kind.title()}Branch",
        kind,
        (list[Option], Field(min_length=1)),
        f"a {kind} over options, each a mapping of dotted keys to values or distributions",
    )
    for kind in ("grid", "choice")
}
_BRANCH = _tagged(dict(_BRANCHES))


class BranchError(ValueError):
    """A broken branch rule: ``where`` is the path inside the branch (``choice[1].name``, or empty), ``message``
    its line."""

    def __init__(self, where: str, message: str) -> None:
        self.where, self.message = where, message
        super().__init__(message)


def check_branch(dist: Any, algorithm: str, scheduler: str, space: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """A branch's kind and options, checked (its options one by one as the whole spec: ``_spec``); raises
    BranchError."""
    try:
        parsed = _BRANCH.validate_python(dist, context={"algorithm": algorithm, "scheduler": scheduler, "space": space})
    except ValidationError as err:
        raise _branch_error(err, dist, algorithm) from None
    return parsed.KIND, parsed.options


def _branch_error(err: ValidationError, dist: Any, algorithm: str) -> BranchError:
    first = _stated(err)
    if first["type"] == RULE:
        ctx = first.get("ctx") or {}
        return BranchError(str(ctx["key"]), str(ctx["message"]))
    loc = first["loc"]
    if len(loc) == 3 and isinstance(loc[2], int):  # (tag, kind, i): that option is no non-empty mapping
        kind, i = str(loc[1]), loc[2]
        return BranchError(
            f"{kind}[{i}]",
            f"an option is a mapping of dotted keys to values or distributions, got {dist[kind][i]!r}",
        )
    return BranchError(
        "",
        f"a key without a dot is a branch: {' or '.join(branch_kinds(algorithm))} over a list of options, "
        f"each a mapping of dotted keys to values or distributions (with search.algorithm={algorithm})",
    )
