"""``tune-compare runs/vit runs/cnn …``: one table across model families, plus report.md and report.html.

Each argument is a study folder (its ``final/metrics.json``; a path or a storage URI), a final folder, or an MLflow
experiment name (the newest final run's ``final/metrics.json`` artifact). A study folder without
final models whose search varied the training data's fraction (paper 003's grid; the key is study.json's
``report_axes``) is read from its
``trials.csv``: validation accuracy against training fraction per model, with the spread over seeds.
"""

from __future__ import annotations

import argparse
import base64
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .report._figures import fraction_plot, plots
from .report._pareto import study_front
from .report._sources import (
    CompareError,
    load_final,
    load_fraction_study,
    local_study,
    seed_confusion,
    study_importance,
)
from .spec._schema import SpecError
from .store import _storage as storage
from .store._atomic import EXIT_FAULT, StorageFull, write_atomic
from .store._export import SCORED
from .store._paths import tracking_uri

EXIT_USAGE = 2


def importance_parts(found: list[tuple[str, Any]]) -> tuple[list[str], list[str], dict[str, bytes]]:
    """The report's "Which settings mattered" section: markdown, HTML and a parallel-coordinates plot per study."""
    import html

    from tabulate import tabulate

    from .report._importance import safe_plot

    md, htm, images = ["## Which settings mattered", ""], ["<h2>Which settings mattered</h2>"], {}
    for name, imp in found:
        line = f"**{name}**: {imp.line()}" + (
            f" (left out, set in some trials only: {', '.join(imp.left_out)})" if imp.left_out else ""
        )
        md += [line, ""]
        htm.append(f"<p>{html.escape(line.replace('**', ''))}</p>")
        if imp.shares:
            rows = [{"setting": k, "share of variance": f"{v:.3f}"} for k, v in imp.shares.items()]
            md += [tabulate(rows, headers="keys", tablefmt="github", disable_numparse=True), ""]
            htm.append(tabulate(rows, headers="keys", tablefmt="html", disable_numparse=True))
        png = safe_plot(imp, name) if imp.shares else None
        if png is not None:
            images[f"parallel_{name}.png"] = png
    note = (
        "fANOVA (Optuna's evaluator, fixed seed) over each study's scored trials, each at the best value it "
        "reached (trials a scheduler stopped count with theirs); few trials make these shares rough."
    )
    return [*md, note, ""], [*htm, f"<p>{html.escape(note)}</p>"], images


def fraction_table(df: Any) -> list[dict[str, str]]:
    """Paper 003's Table 4.5/4.6: per training fraction, each model's best validation metric over seeds."""
    ok = df[df["status"].isin(SCORED)]
    rows = []
    for frac, g in ok.groupby("fraction"):
        row = {"fraction": f"{frac:g}"}
        for model, m in g.groupby("model"):
            v = m["value"]
            row[f"{model} ({m['metric'].iloc[0]})"] = (
                f"{v.mean():.4f} ± {v.std(ddof=1):.4f} (n={len(v)})" if len(v) > 1 else f"{v.mean():.4f} (n=1)"
            )
            row[f"{model} train s"] = f"{m['seconds'].mean():,.0f}" if m["seconds"].notna().any() else "–"
        rows.append(row)
    return rows


def _pm(v: dict[str, Any] | None) -> str:
    if not v or v.get("mean") is None:
        return "–"
    if v.get("ci_low") is None:
        return f"{v['mean']:.4f}"
    return f"{v['mean']:.4f} ± {(v['ci_high'] - v['ci_low']) / 2:.4f}"


def _num(v: Any, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def table_rows(studies: list[dict[str, Any]]) -> list[dict[str, str]]:
    rows = []
    for s in studies:
        sm, cost, budget = s["summary"], s["summary"].get("cost", {}), s.get("search_budget") or {}
        rows.append(
            {
                "study": s["experiment"],
                "model": s["model"],
                # "2 of 3": a seed failed (diverged, out of memory) or the budget left it no time, and the
                # numbers are of the others
                "seeds": f"{len(s['seeds'])} of {len(s['seeds_planned'])}"
                if s.get("failed_seeds") or s.get("not_trained_seeds")
                else str(len(s["seeds"])),
                "test acc (95% CI)": _pm(sm.get("accuracy")),
                "macro F1": _pm(sm.get("f1_macro")),
                "MCC": _pm(sm.get("mcc")),
                "AUC": _pm(sm.get("auc_roc")),
                **(
                    {"recall": _pm(sm["recall"]), "precision": _pm(sm["precision"]), "F1": _pm(sm["f1"])}
                    if "recall" in sm
                    else {}
                ),
                "params": _num(cost.get("params"), ",.0f"),
                "MFLOPs/img": _num(cost.get("flops_per_image") and cost["flops_per_image"] / 1e6, ",.1f"),
                "M mult-adds/img": _num(cost.get("macs_per_image") and cost["macs_per_image"] / 1e6, ",.1f"),
                "img/s": _num(cost.get("throughput_images_per_s"), ",.0f"),
                "latency ms": _num(cost.get("latency_ms"), ".2f"),
                "train s": _num(cost.get("train_seconds_total"), ",.0f"),
                "search epochs": _num(budget.get("epochs"), ",.0f"),
                "search trial-min": _num(budget.get("trial_seconds") and budget["trial_seconds"] / 60, ",.1f"),
                "search GPU-h": _num(budget.get("gpu_hours"), ".2f"),
                "final GPU-h": _num(
                    cost["gpu_hours"] * len(s["seeds"]) if cost.get("gpu_hours") is not None else None, ".2f"
                ),
            }
        )
    return rows


def _html_list(lines: list[str]) -> str:
    """Markdown list lines ("- item", "  - sub-item") as a nested HTML list."""
    import html

    out, open_sub = ["<ul>"], False
    for line in lines:
        sub = line.startswith("  ")
        text = html.escape(line.strip().removeprefix("- "))
        if sub and not open_sub:
            out.append("<ul>")
        elif not sub and open_sub:
            out.append("</ul></li>")
        elif not sub and len(out) > 1:
            out.append("</li>")
        out.append(f"<li>{text}</li>" if sub else f"<li>{text}")
        open_sub = sub
    out.append("</ul></li></ul>" if open_sub else "</li></ul>")
    return "".join(out)


def write_reports(
    studies: list[dict[str, Any]],
    out_dir: Path,
    curves: Any = None,
    verdict: list[str] | None = None,
    importances: list[tuple[str, Any]] | None = None,
    fronts: list[dict[str, Any]] | None = None,
) -> str:
    """report.md, report.html and the plots in ``out_dir``; returns the text the console shows.
    ``verdict``: the lines of ``_verdict.verdict``, which end the report; ``importances``: (study, Importance);
    ``fronts``: multi-objective studies' fronts (``report._pareto.study_front``)."""
    import html

    from tabulate import tabulate

    from .report._verdict import NOTE

    rows = table_rows(studies) if studies else []
    md_parts, html_parts = [], []
    if rows:
        md_parts += [
            tabulate(rows, headers="keys", tablefmt="github", disable_numparse=True),
            "",
            "Test accuracy and the other test metrics: mean over seeds ± half the 95 % t-interval.",
            "",
        ]
        html_parts += [
            tabulate(rows, headers="keys", tablefmt="html", disable_numparse=True),
            "<p>Mean over seeds ± half the 95 % t-interval.</p>",
        ]
    images = plots(studies) if studies else {}
    if curves is not None:
        md_frac, html_frac = _fraction_parts(curves)
        md_parts += md_frac
        html_parts += html_frac
        images["fraction_curve.png"] = fraction_plot(curves)
    if fronts:
        md_front, html_front, front_images = front_parts(fronts)
        md_parts += md_front
        html_parts += html_front
        images.update(front_images)
    if importances:
        md_imp, html_imp, imp_images = importance_parts(importances)
        md_parts += md_imp
        html_parts += html_imp
        images.update(imp_images)
    if verdict:  # last: what the comparison concludes
        md_parts += ["## Verdict", "", *verdict, "", NOTE, ""]
        html_parts += ["<h2>Verdict</h2>", _html_list(verdict), f"<p>{html.escape(NOTE)}</p>"]
    table = "\n".join(md_parts)
    _write_files(out_dir, table, "".join(html_parts), images)
    return table


def front_parts(fronts: list[dict[str, Any]]) -> tuple[list[str], list[str], dict[str, bytes]]:
    """The report's "Pareto fronts" section: one row per study with the first study's objectives, hypervolumes
    at one reference point, and the fronts on one plot."""
    from tabulate import tabulate

    from .report._pareto import fronts_plot, fronts_table

    rows, ref = fronts_table(fronts)
    left = [f["study"] for f in fronts if dict(f["objectives"]) != dict(fronts[0]["objectives"])]
    note = (
        "Each study's front: its trials no other of its trials beats in every objective (values at their last "
        "epoch). Hypervolume: what the front dominates up to one reference point for all of them ("
        + ", ".join(f"{m}={v:g}" for m, v in ref.items())
        + "): larger is better; it compares these studies only."
        + (f" Left out (other objectives): {', '.join(left)}." if left else "")
    )
    md = [
        "## Pareto fronts",
        "",
        tabulate(rows, headers="keys", tablefmt="github", disable_numparse=True),
        "",
        note,
        "",
    ]
    html = ["<h2>Pareto fronts</h2>", tabulate(rows, headers="keys", tablefmt="html", disable_numparse=True)]
    png = fronts_plot(fronts)
    return md, [*html, f"<p>{note}</p>"], ({"fronts.png": png} if png is not None else {})


def _fraction_parts(curves: Any) -> tuple[list[str], list[str]]:
    """The data-efficiency table, in markdown and in HTML."""
    from tabulate import tabulate

    frows = fraction_table(curves)
    note = "Best validation metric per run: mean ± standard deviation over seeds; train s: mean seconds per run."
    md = ["## Data efficiency", "", tabulate(frows, headers="keys", tablefmt="github", disable_numparse=True), ""]
    html = [
        "<h2>Data efficiency</h2>",
        tabulate(frows, headers="keys", tablefmt="html", disable_numparse=True),
        f"<p>{note}</p>",
    ]
    return md + [note, ""], html


def _write_files(out_dir: Path, table: str, html_table: str, images: dict[str, bytes]) -> None:
    """The plots, report.md (linking them) and report.html (holding them), each written whole."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data in images.items():
        write_atomic(out_dir / name, data)
    md = ["# Model comparison", "", table] + [f"![{n}]({n})" for n in images]
    write_atomic(out_dir / "report.md", "\n".join(md) + "\n")
    imgs = "".join(
        f'<img alt="{n}" src="data:image/png;base64,{base64.b64encode(d).decode()}">' for n, d in images.items()
    )
    write_atomic(
        out_dir / "report.html",
        "<!doctype html><html><head><meta charset='utf-8'><title>Model comparison</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:4px 8px;text-align:right}img{max-width:48%;margin:1em 1% 0 0}</style></head><body>"
        f"<h1>Model comparison</h1>{html_table}{imgs}"
        "</body></html>\n",
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tune-compare", description=__doc__.splitlines()[0])
    p.add_argument("sources", nargs="+", help="study folders (runs/<study>) or MLflow experiment names")
    p.add_argument(
        "--out",
        default=None,
        help="where report.md, report.html and plots go (a path or URI; default: "
        "runs/compare, or compare/ beside the first study at a URI)",
    )
    p.add_argument("--mlflow-uri", default="sqlite:///mlflow.db")
    args = p.parse_args(argv)
    import pandas as pd

    studies, curves, importances, fronts = [], [], [], []
    try:
        for src in args.sources:
            local = local_study(src)
            here = str(local or src)
            front = study_front(Path(here))  # a multi-objective study: its front, with or without final models
            if front is not None:
                fronts.append(front)
                if not (Path(here) / "final" / "metrics.json").is_file():
                    found = study_importance(Path(here))
                    importances += [found] if found is not None else []
                    continue
            frame = None if (Path(here) / "final" / "metrics.json").is_file() else load_fraction_study(here)
            if frame is not None:
                curves.append(frame)
                found = study_importance(Path(here))
            else:
                studies.append(load_final(src, tracking_uri(args.mlflow_uri), local))
                final = studies[-1].get("out_dir")  # None for an MLflow experiment: no trials table to read
                found = study_importance(Path(final).parent) if final else None  # final/ lies in the study folder
            if found is not None:
                importances.append(found)
        for s in studies:  # the first seed's confusion matrix, for the side-by-side plot
            seed_file = Path(s.get("out_dir", "")) / str(s["seeds"][0]) / "metrics.json" if s["seeds"] else None
            if seed_file and seed_file.is_file():
                s["confusion_matrix"] = seed_confusion(seed_file)
        from .report._verdict import verdict

        lines = verdict(studies)  # reads every seed's predictions: a damaged file stops here, before any report
        first = args.sources[0]
        out = args.out or (storage.join(storage.parent(first), "compare") if storage.is_uri(first) else "runs/compare")
        folder = storage.folder(out)  # a URI: written in a staging folder, then uploaded
        table = write_reports(studies, folder.local, pd.concat(curves) if curves else None, lines, importances, fronts)
        folder.publish(*sorted(p.name for p in folder.local.iterdir()))
    except (CompareError, SpecError) as err:
        print(f"tune-compare: error: {storage.as_given(str(err))}", file=sys.stderr)  # a URI's file by its URI
        return EXIT_USAGE
    except StorageFull as err:  # a fault of the machine, not of the input: exit 1
        print(f"tune-compare: error: {err}; free space, then run tune-compare again", file=sys.stderr)
        return EXIT_FAULT
    print(table)
    print(f"\nreport: {storage.join(out, 'report.md')}, {storage.join(out, 'report.html')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
