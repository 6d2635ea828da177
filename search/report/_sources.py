"""Reading finished studies for a report: a study's final summary (a folder, a storage URI or an MLflow
experiment), its study.json and trials.csv, each damaged file one line naming it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..spec._files import read_json
from ..spec._keys import get_path
from ..spec._schema import SpecError
from ..store import _storage as storage


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
    from ..store._tracking import client_for

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


def read_trials(path: Path, columns: list[str], ran_none: bool = False) -> Any:
    """A study's trials.csv as a frame with ``columns``; a damaged file is one line naming it. ``ran_none``: its
    study.json records no trial (a budget that left no room to search), whose trials.csv tune-run wrote empty
    before it wrote the header: an empty file is then a table with no rows."""
    import pandas as pd

    if ran_none and path.stat().st_size == 0:
        return pd.DataFrame(columns=columns)
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
    from ._importance import safe_importance

    record = study_record(folder)
    if record is None or not record["spec"]["space"]:
        return None
    spec = record["spec"]
    metric = spec["experiment"]["metric"]
    df = read_trials(folder / "trials.csv", ["status", f"best_{metric}"], ran_none=record.get("trials") == 0)
    if f"{metric}_by_epoch" in df:  # read as text: values separated by spaces
        df[f"{metric}_by_epoch"] = df[f"{metric}_by_epoch"].fillna("").astype(str)
    return spec["experiment"]["name"], safe_importance(
        df.to_dict("records"), spec["space"], metric, spec["experiment"].get("mode", "max")
    )
