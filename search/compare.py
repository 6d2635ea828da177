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
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .spec._files import read_json
from .spec._schema import SpecError
from .spec._spec import get_path
from .store import _storage as storage
from .store._atomic import EXIT_FAULT, StorageFull, write_atomic
from .store._export import SCORED
from .store._paths import tracking_uri

EXIT_USAGE = 2


class CompareError(Exception):
    pass


def load_final(source: str, mlflow_uri: str, local: Path | None = None) -> dict[str, Any]:
    """``local``: the folder's downloaded copy when ``source`` is a URI."""
    p = local or Path(source)
    for cand in (p / "final" / "metrics.json", p / "metrics.json"):
        if cand.is_file():
            data = final_metrics(cand)
            # Seed folders are read beside this file: the out_dir it records is stale once runs/ moves.
            return {**data, "out_dir": str(cand.parent.resolve())}
    if p.exists():
        raise CompareError(
            f"{source}: no final/metrics.json (run tune-run {storage.join(source, 'best.yaml')} --final first)"
        )
    from .store._tracking import client_for

    c = client_for(mlflow_uri)
    exp = c.get_experiment_by_name(source)
    if exp is None:
        raise CompareError(f"{source}: neither a study folder nor an MLflow experiment in {mlflow_uri}")
    runs = c.search_runs([exp.experiment_id], filter_string="tags.role = 'final'", order_by=["start_time DESC"])
    if not runs:
        raise CompareError(f"{source}: MLflow experiment has no final run")
    local = c.download_artifacts(runs[0].info.run_id, "final/metrics.json")
    # Seed files (predictions.npz) are artifacts of the same run, fetched when the verdict needs them.
    return {**final_metrics(Path(local)), "mlflow_final_run": (mlflow_uri, runs[0].info.run_id)}


# What a report reads from a study's final/metrics.json (written by tune-run --final).
FINAL_KEYS: dict[str, type] = {"summary": dict, "experiment": str, "model": str, "seeds": list}
# ... and from its study.json's spec.
STUDY_KEYS: dict[str, type] = {"space": dict, "experiment.name": str, "experiment.metric": str}


def axis(record: dict[str, Any], name: str) -> tuple[str | None, Any]:
    """(the spec key, its value) of a report axis (``model``, ``fraction``, ``seed``) as the trial side named it in
    study.json or final/metrics.json (``report_axes``); (None, None) in a file written before it was recorded."""
    got = (record.get("report_axes") or {}).get(name)
    return (str(got[0]), got[1]) if isinstance(got, list) and len(got) == 2 else (None, None)


def checked(data: dict[str, Any], keys: dict[str, type], file: Path, what: str) -> dict[str, Any]:
    """``data`` when each key holds its type; else one line naming the file and the first key that does not."""
    for key, kind in keys.items():
        if not isinstance(get_path(data, key, None), kind):
            raise SpecError(str(file), key, f"missing or not a {kind.__name__}: not {what} written by tune-run")
    return data


def final_metrics(path: Path) -> dict[str, Any]:
    return checked(read_json(path, "metrics file"), FINAL_KEYS, path, "a final metrics file")


RESULT_FILES = ("study.json", "trials.csv", "metrics.json")


def results_only(rel: str) -> bool:
    """Of a study folder in storage, the files a report reads: not Tune's trial folders and checkpoints."""
    *folders, file = rel.split("/")
    return file in RESULT_FILES and not any(f == "ray" or f.startswith(("trial_", "checkpoint_")) for f in folders)


def local_study(source: str) -> Path | None:
    """A study or final folder at a URI, downloaded (its result files); None for a local path or an MLflow name."""
    if not storage.is_uri(source):
        return None
    local = storage.local_copy(source, results_only)
    if not local.exists():
        raise CompareError(f"{source}: nothing there (not a study folder)")
    return local


def seed_confusion(path: Path) -> Any:
    """A seed's test confusion matrix (None when its metrics.json has none)."""
    test = read_json(path, "metrics file").get("test")
    return test.get("confusion_matrix") if isinstance(test, dict) else None


def read_trials(path: Path, columns: list[str]) -> Any:
    """A study's trials.csv as a frame with ``columns``; a damaged file is one line naming it."""
    import pandas as pd

    try:
        df = pd.read_csv(path)
    except (ValueError, UnicodeDecodeError) as exc:  # pandas' parser and empty-data errors are ValueErrors
        raise SpecError(str(path), "", f"not a trials table: {str(exc).splitlines()[0]}") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SpecError(str(path), "", f"has no column {missing[0]!r}: not a trials table written by tune-run")
    return df


def study_record(folder: Path) -> dict[str, Any] | None:
    """The study.json of the search study at ``folder``, its resolved ``spec`` checked, or None when the folder
    holds no search results (no trials.csv or study.json); a damaged study.json is one line naming it."""
    if not (folder / "trials.csv").is_file() or not (folder / "study.json").is_file():
        return None
    record = read_json(folder / "study.json", "study file")
    if not isinstance(record.get("spec"), dict):
        raise CompareError(f"{folder / 'study.json'}: holds no 'spec' mapping (not a study written by tune-run)")
    checked(record["spec"], STUDY_KEYS, folder / "study.json", "a study file")
    return record


def search_spec(folder: Path) -> dict[str, Any] | None:
    """The resolved spec of the search study at ``folder`` (``study_record``'s), or None."""
    record = study_record(folder)
    return record["spec"] if record else None


def load_fraction_study(source: str) -> Any:
    """A search study's trials as a frame (model, fraction, seed, best validation metric, seconds), or None."""
    import pandas as pd

    p = Path(source)
    record = study_record(p)
    if record is None:
        return None
    spec, (fraction, _) = record["spec"], axis(record, "fraction")
    if fraction is None or fraction not in spec["space"]:
        return None
    metric = spec["experiment"]["metric"]
    df = read_trials(p / "trials.csv", ["status", f"best_{metric}"])
    if fraction not in df.columns:
        return None
    (model_key, model_name), (seed_key, seed) = axis(record, "model"), axis(record, "seed")
    branch = [k for k in spec["space"] if "." not in k]  # a branch label names the model family
    model = df[branch[0]] if branch else df.get(model_key, pd.Series([model_name] * len(df)))
    return pd.DataFrame(
        {
            "study": spec["experiment"]["name"],
            "model": model.astype(str),
            "fraction": df[fraction],
            "seed": df.get(seed_key, seed),
            "metric": metric,
            "value": df[f"best_{metric}"],
            "seconds": pd.to_numeric(df.get("seconds"), errors="coerce"),
            "status": df["status"],
        }
    )


def study_importance(folder: Path) -> Any:
    """(study name, ``_importance.Importance``): which settings mattered in the search of the study at
    ``folder``; None when it holds no search (no trials.csv, or nothing searched)."""
    from .report._importance import safe_importance

    spec = search_spec(folder)
    if spec is None or not spec["space"]:
        return None
    metric = spec["experiment"]["metric"]
    df = read_trials(folder / "trials.csv", ["status", f"best_{metric}"])
    if f"{metric}_by_epoch" in df:  # read as text: values separated by spaces
        df[f"{metric}_by_epoch"] = df[f"{metric}_by_epoch"].fillna("").astype(str)
    return spec["experiment"]["name"], safe_importance(
        df.to_dict("records"), spec["space"], metric, spec["experiment"].get("mode", "max")
    )


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


def fraction_plot(df: Any) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = df[df["status"].isin(SCORED)]
    fig, ax = plt.subplots(figsize=(6, 4))
    for model, g in ok.groupby("model"):
        st = g.groupby("fraction")["value"].agg(["mean", "min", "max"]).reset_index()
        ax.plot(st["fraction"], st["mean"], marker="o", label=f"{model} (mean over seeds)")
        ax.fill_between(st["fraction"], st["min"], st["max"], alpha=0.25)  # the spread over seeds
    ax.set(
        xscale="log",
        xlabel="training fraction",
        ylabel=f"best {ok['metric'].iloc[0]}",
        title="Data efficiency (band: min–max over seeds)",
    )
    ax.legend()
    data = _png(fig)
    plt.close(fig)
    return data


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
                # "2 of 3": a seed failed (diverged, out of memory), and the numbers are of the others
                "seeds": f"{len(s['seeds'])} of {len(s['seeds_planned'])}"
                if s.get("failed_seeds")
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


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def plots(studies: list[dict[str, Any]]) -> dict[str, bytes]:
    """The report's figures by file name: learning curves, accuracy against latency, accuracy against the
    training fraction (when the studies vary it), confusion matrices side by side (when recorded)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, bytes] = {}
    for name, draw in (
        ("curves.png", _curves),
        ("pareto.png", _pareto),
        ("fraction.png", _fraction),
        ("confusion.png", _confusion),
    ):
        fig = draw(plt, studies)
        if fig is not None:
            out[name] = _png(fig)
            plt.close(fig)
    return out


def _curves(plt: Any, studies: list[dict[str, Any]]) -> Any:
    """Accuracy per epoch, mean over seeds."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 4))
    for s in studies:
        hists = [h for h in s.get("history", {}).values() if h]
        if hists:
            n = min(len(h) for h in hists)
            # Final runs on train+val hold nothing out: they have train_acc only, and are labelled so.
            key = "val_acc" if all("val_acc" in e for h in hists for e in h[:n]) else "train_acc"
            ax.plot(
                range(1, n + 1),
                np.mean([[e[key] for e in h[:n]] for h in hists], axis=0),
                marker="o" if n <= 30 else None,
                label=f"{s['experiment']} ({key})",
            )  # one epoch shows too
    ax.set(xlabel="epoch", ylabel="accuracy (mean over seeds)", title="Learning curves")
    if ax.lines:  # no history recorded: no legend (matplotlib would warn on stderr)
        ax.legend()
    return fig


def _pareto(plt: Any, studies: list[dict[str, Any]]) -> Any:
    """Test accuracy against batch-1 latency, with the front no faster model is as accurate as."""
    pts = [
        (s["summary"].get("cost", {}).get("latency_ms"), s["summary"]["accuracy"]["mean"], s["experiment"])
        for s in studies
        if s["summary"].get("accuracy", {}).get("mean") is not None
        and s["summary"].get("cost", {}).get("latency_ms") is not None
    ]
    fig, ax = plt.subplots(figsize=(6, 4))
    for lat, acc, name in pts:
        ax.scatter(lat, acc)
        ax.annotate(name, (lat, acc))
    front, best = [], -1.0
    for lat, acc, _ in sorted(pts):
        if acc > best:
            front.append((lat, acc))
            best = acc
    if front:
        ax.step(*zip(*front), where="post", linestyle="--", label="Pareto front")
        ax.legend()
    ax.set(xlabel="latency, ms (batch 1)", ylabel="test accuracy", title="Accuracy against latency")
    return fig


def _fraction(plt: Any, studies: list[dict[str, Any]]) -> Any:
    """Accuracy against the training fraction, per model; None unless the studies vary the fraction."""
    fractions = {axis(s, "fraction")[1] for s in studies}
    if len(fractions) <= 1 or None in fractions:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for model in sorted({s["model"] for s in studies}):
        by_fraction = sorted(  # by fraction alone: two studies at one fraction tie, and dicts do not order
            (
                (axis(s, "fraction")[1], s["summary"]["accuracy"])
                for s in studies
                if s["model"] == model and s["summary"].get("accuracy", {}).get("mean") is not None
            ),
            key=lambda p: p[0],
        )
        x = [p[0] for p in by_fraction]
        y = [p[1]["mean"] for p in by_fraction]
        err = [(p[1]["ci_high"] - p[1]["ci_low"]) / 2 if p[1].get("ci_low") is not None else 0 for p in by_fraction]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=model)
    ax.set(xscale="log", xlabel="training fraction", ylabel="test accuracy", title="Data efficiency")
    ax.legend()
    return fig


def _confusion(plt: Any, studies: list[dict[str, Any]]) -> Any:
    """Each study's first seed's confusion matrix (rows normalised); None when none was recorded."""
    import numpy as np

    with_cm = [s for s in studies if s.get("confusion_matrix")]
    if not with_cm:
        return None
    fig, axes = plt.subplots(1, len(with_cm), figsize=(4 * len(with_cm), 4), squeeze=False)
    for ax, s in zip(axes[0], with_cm):
        cm = np.asarray(s["confusion_matrix"], dtype=float)
        ax.imshow(cm / cm.sum(1, keepdims=True).clip(min=1), vmin=0, vmax=1, cmap="Blues")
        ax.set_title(s["experiment"])
    return fig


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
) -> str:
    """report.md, report.html and the plots in ``out_dir``; returns the text the console shows.
    ``verdict``: the lines of ``_verdict.verdict``, which end the report; ``importances``: (study, Importance)."""
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

    studies, curves, importances = [], [], []
    try:
        for src in args.sources:
            local = local_study(src)
            here = str(local or src)
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
        table = write_reports(studies, folder.local, pd.concat(curves) if curves else None, lines, importances)
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
