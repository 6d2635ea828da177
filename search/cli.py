"""``tune-run SPEC``: validate a study spec, then search it with Ray Tune (or preview it with --dry-run)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from ._contract import TrialSide
from .run._algorithms import first_points_line
from .run._summary import (
    EXIT_INTERRUPTED,
    budget_left,
    budget_summary,
    final_spent,
    final_summary,
    no_answer,
    study_summary,
    unmet_pick,
)
from .spec._files import dump_spec, read_json
from .spec._json_schema import key_reference, spec_schema
from .spec._keys import parse_override
from .spec._schema import SpecError
from .spec._space import as_searched, grid_points, preview_configs
from .spec._spec import load_spec, resolve
from .store import _storage as storage
from .store._atomic import EXIT_FAULT, StorageFull
from .store._paths import shown

EXIT_USAGE = 2


def _user_errors(backend: TrialSide) -> tuple[type[Exception], ...]:
    """What a command reports as one line and exit status 2: a spec error, or the trial side's user errors."""
    return (SpecError, *backend.USER_ERRORS)


def _backend() -> TrialSide:
    # The composition root: the only place ``search`` names the trial side.
    import trainables

    # A module is the implementation (tests/test_contract.py checks it has every function the contract names).
    return cast(TrialSide, trainables)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tune-run", description=__doc__)
    p.add_argument("spec", nargs="?", help="study spec (YAML), e.g. spaces/quickstart.yaml or runs/<study>/best.yaml")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a spec key, typed like the key (repeatable), e.g. --set train.epochs=5",
    )
    p.add_argument("--smoke", action="store_true", help="shrink the study to a run of about a minute")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="validate, print the resolved spec, grid size and rejected configurations; start nothing",
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted study")
    p.add_argument("--overwrite", action="store_true", help="replace an existing study of the same name")
    p.add_argument("--address", default=None, help="join this Ray cluster (default: $RAY_ADDRESS, else start one)")
    p.add_argument(
        "--final",
        action="store_true",
        help="train the spec's configuration on the full training data once per final.seeds and "
        "evaluate on the test split (typically with runs/<study>/best.yaml)",
    )
    p.add_argument(
        "--verbose", action="store_true", help="also show Ray Tune's trial tables and the trial processes' own output"
    )
    p.add_argument(
        "--budget",
        default=None,
        metavar="30m|2h|1.5gpu-h|400epochs",
        help="compute budget of the whole study, search and final training (sets search.budget)",
    )
    p.add_argument(
        "--estimate",
        action="store_true",
        help="measure the model's throughput on this device and print the study's cost and what fits "
        "the budget; start no study, write nothing",
    )
    p.add_argument(
        "--schema",
        nargs="?",
        const="json",
        choices=("json", "reference"),
        help="print the spec's JSON Schema (what spaces/tune-run.schema.json holds, for editors), or with "
        "'reference' the key reference of spaces/README.md made from it, and exit",
    )
    p.add_argument(
        "--pick",
        default=None,
        metavar="CONDITIONS",
        help="SPEC is a multi-objective study's folder (runs/<study>): write the spec of its best trial, by the "
        "first objective, among those meeting CONDITIONS (e.g. 'latency_ms<=5', joined by commas) as "
        "runs/<study>/pick-<conditions>.yaml, which --final trains and tests",
    )
    p.add_argument(
        "--sync-mlflow",
        action="store_true",
        help="SPEC is a study folder (runs/<study>): fill in the MLflow runs and metrics its tracking "
        "store missed (it was unreachable during the study); adds nothing twice",
    )
    return p


def dry_run(spec: dict[str, Any], backend: TrialSide) -> None:
    data_lines = backend.data_summary(spec)  # first: a bad data.root is the one line, not after the spec
    print(dump_spec(spec), end="")
    search = spec["search"]
    space = as_searched(spec["space"], search["algorithm"])  # count and preview what Tune will run
    n_grid = grid_points(space)
    for line in data_lines:
        print(f"# data: {line}")
    if search["num_samples"] is None:
        print(
            f"# grid points: {n_grid}; trials: sized from search.budget={search['budget']} at run time "
            f"({search['algorithm']} search; tune-run --estimate shows the plan)"
        )
    else:
        print(
            f"# grid points: {n_grid}; trials: {n_grid * search['num_samples']} "
            f"({search['algorithm']} search, num_samples={search['num_samples']})"
        )
    if search["recipe_first"]:
        print(f"# {first_points_line(spec)}")
    configs = preview_configs(space, search["num_samples"] or 1, search["seed"])
    rejected = []
    for cfg in configs:
        reason = backend.infeasible(backend.apply_config(spec, cfg))
        if reason:
            rejected.append((cfg, reason))
    sampled = any("grid" not in d for d in space.values())
    scope = f"of {len(configs)} previewed configurations" + (
        " (sampled keys drawn with search.seed)" if sampled else ""
    )
    print(f"# rejected by the model {scope}: {len(rejected)}")
    for cfg, reason in rejected[:50]:
        print(f"#   {cfg}: {reason}")
    if len(rejected) > 50:
        print(f"#   … and {len(rejected) - 50} more")


@dataclass
class _Phase:
    """What a tune-run command is doing, for its error lines: its overrides, and the command that goes on after
    a full disk stopped it (set as each phase starts)."""

    overrides: list[str] = field(default_factory=list)
    then: str = ""


def main(argv: Sequence[str] | None = None) -> int:
    started = time.monotonic()
    parser = build_parser()
    args = parser.parse_args(argv)
    backend = _backend()
    if args.schema:
        schema = spec_schema(backend)
        print(json.dumps(schema, indent=2) + "\n" if args.schema == "json" else key_reference(schema), end="")
        return 0
    if args.spec is None:
        parser.error("the following arguments are required: spec")
    phase = _Phase()
    try:
        return _run(args, backend, phase, started)
    except _user_errors(backend) as err:
        return _user_error("tune-run", args.spec, err)
    except KeyboardInterrupt:  # before the trials started (data loading): nothing to resume yet
        print("tune-run: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except StorageFull as err:  # a fault of the machine, not of the input: exit 1, and how to go on
        then = phase.then
        if then.endswith("--resume") and not err.started:  # no study to resume yet: the same command again
            then = _command(args, phase.overrides)
        print(f"tune-run: error: {err}; free space, then {then or 'run the same command again'}", file=sys.stderr)
        return EXIT_FAULT


def _run(args: argparse.Namespace, backend: TrialSide, phase: _Phase, started: float) -> int:
    """The command's work: --sync-mlflow, --pick, --estimate, --dry-run, --final, or a study (and its final
    training)."""
    if args.sync_mlflow:
        from .store._sync import sync_study

        sync_study(args.spec if storage.is_uri(args.spec) else Path(args.spec).resolve())
        return 0
    if args.pick is not None:
        from .run._pick import pick

        return pick(args.spec, args.pick, backend)
    # --budget is search.budget given last: it overrides the spec and any --set of it.
    phase.overrides = [*args.overrides, *([f"search.budget={args.budget}"] if args.budget is not None else [])]
    spec = load_spec(args.spec, backend, phase.overrides, smoke=args.smoke)
    if args.estimate:
        from .run._estimate import estimate

        estimate(spec, backend)
        return 0
    if args.dry_run:
        dry_run(spec, backend)
        return 0
    if args.final:
        return _final_only(args, spec, backend, phase)
    return _study(args, spec, backend, phase, started)


def _final_only(args: argparse.Namespace, spec: dict[str, Any], backend: TrialSide, phase: _Phase) -> int:
    """``--final``: train the spec's one configuration per seed and test it."""
    if spec["space"]:
        raise SpecError(
            args.spec,
            "space",
            "--final trains one configuration; give a spec without a space, such as runs/<study>/best.yaml",
        )
    from .run._console import new_study
    from .run._final import run_final

    new_study()  # a command is one study: its warnings shown once, as in a process of its own
    # --budget with --final sizes the final epochs to it (search.budget of a best.yaml does not: that was
    # the whole study's); like a study's, it counts from the first trial, after Ray and data start.
    budget = None
    if args.budget is not None:
        from .spec._budget import parse_budget

        b = parse_budget(args.budget, args.spec, "--budget")
        budget = {"budget": b.text, "available": b.amount}
    phase.then = _command(args, phase.overrides, "--final", "--overwrite")
    summary = run_final(
        spec,
        backend,
        file=args.spec,
        overwrite=args.overwrite,
        address=args.address,
        verbose=args.verbose,
        budget=budget,
    )
    return final_summary(summary, args.spec)


def _study(args: argparse.Namespace, spec: dict[str, Any], backend: TrialSide, phase: _Phase, started: float) -> int:
    """A study, then (``final.after_search``) final training of its best configuration."""
    from .run._runner import run_study

    phase.then = _command(args, phase.overrides, "--resume")
    result = run_study(
        spec,
        backend,
        file=args.spec,
        resume=args.resume,
        overwrite=args.overwrite,
        address=args.address,
        verbose=args.verbose,
        started=started,
    )
    study_summary(spec, result)
    if result.stalled:
        timeout = spec["search"]["stall_timeout_s"]
        print(
            f"tune-run: error: {args.spec}: search.stall_timeout_s: trials {', '.join(result.stalled)} were paused "
            f"with none running for {timeout:g} s (their scheduler did not resume them); what finished is in the "
            f"files above. Continue with: {_command(args, phase.overrides, '--resume')}",
            file=sys.stderr,
        )
        return 1
    if result.unfinished:
        print(
            f"\nInterrupted: {result.unfinished} trial(s) unfinished; what finished is in the files above. "
            f"Continue with: {_command(args, phase.overrides, '--resume')}"
        )
        return EXIT_INTERRUPTED
    if result.best is None:  # every trial failed, was infeasible, or reported nothing: the study has no answer
        if result.compute_budget:
            budget_summary(result.compute_budget)
        unmet = unmet_pick(spec, result)  # or its front is the answer, and no point of it meets the pick
        if unmet and not spec["final"]["after_search"]:
            print(f"\n{unmet}")
            return 0
        print(
            f"tune-run: error: {args.spec}: {unmet}" if unmet else no_answer(args.spec, spec, result), file=sys.stderr
        )
        return 1
    if not spec["final"]["after_search"]:
        if result.compute_budget:
            budget_summary(result.compute_budget)
        return 0
    from .run._final import run_final
    from .store._export import best_spec

    best = resolve(best_spec(spec, result.best_config, backend, result.parent_run_id), backend, file=args.spec)
    t0 = time.monotonic()
    best_file = shown(storage.join(result.location, "best.yaml"))
    phase.then = shlex.join(["tune-run", best_file, "--final", "--overwrite"])
    summary = run_final(
        best,
        backend,
        file=args.spec,
        overwrite=args.overwrite,
        verbose=args.verbose,
        address=args.address,
        study_file=storage.join(result.location, "study.json"),
        budget=budget_left(result),
    )
    status = final_summary(summary, best_file)
    if result.compute_budget:
        budget_summary(final_spent(spec, result, summary, time.monotonic() - t0))
    return status


def _command(args: argparse.Namespace, overrides: list[str], *extra: str) -> str:
    """This command line (spec, --set, --smoke) with ``extra`` flags: what continues or repeats it."""
    return shlex.join(
        [
            "tune-run",
            args.spec,
            *(x for o in overrides for x in ("--set", o)),
            *(["--smoke"] if args.smoke else []),
            *extra,
        ]
    )


def _user_error(prog: str, file: str, err: Exception) -> int:
    """Bad input (spec, data, weights): one line on stderr, exit status 2, no traceback."""
    where = "" if isinstance(err, SpecError) or getattr(err, "names_file", False) else f"{file}: "
    print(f"{prog}: error: {where}{storage.as_given(str(err))}", file=sys.stderr)  # a URI's file by its URI
    return EXIT_USAGE


def eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tune-eval", description="Evaluate a final model folder; prints JSON.")
    p.add_argument("model_dir", help="runs/<study>/final/<seed>")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override the model's spec, e.g. --set data.root=/data/cifar10 (new images), --set train.tta=flip "
        "(other test-time views)",
    )
    p.add_argument("--split", default="test", choices=("test", "val", "train"))
    p.add_argument(
        "--explain",
        type=int,
        default=0,
        metavar="N",
        help="also write Grad-CAM overlays (CNNs) / token attention maps (ViTs) for N images of the "
        "split into <model_dir>/explain/",
    )
    return p


def eval_main(argv: Sequence[str] | None = None) -> int:

    args = eval_parser().parse_args(argv)
    backend = _backend()
    spec_file = storage.join(args.model_dir, "spec.yaml")
    try:
        model_dir = storage.local_copy(args.model_dir)  # a model folder at a URI: downloaded first
        for name in ("spec.yaml", "meta.json", "model.safetensors"):
            if not (model_dir / name).is_file():
                raise SpecError(args.model_dir, "", f"not a final model folder (no {name})")
        spec = load_spec(spec_file, backend, args.overrides, recorded=True)
        # Damaged bytes end here, as one line naming the file; what meta.json must hold, the trial side checks.
        read_json(storage.join(args.model_dir, "meta.json"), "model's meta file")
        # New labelled images (--set data.root=DIR) are checked whole, without the training data.
        new_root = any(parse_override(o, str(spec_file))[0] == "data.root" for o in args.overrides)
        pools, splits = backend.eval_set(model_dir, spec["data"], args.split, new_root)
        # The model's own train.tta, or the views --set train.tta=... asks for.
        out = backend.reevaluate(model_dir, pools, spec["data"], args.split, splits, spec["train"].get("tta"))
        if args.explain > 0:
            explained = backend.explain(model_dir, pools, spec["data"], args.explain, args.split, splits)
            out["explain_dir"] = str(explained)
            if storage.is_uri(args.model_dir):  # the maps go beside the model, where the user looks
                out["explain_dir"] = storage.join(args.model_dir, explained.name)
                storage.upload(explained, out["explain_dir"])
    except _user_errors(backend) as err:
        return _user_error("tune-eval", str(spec_file), err)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
