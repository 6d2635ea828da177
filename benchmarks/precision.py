"""Training images/s in the arithmetic ``train.precision: auto`` chooses ÷ plain fp32 NCHW.

The plain CIFAR CNN (64/128/256: spaces/cnn.yaml's model until 2026-12-05, when it took fast_cnn; BENCHMARKS.md's
figures are of it), ResNet-18 (CIFAR stem) and the small ViT of spaces/vit.yaml at patch 4 (its until 2026-12-07),
one training step at a time on random 32 px images with the spec's batch size and optimizer, on this machine's
device with the threads a trial gets (2). ``auto`` times fp32 and bf16, NCHW and channels_last (trainables/arithmetic.py) and
keeps fp32 NCHW unless another is 10 % faster; where it keeps fp32 NCHW the ratio is 1 by construction.

Method (drift cancels): for each model, the choice is made first (as a run makes it, uncached); then k rounds of
(fp32 NCHW, chosen) steps alternating in one run, each arm timed over the same number of steps after warm-up;
ratio per round = chosen images/s ÷ the fp32 images/s of the same round; the figure is the median over rounds,
with min and max. The headline ``ratio`` is the CNN's.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import emit, parser  # noqa: E402

MODELS = {  # name: (create_model arguments, batch size, optimizer) as the shipped specs set them
    "cnn": ({"name": "cnn", "conv1": 64, "conv2": 128, "conv3": 256, "hidden": 256, "dropout": 0.2}, 256, "sgd"),
    "resnet18": ({"name": "resnet18", "stem": "cifar"}, 128, "sgd"),
    "vit": (
        {
            "name": "vit",
            "tokenizer": "conv",
            "pool": "seq",
            "patch_size": 4,
            "embed_dim": 128,
            "depth": 4,
            "num_heads": 4,
            "mlp_dim": 256,
            "dropout": 0.0,
        },
        128,
        "adamw",
    ),
}


def build(args: dict, device):
    import torch

    import trainables

    torch.manual_seed(0)
    kw = {k: v for k, v in args.items() if k != "name"}
    return trainables.create_model(args["name"], num_classes=10, in_chans=3, image_size=32, **kw).to(device)


def auto_choice(args: dict, batch: int, device) -> str:
    """What ``train.precision: auto`` picks for this model here, timed afresh (injected past the cache)."""
    from trainables.arithmetic import choose

    return choose(build(args, device), "auto", device, (batch, 3, 32, 32), cache=False).name


def steps_per_s(args: dict, batch: int, opt_name: str, arith: str, steps: int, device) -> float:
    import torch

    from trainables.arithmetic import parse

    model = build(args, device)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    autocast, channels_last = parse(arith)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = (
        torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
        if opt_name == "sgd"
        else torch.optim.AdamW(model.parameters(), lr=1e-3)
    )

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):  # kernel selection and allocator growth
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def main() -> None:
    args = parser(__doc__).parse_args()
    import torch

    from trainables.arithmetic import native_bf16
    from trainables.device import resolve_device

    torch.set_num_threads(2)
    device = resolve_device("auto")
    rounds, steps = (1, 1) if args.quick else (5, 8)
    models = {"cnn": MODELS["cnn"]} if args.quick else MODELS
    out = {}
    for name, (margs, batch, opt) in models.items():
        if args.quick:
            margs = {**margs, "conv1": 8, "conv2": 8, "conv3": 8, "hidden": 8}
            batch = 8
        chosen = auto_choice(margs, batch, device)
        fp32, rule = [], []
        for _ in range(rounds):
            fp32.append(steps_per_s(margs, batch, opt, "fp32", steps, device))
            rule.append(steps_per_s(margs, batch, opt, chosen, steps, device))
        ratios = [r / f for r, f in zip(rule, fp32)]
        out[name] = {
            "chosen": chosen,
            "fp32_nchw_images_per_s": fp32,
            "chosen_images_per_s": rule,
            "ratios": ratios,
            "ratio": statistics.median(ratios),
            "min": min(ratios),
            "max": max(ratios),
        }
        print(
            f"{name}: fp32 NCHW {statistics.median(fp32):,.0f} img/s, auto ({chosen}) {statistics.median(rule):,.0f} "
            f"img/s, "
            f"ratio {out[name]['ratio']:.2f} (min {out[name]['min']:.2f}, max {out[name]['max']:.2f}, "
            f"{rounds} rounds)",
            flush=True,
        )
    emit(
        "precision",
        {
            "ratio": out["cnn"]["ratio"],
            "native_bf16": native_bf16(device),
            "rounds": rounds,
            "steps": steps,
            "models": out,
        },
        args.quick,
    )


if __name__ == "__main__":
    main()
