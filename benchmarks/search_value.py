"""Search value: one budget spent on the spec's fixed recipe alone vs. on search + final training (and on an anchor).

The arms run through the console scripts, as a user runs them, one after the other in one run, each in
its own fresh folder, at the same ``--budget``:

(a) fixed: the spec without its ``space`` (its own recipe, as written): ``tune-run fixed.yaml --final
    --budget B`` trains ``final.seeds`` models; ``final.epochs`` left null is sized to the whole budget by
    the probe (at most ``train.epochs``).
(b) searched: ``tune-run searched.yaml --budget B``: the recipe at the size the budget takes (the spec's
    ``search.sizes``; ``--final`` in (a) and (c) trains the recipe as written), the search what the recipe's final
    training leaves of B (or the spec's ``search.budget_split`` of it), final training of the best configuration
    the rest (and what the search left).
(c) anchor: airbench94's recipe (``benchmarks/airbench94.yaml``: its network, schedule, augmentation and
    test-time views, re-implemented here) on the study's data and seeds, trained as (a) is:
    ``tune-run anchor.yaml --final --budget B``. What a current fast recipe reaches with the same budget.

A budget counts from the first trial in each arm (Ray's start and data loading come before it, in all), so
each arm's wall clock from command start to end is printed too. Every arm is tested on the same test
images: ``tune-compare`` pairs them (paired bootstrap over test images and seeds) and its verdict is
printed. ratio = (b)'s mean test accuracy over seeds ÷ (a)'s; the difference's 95 % interval comes from
the verdict. Target (issue 13): (b) better than (a), interval above 0. anchor_ratio = (b)'s ÷ (c)'s (issue 24:
at least 0.98), with its own verdict: each of the two comparisons is made on its own, as it was planned.

Defaults: ``spaces/cnn.yaml`` at ``--budget 30m`` (``--set data.root=...`` for the data); ``--quick``:
the quickstart on digits (3 trials of at most 4 epochs) at 12 epochs with one final seed, the anchor's network
narrowed and the digits upsampled to its smallest input (16 px): it checks the script in seconds, not the figure,
and runs the console scripts' ``main`` in its own process (one interpreter and one Ray for all arms).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import emit, parser  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ARMS = ("fixed", "searched", "anchor")
ANCHOR = REPO / "benchmarks" / "airbench94.yaml"
# --quick: the anchor at a size that trains on the quickstart's digits in seconds (fast_cnn takes 16 px and up), in
# batches of 64 (the digits' ~1,000 training images are one batch of 1,024), its rate scaled with the batch.
QUICK_ANCHOR = {
    "model": {"width1": 8, "width2": 16, "width3": 16},
    "train": {"batch_size": 64, "lr": 0.1},
    "image_size": 16,
}


def arm_specs(spec_file: Path, quick: bool, anchor_file: Path = ANCHOR) -> dict[str, dict[str, Any]]:
    """The three arms' spec files, each named for its arm: the same recipe (a) without its space, (b) as written;
    (c) the spec's data and final seeds with the anchor's network, recipe and augmentation, without a space."""
    spec = yaml.safe_load(spec_file.read_text())
    if quick:  # the quickstart has no final section: one seed after the search; fewer, shorter trials
        spec["final"] = {"seeds": [0], "timing_s": 0.1}  # the models' speed, which no arm compares, timed briefly
        spec["search"]["num_samples"] = 3
        spec["train"]["epochs"] = 4
    spec.setdefault("final", {})
    out = {}
    for arm in ARMS:
        s = json.loads(json.dumps(spec))
        s.setdefault("experiment", {})["name"] = arm
        if arm != "searched":
            s.pop("space", None)
        if arm == "anchor":
            _anchor(s, yaml.safe_load(anchor_file.read_text()), quick)
        out[arm] = s
    return out


def _anchor(s: dict[str, Any], anchor: dict[str, Any], quick: bool) -> None:
    """``s`` with the anchor's model, train section and augmentation in place of the spec's own (``--quick``: at
    the quick spec's epochs, narrowed, on 16 px)."""
    epochs = s["train"]["epochs"]
    s["model"], s["train"] = anchor["model"], anchor["train"]
    s.setdefault("data", {})["augment"] = anchor["data"]["augment"]
    if quick:
        s["model"].update(QUICK_ANCHOR["model"])
        s["train"].update(QUICK_ANCHOR["train"], epochs=epochs)
        s["data"]["image_size"] = QUICK_ANCHOR["image_size"]


def run(cmd: list[str], cwd: Path, in_process: bool = False) -> tuple[float, str]:
    """Run a console script; its wall clock and output (raises with the output on failure). ``in_process``
    (``--quick``): its ``main(argv)`` in this process instead, so that the arms share one interpreter and one Ray
    (each console script's start, imports and Ray were most of --quick's time); a measured run keeps a fresh
    process per arm."""
    t0 = time.monotonic()
    code, out, err = _in_process(cmd, cwd) if in_process else _subprocess(cmd, cwd)
    seconds = time.monotonic() - t0
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {code}:\n{out[-3000:]}\n{err[-3000:]}")
    return seconds, out


def _subprocess(cmd: list[str], cwd: Path) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # each arm starts its own Ray
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    return r.returncode, r.stdout, r.stderr


def _in_process(cmd: list[str], cwd: Path) -> tuple[int, str, str]:
    from search import cli, compare

    main = {"tune-run": cli.main, "tune-compare": compare.main}[Path(cmd[0]).name]
    out, err, here, address = io.StringIO(), io.StringIO(), os.getcwd(), os.environ.pop("RAY_ADDRESS", None)
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(cmd[1:])
            except SystemExit as exc:  # argparse's usage errors
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        os.chdir(here)
        if address is not None:
            os.environ["RAY_ADDRESS"] = address
    return int(code or 0), out.getvalue(), err.getvalue()


def accuracies(study: Path) -> list[float]:
    summary = json.loads((study / "final" / "metrics.json").read_text())
    return [float(s["accuracy"]) for s in summary["per_seed"]]


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--spec", default=None, help="study spec (default spaces/cnn.yaml; --quick: spaces/quickstart.yaml)")
    p.add_argument("--anchor", default=str(ANCHOR), help="the anchor arm's recipe (default benchmarks/airbench94.yaml)")
    p.add_argument("--budget", default=None, help="budget of each arm (default 30m; --quick: 12epochs)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="passed to every arm's tune-run (e.g. data.root=/tmp/cifar10)",
    )
    p.add_argument("--keep", metavar="DIR", help="run in DIR and keep the arms' studies (default: a temporary folder)")
    args = p.parse_args()
    spec_file = Path(args.spec or REPO / "spaces" / ("quickstart.yaml" if args.quick else "cnn.yaml")).resolve()
    budget = args.budget or ("12epochs" if args.quick else "30m")
    bin_dir = Path(sys.executable).parent
    tune_run, tune_compare = str(bin_dir / "tune-run"), str(bin_dir / "tune-compare")
    work = Path(args.keep or tempfile.mkdtemp(prefix="search-value-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    sets = [x for kv in args.overrides for x in ("--set", kv)]
    wall, acc = {}, {}
    for arm, spec in arm_specs(spec_file, args.quick, Path(args.anchor)).items():
        (work / f"{arm}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        cmd = [tune_run, f"{arm}.yaml", "--budget", budget, *sets, *(["--final"] if arm != "searched" else [])]
        print(f"{arm}: {' '.join(cmd[1:])}", flush=True)
        wall[arm], out = run(cmd, work, in_process=args.quick)
        acc[arm] = accuracies(work / "runs" / arm)
        plan = [line for line in out.splitlines() if line.startswith("budget:")]
        print(
            f"{arm}: test accuracy {statistics.fmean(acc[arm]):.4f} (seeds: {', '.join(f'{a:.4f}' for a in acc[arm])}); "
            f"{wall[arm]:.0f} s wall clock" + "".join(f"\n  {line}" for line in plan),
            flush=True,
        )
    # Two comparisons, each planned on its own (and so each with its own report): searched against its own recipe,
    # and against the anchor.
    verdict = compare(tune_compare, work, "fixed", args.quick)
    anchor_verdict = compare(tune_compare, work, "anchor", args.quick)
    mean = {arm: statistics.fmean(v) for arm, v in acc.items()}
    emit(
        "search_value",
        {
            "spec": str(spec_file.relative_to(REPO)) if spec_file.is_relative_to(REPO) else str(spec_file),
            "anchor": args.anchor,
            "budget": budget,
            "overrides": args.overrides,
            "test_accuracy": {a: {"mean": mean[a], "seeds": v} for a, v in acc.items()},
            "wall_s": wall,
            "verdict": verdict,
            "difference_searched_minus_fixed_ci": _interval(verdict[0]) if verdict else None,
            "ratio": mean["searched"] / mean["fixed"],
            "target": "searched better than fixed (interval above 0)",
            "anchor_verdict": anchor_verdict,
            "difference_searched_minus_anchor_ci": _interval(anchor_verdict[0]) if anchor_verdict else None,
            "anchor_ratio": mean["searched"] / mean["anchor"],
            "anchor_target": "searched / anchor >= 0.98",
        },
        args.quick,
    )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


def compare(tune_compare: str, work: Path, other: str, in_process: bool) -> list[str]:
    """``tune-compare runs/<other> runs/searched`` (its report in runs/compare-<other>): the verdict's lines of the
    pair, printed."""
    cmd = [tune_compare, f"runs/{other}", "runs/searched", "--out", f"runs/compare-{other}"]
    _, report = run(cmd, work, in_process)
    lines = [line for line in report.splitlines() if line.startswith(f"- {other} vs searched")]
    print("\n".join(lines) or report, flush=True)
    return lines


def _interval(line: str) -> list[float] | None:
    """(searched - other) 95 % interval from the verdict line: it states other - searched."""
    m = re.search(r"95 % (?:CI|interval) \[?([-+]?\d*\.?\d+(?:e-?\d+)?),\s*([-+]?\d*\.?\d+(?:e-?\d+)?)\]?", line)
    return None if m is None else [-float(m.group(2)), -float(m.group(1))]


if __name__ == "__main__":
    main()
