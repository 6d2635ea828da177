"""Images/s of a real trial (through Tune: reporting, checkpointing, augmentation) ÷ a bare PyTorch loop.

Same model, batch size, device and training images. The trial runs through ``search.run_study``
(as ``tune-run`` runs it: MLflow, a report and a checkpoint per epoch, validation on 2 % of the
set, flips and pad-crop); its images/s is the training images ÷ Ray's wall time per epoch
(``time_this_iter_s``: training, validation, reporting, checkpointing). The bare loop trains
pre-normalised float tensors with no evaluation and no reports.

Method (chosen so that the machine's drift cancels): k rounds, interleaved in one run as
bare, trial, bare, trial, …, bare (k trial runs, k + 1 bare runs, each a few epochs, the first
epoch of each being warm-up and not counted). Each trial run is compared with the bare run just
before it and the one just after it, giving 2k adjacent ratios; a slow drift of the machine
raises one ratio of a pair and lowers the other. ratio = the median of the 2k; their min–max and
interquartile range are reported with it. Target: ratio >= 0.95.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import emit, parser  # noqa: E402


def bare_loop(model, x, y, batch: int, epochs: int, autocast: bool) -> float:
    """Images/s of the minimal loop: pre-normalised float tensors on the device, no eval, no reports."""
    import torch

    dev = x.device
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(len(x), device=dev)
        for i in range(0, len(x), batch):
            idx = perm[i : i + batch]
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
                loss = loss_fn(model(x[idx]).float(), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return len(x) / (sum(times[1:]) / len(times[1:]))


def adjacent_ratios(bare: list[float], tune: list[float]) -> list[float]:
    """Each trial run ÷ the bare run before it and ÷ the one after it (bare, trial, bare, … order)."""
    assert len(bare) == len(tune) + 1
    return [t / b for i, t in enumerate(tune) for b in (bare[i], bare[i + 1])]


def spread(values: list[float]) -> dict[str, float]:
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "q1": q1, "q3": q3}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--rounds", type=int, help="trial runs, each between two bare runs (default 5; --quick 1)")
    args = p.parse_args()
    import pandas as pd
    import ray
    import torch

    import trainables
    from search import resolve, run_study
    from trainables.arithmetic import choose
    from trainables.batches import as_tensor
    from trainables.data import make_splits
    from trainables.sections import model_kwargs

    cuda = torch.cuda.is_available()
    # --quick checks the script in seconds (a narrow CNN on 512 images), not the figure.
    n, epochs = (512, 2) if args.quick else (20000, 3)
    rounds = args.rounds or (1 if args.quick else 5)
    if args.quick:
        model = {"name": "cnn", "conv1": 8, "conv2": 16, "conv3": 32, "hidden": 32}
    elif cuda:
        model = {"name": "resnet18", "stem": "cifar"}
    else:
        model = {"name": "cnn", "conv1": 32, "conv2": 64, "conv3": 128, "hidden": 256}
    with tempfile.TemporaryDirectory() as tmp:
        spec = resolve(
            {
                "experiment": {"name": "throughput", "output_dir": f"{tmp}/runs"},
                "data": {
                    "dataset": "synthetic",
                    "image_size": 32,
                    "num_classes": 10,
                    "num_samples": n,
                    "val_fraction": 0.02,
                    "test_fraction": 0.02,
                    "augment": {"hflip": 0.5, "pad_crop": 4},
                },
                "model": model,
                "train": {"epochs": epochs, "batch_size": 256},
                "resources": {"cpu": 2 if not cuda else 4, "gpu": 1 if cuda else 0},
                "tracking": {"mlflow_uri": f"sqlite:///{tmp}/mlflow.db"},
            },
            trainables,
        )
        pools = trainables.prepare(spec)
        idx = make_splits(pools, spec["data"]).train
        dev = torch.device("cuda" if cuda else "cpu")

        def bare() -> float:
            torch.manual_seed(0)
            torch.set_num_threads(int(spec["resources"]["cpu"]))
            x = as_tensor(pools.train_x[idx]).to(dev).float().div(255).sub(0.5).div(0.25)
            y = as_tensor(pools.train_y[idx]).to(dev)
            net = trainables.create_model(
                spec["model"]["name"], num_classes=10, in_chans=3, image_size=32, **model_kwargs(spec["model"])
            ).to(dev)
            # The bare loop computes as the trials do: the engine's choice of precision and layout (cached).
            arith = choose(net, spec["train"]["precision"], dev, (256, 3, 32, 32), family=spec["model"]["name"])
            if arith.channels_last:
                net = net.to(memory_format=torch.channels_last)
                x = x.contiguous(memory_format=torch.channels_last)
            return bare_loop(net, x, y, 256, epochs, autocast=arith.autocast)

        def trial(i: int) -> float:
            # One study per round, in the same Ray runtime; its first epoch (warm-up) is not counted.
            s = {**spec, "experiment": {**spec["experiment"], "name": f"throughput-{i}"}}
            res = run_study(s, trainables, file="throughput", log=lambda *_: None)
            prog = pd.read_csv(next(res.out_dir.glob("trial_*")) / "progress.csv")
            return len(idx) / prog["time_this_iter_s"].iloc[1:].mean()

        bare_ips, tune_ips = [bare()], []
        for i in range(rounds):
            tune_ips.append(trial(i))
            bare_ips.append(bare())
        ray.shutdown()
    ratios = adjacent_ratios(bare_ips, tune_ips)
    stats = spread(ratios)
    print(
        f"tune {', '.join(f'{v:.0f}' for v in tune_ips)} img/s; bare {', '.join(f'{v:.0f}' for v in bare_ips)} img/s; "
        f"ratio median {stats['median']:.3f} (min {stats['min']:.3f}, max {stats['max']:.3f}, "
        f"IQR {stats['q1']:.3f}–{stats['q3']:.3f}) over {len(ratios)} adjacent pairs"
    )
    emit(
        "throughput",
        {
            "model": spec["model"]["name"],
            "images": len(idx),
            "epochs_per_run": epochs,
            "rounds": rounds,
            "tune_images_per_s": tune_ips,
            "bare_images_per_s": bare_ips,
            "adjacent_ratios": ratios,
            "ratio": stats["median"],
            "ratio_spread": stats,
            "target": ">= 0.95",
        },
        args.quick,
    )


if __name__ == "__main__":
    main()
