"""Images/s of a real trial (through Tune: reporting, checkpointing, augmentation) ÷ a bare PyTorch loop.

Same model, batch size, device and data size. Target: ratio >= 0.95. The first epoch of each is
warm-up and is not counted.
"""

from __future__ import annotations

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
            idx = perm[i:i + batch]
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
                loss = loss_fn(model(x[idx]).float(), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return len(x) / (sum(times[1:]) / len(times[1:]))


def main() -> None:
    args = parser(__doc__).parse_args()
    import pandas as pd
    import torch

    import trainables
    from search import resolve, run_study
    from trainables.data import make_splits
    from trainables.engine import as_tensor, model_kwargs

    cuda = torch.cuda.is_available()
    n, epochs = (2000, 3) if args.quick else (20000, 6)
    model = ({"name": "resnet18", "stem": "cifar"} if cuda and not args.quick else
             {"name": "cnn", "conv1": 32, "conv2": 64, "conv3": 128, "hidden": 256})
    with tempfile.TemporaryDirectory() as tmp:
        spec = resolve({
            "experiment": {"name": "throughput", "output_dir": f"{tmp}/runs"},
            "data": {"dataset": "synthetic", "image_size": 32, "num_classes": 10, "num_samples": n,
                     "val_fraction": 0.02, "test_fraction": 0.02, "augment": {"hflip": 0.5, "pad_crop": 4}},
            "model": model,
            "train": {"epochs": epochs, "batch_size": 256},
            "resources": {"cpu": 2 if not cuda else 4, "gpu": 1 if cuda else 0},
            "tracking": {"mlflow_uri": f"sqlite:///{tmp}/mlflow.db"},
        }, trainables)
        pools = trainables.prepare(spec)
        idx = make_splits(pools, spec["data"]).train
        dev = torch.device("cuda" if cuda else "cpu")

        def bare() -> float:
            torch.manual_seed(0)
            torch.set_num_threads(int(spec["resources"]["cpu"]))
            x = as_tensor(pools.train_x[idx]).to(dev).float().div(255).sub(0.5).div(0.25)
            y = as_tensor(pools.train_y[idx]).to(dev)
            net = trainables.create_model(spec["model"]["name"], num_classes=10, in_chans=3, image_size=32,
                                          **model_kwargs(spec["model"])).to(dev)
            if cuda:
                net = net.to(memory_format=torch.channels_last)
                x = x.contiguous(memory_format=torch.channels_last)
            return bare_loop(net, x, y, 256, epochs, autocast=cuda)

        # The bare loop runs before and after the trial and is averaged: on a shared or thermally
        # throttled machine, speed drifts by ~10 % over minutes, which one ordering would bias.
        bare_before = bare()
        res = run_study(spec, trainables, file="throughput", log=lambda *_: None)
        bare_after = bare()
        prog = pd.read_csv(next(res.out_dir.glob("trial_*")) / "progress.csv")
        # Wall time per epoch as Ray saw it: training, validation, reporting and checkpointing.
        tune_ips = len(idx) / prog["time_this_iter_s"].iloc[1:].mean()
        bare_ips = (bare_before + bare_after) / 2
    print(f"tune {tune_ips:.0f} img/s; bare {bare_before:.0f} before, {bare_after:.0f} after")
    emit("throughput", {"model": spec["model"]["name"], "images": len(idx), "epochs": epochs,
                        "tune_images_per_s": tune_ips, "bare_images_per_s": bare_ips,
                        "bare_images_per_s_before_after": [bare_before, bare_after],
                        "ratio": tune_ips / bare_ips, "target": ">= 0.95"}, args.quick)


if __name__ == "__main__":
    main()
