"""tune-compare's table and plots from final summaries (no training needed)."""

from __future__ import annotations

import json

from search.compare import main, table_rows, write_reports


def summary(name, model, frac, acc, lat):
    return {"experiment": name, "model": model, "seeds": [0, 1, 2],
            "spec": {"data": {"train_fraction": frac}},
            "summary": {"accuracy": {"mean": acc, "std": 0.01, "ci_low": acc - 0.02, "ci_high": acc + 0.02, "n": 3},
                        "cost": {"params": 1000, "flops_per_image": 2e6, "throughput_images_per_s": 500.0,
                                 "latency_ms": lat, "train_seconds_total": 30.0, "gpu_hours": 0.5}},
            "search_budget": {"epochs": 40, "trial_seconds": 600.0, "gpu_hours": 0.25},
            "history": {0: [{"val_acc": 0.5}, {"val_acc": acc}]}}


def test_table_columns_and_values():
    rows = table_rows([summary("vit", "vit", 1.0, 0.8, 2.0)])
    r = rows[0]
    assert r["test acc (95% CI)"] == "0.8000 ± 0.0200"
    assert r["params"] == "1,000" and r["MFLOPs/img"] == "2.0" and r["latency ms"] == "2.00"
    assert r["search epochs"] == "40" and r["search trial-min"] == "10.0"
    assert r["search GPU-h"] == "0.25" and r["final GPU-h"] == "1.50"  # 0.5 per seed x 3 seeds
    assert r["macro F1"] == "–"  # absent metrics show as a dash, not a number


def test_fraction_plot_only_when_studies_vary_it(tmp_path):
    same = [summary("a", "vit", 1.0, 0.8, 2.0), summary("b", "cnn", 1.0, 0.7, 1.0)]
    write_reports(same, tmp_path / "same")
    assert not (tmp_path / "same" / "fraction.png").exists()
    varied = [summary(f"vit{f}", "vit", f, 0.5 + f / 3, 2.0) for f in (0.1, 0.5, 1.0)]
    varied += [summary(f"rn{f}", "resnet18", f, 0.6 + f / 4, 1.0) for f in (0.1, 0.5, 1.0)]
    write_reports(varied, tmp_path / "varied")
    assert (tmp_path / "varied" / "fraction.png").stat().st_size > 1000
    assert "![fraction.png](fraction.png)" in (tmp_path / "varied" / "report.md").read_text()


def test_a_moved_study_folder_keeps_its_seed_results(tmp_path, monkeypatch):
    final = tmp_path / "moved" / "final"
    (final / "0").mkdir(parents=True)
    recorded = {**summary("moved", "cnn", 1.0, 0.8, 1.0), "seeds": [0], "out_dir": "/elsewhere/runs/moved/final"}
    (final / "metrics.json").write_text(json.dumps(recorded))
    (final / "0" / "metrics.json").write_text(json.dumps({"test": {"confusion_matrix": [[3, 1], [0, 4]]}}))
    monkeypatch.chdir(tmp_path)
    assert main(["moved", "--out", "cmp"]) == 0
    assert (tmp_path / "cmp" / "confusion.png").stat().st_size > 1000


def test_learning_curves_plot_what_final_runs_measured(tmp_path):
    """Final runs on train+val have no val_acc: the curve plots (and names) their train_acc instead."""
    s = summary("tv", "cnn", 1.0, 0.8, 1.0)
    s["history"] = {0: [{"train_loss": 1.0, "train_acc": 0.5}, {"train_loss": 0.5, "train_acc": 0.9}]}
    write_reports([s, summary("v", "vit", 1.0, 0.7, 2.0)], tmp_path)
    assert (tmp_path / "curves.png").stat().st_size > 1000
