"""The contract between orchestration (``search``) and the trial side (``trainables``).

``search`` calls the trial side only through ``TrialSide``; the composition root (``cli._backend``)
passes the ``trainables`` package, which implements it as module-level names. A rule about the
``data``, ``model``, ``train`` or ``final`` sections (their keys, types, checks, how a trial's values
are set, how a smoke run shrinks them) lives behind this contract, never in ``search``.

``search`` reads these trial-side keys of a resolved spec, and no others:

- ``train.epochs`` (also when searched): a trial's length in epochs, the schedulers' time unit;
- ``final.seeds``, ``final.epochs``, ``final.after_search``, ``final.topk``: how many final models, how
  long, whether they follow the search, and which top-k accuracy the summary averages; it sets
  ``final.epochs`` and ``final.time_limit_s`` (each seed's training time) from a compute budget, and gives the
  final trainable the moment every seed's training must end by (``ends_by``: its study's deadline; a moment, not
  a spec key; seconds since the epoch, so a cluster's nodes keep their clocks NTP-synced);
- ``model.*`` keys only as opaque values: what a trial's MLflow params and best.yaml record.

The trial side reads ``experiment.metric``, ``experiment.mode`` and ``experiment.objectives`` (``{metric: mode}``,
the study's objectives when it has several): what a failed trial scores at its worst, and which cost it measures.

Of a trial's results, ``search`` reads the metrics in ``METRICS`` and ``COST_METRICS``, ``epoch`` (and
``data_epochs``), the flags ``infeasible``, ``diverged``, ``oom``, ``error``, ``out_of_time`` (a final seed that
found too little of its share of a wall-clock budget left when it could start, and did not train) with their
``reason``, and the strings ``device``, ``gpu_ids``, ``arithmetic`` (what it computed in: bf16 or fp32,
channels_last or not) and ``warning``: it records them, never interprets them.

``tune-compare`` reads no trial-side key by name: ``report_axes`` in study.json and final/metrics.json names them.
Of a final seed's folder, ``tune-compare`` reads ``metrics.json`` and ``predictions.npz`` (arrays ``labels``,
``pred``, ``probs`` and ``test_digest``, per test image, for the paired verdict).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel

Spec = dict[str, Any]


@runtime_checkable
class TrialSide(Protocol):
    """Everything the orchestration asks of the trial side."""

    #: Errors caused by the user's input (missing data, missing weights): one line, exit status 2.
    USER_ERRORS: tuple[type[Exception], ...]
    #: Metrics a trial reports, each with the direction that is better ("max" or "min").
    METRICS: dict[str, str]
    #: Metrics of a configuration's cost (parameters, FLOPs, latency), each with its better direction: a trial
    #: measures them once before its first epoch, as final models measure theirs, when the study's objectives name
    #: one or it has limits (``make_trainable``'s ``limits``), and reports them with every epoch.
    COST_METRICS: dict[str, str]
    #: Keys whose value decides which other keys exist (the model family): searched only by a branch, whose first
    #: option's value stands in when the spec leaves the key out; each with the advice its error line gives.
    BRANCH_KEYS: dict[str, str]

    # --- specs
    def section_schemas(self, raw: Spec) -> dict[str, type[BaseModel] | None]:
        """``{section path: pydantic model}`` for data, model (``raw``'s model's), train, final and sub-sections such
        as ``data.augment`` (None: free-form keys). A model's fields are its section's keys: type (a Literal: the
        allowed values), default, range (ge/gt/le/lt) and description; ``extra="forbid"``, or ``"allow"`` for a
        section that also takes keys it does not declare (a library model's keyword arguments). A rule is a
        validator raising ``PydanticCustomError("spec_rule", "{message}", {"key": key, "message": message})``:
        resolve states it as the one-line error naming ``<section>.<key>``. A ``field_validator`` states a rule of
        one key, which also binds every value a search space draws for it; a ``model_validator`` a rule across the
        section's keys, checked on the spec's values (a trial's drawn combination is the trial side's to judge)."""

    def section_models(self) -> dict[str, Any]:
        """The same models for the spec's JSON Schema: ``data``, ``train``, ``final``, and ``model`` as the list of
        every model's section (one per registered model and the free-form ones, told apart by ``name``; the first is the
        one spaces/README.md's key reference shows in full);
        ``not_searchable``: the dotted keys a space may not name."""

    def check(self, spec: Spec) -> list[tuple[str, str]]:
        """The trial side's rules across a resolved spec's sections (the model, the loss and the metric against the
        data set's classes, what a space may search): the first broken one as [(key path, message)], else []."""

    def apply_config(self, spec: Spec, values: dict[str, Any]) -> Spec:
        """A copy of a (raw or resolved) spec with dotted-key values set; keys without a dot are skipped."""

    def checkpoint_conflict(self, key: str) -> str | None:
        """Why a trial's checkpoint would not load once ``key`` is changed (a shape, the data), or None:
        PBT may perturb only keys with None."""

    def smoke(self, spec: Spec) -> Spec:
        """A copy of a resolved spec whose trial-side sections are shrunk to a run of about a minute."""

    def infeasible(self, spec: Spec) -> str | None:
        """Why this configuration cannot be built (None when it can); cheap, builds nothing."""

    def oom_reason(self, spec: Spec, values: dict[str, Any] | None = None, host: bool = True) -> str:
        """Why a trial of ``spec`` with the dotted-key ``values`` ran out of memory (``host``: Ray's memory
        monitor killed it), naming its model and sizes and what to lower."""

    def tags(self, spec: Spec) -> dict[str, str]:
        """Labels of a study for tracking and reports: ``model`` and ``dataset``."""

    def report_axes(self, spec: Spec) -> dict[str, list[Any]]:
        """``{axis: [key, value]}`` for the axes ``model``, ``fraction`` (of the training data) and ``seed``: the
        spec key a search may vary for each, and its value in ``spec``; study.json and final/metrics.json record
        it, and tune-compare reads trials.csv's columns by these keys."""

    # --- data and trials
    def prepare(self, spec: Spec) -> Any:
        """Load the data once, in the driver; trials receive it through Ray's object store."""

    def describe(self, pools: Any, data: dict[str, Any] | None = None) -> str:
        """One line on what the trials will read and where it lives; given the spec's ``data``, with the sizes of
        the train, validation and test splits as the trials use them."""

    def skipped_images(self, pools: Any) -> list[str]:
        """Paths of image files that could not be read and were left out of the data (none: [])."""

    def data_summary(self, spec: Spec) -> list[str]:
        """Lines on the data a study would read (``--dry-run``), from listing files only, nothing decoded;
        one of ``USER_ERRORS`` when the data is not there or not in the shape the dataset needs."""

    def node_paths(self, spec: Spec, pools: Any) -> list[str]:
        """Folders every trial reads from its own node (a streamed set's root); [] when the data travels in
        Ray's object store. On a multi-node cluster each node must see them."""

    def dataset_info(self, spec: Spec, pools: Any) -> dict[str, Any]:
        """The data set as tracking records it: name, source, digest, images per split, classes."""

    def make_trainable(
        self,
        spec: Spec,
        pools: Any,
        flatten: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] | None = None,
        limits: Callable[[dict[str, float]], str | None] | None = None,
    ) -> Any:
        """The Ray Tune trainable of a search trial (``flatten``: a conditional config as dotted keys). ``limits``:
        given a configuration's ``COST_METRICS``, why they break the study's hard limits, or None; a trial that
        breaks one reports ``infeasible`` with that reason and trains nothing. A trial reports every objective
        (``experiment.objectives``, else ``experiment.metric``) at its worst when it fails."""

    def make_final_trainable(self, spec: Spec, pools: Any, out_dir: str | None, ends_by: float | None = None) -> Any:
        """The Ray Tune trainable of a final model (config ``{"seed": int}``), writing ``out_dir/<seed>``;
        with ``out_dir`` None, returning that folder as its last result's checkpoint instead. ``ends_by``
        (seconds since the epoch): each seed's training ends by then, its schedule re-planned to."""

    def final_epochs(self, spec: Spec) -> int:
        """How many epochs a final model of ``spec`` trains (``final.epochs`` unset: the recipe's)."""

    def shortened(self, spec: Spec, epochs: int) -> Spec:
        """A copy of ``spec`` whose training lasts ``epochs`` epochs (fewer than ``train.epochs``) with the same
        schedule's shape (``search.epochs``: the search's trials)."""

    def settings_only(self, spec: Spec) -> Spec:
        """A copy of a spec a run recorded (a model folder's) without the keys that run set for itself."""

    def data_fidelity(self, spec: Spec, rungs: list[int], max_t: int) -> Spec:
        """A copy of ``spec`` whose trials train the epochs up to each scheduler rung on a growing share of the
        training split (rung / max_t, nested), and report it as ``data_fraction`` and, summed over the epochs so far,
        ``data_epochs`` (``scheduler.fidelity: data``): what an epoch budget counts."""

    def probe_shape(self, spec: Spec) -> str:
        """An opaque key: configurations with the same key cost the same per image (the probe measures one)."""

    def probe(self, spec: Spec, pools: Any) -> dict[str, Any]:
        """A short measured throughput probe of ``spec``'s configuration on this device: ``train_images_per_s``,
        ``eval_images_per_s``, ``epoch_s`` (one search epoch, validation included), ``final_epoch_s`` (one
        final-training epoch), ``test_s`` (evaluating the test split once), ``model``, ``device``, ``arithmetic``,
        ``batch_size``, ``image_size``."""

    def gpu_hours(self, seconds: float, gpu: float, on_gpu: bool = True) -> float:
        """GPU-hours of ``seconds`` of training holding a ``gpu`` share (the one rule for search and final)."""

    # --- saved models
    def log_model(self, model_dir: Path, name: str, params: dict[str, int | str]) -> str:
        """Log the final model of ``model_dir`` as MLflow model ``name`` (with ``params``) into MLflow's active
        run, with its input signature and the files that rebuild it; returns its model URI."""

    def eval_set(self, model_dir: Path, data: dict[str, Any], split: str, new_root: bool) -> tuple[Any, Any]:
        """(pools, splits) a saved model is re-checked on: a new ``data.root`` whole, else the spec's split."""

    def reevaluate(
        self,
        model_dir: Path,
        pools: Any,
        data: dict[str, Any],
        split: str = "test",
        splits: Any = None,
        tta: str | None = None,
    ) -> dict[str, Any]:
        """Metrics of a saved final model on ``split``; ``tta``: its test-time views (train.tta; None: those it was
        trained with)."""

    def explain(
        self, model_dir: Path, pools: Any, data: dict[str, Any], n: int, split: str = "test", splits: Any = None
    ) -> Path:
        """Grad-CAM / token maps of ``n`` images of ``split``; returns their folder."""
