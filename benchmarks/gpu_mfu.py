"""Model FLOP utilisation: achieved training FLOP/s ÷ the device's peak dense bf16 FLOP/s.

ResNet-18 (CIFAR stem) training on 32x32 images, and ViT-B/16 fine-tuning at 224x224, in bf16
autocast with channels_last for the CNN (what the engine's timed choice is expected to give on a GPU; MFU is
defined against the bf16 peak either way). FLOPs per step are counted
by torch.utils.flop_counter (forward + backward). Targets on an H100: >= 30 % and >= 25 %.
On a machine without a known peak (CPU), ``ratio`` is null: the figure is pending a GPU run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import emit, parser  # noqa: E402

# Dense bf16 tensor-core peaks, FLOP/s (vendor data sheets, without sparsity).
PEAKS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


def peak_flops(name: str) -> float | None:
    return next((v for k, v in PEAKS.items() if k in name), None)


def mfu_case(model, batch: int, size: int, steps: int, device, channels_last: bool) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, size, size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    amp = device.type == "cuda"

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    for _ in range(3):
        step()
    sync = torch.cuda.synchronize if amp else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    dt = (time.perf_counter() - t0) / steps
    return {"batch": batch, "image_size": size, "flops_per_step": flops, "step_s": dt, "achieved_flops": flops / dt}


def main() -> None:
    args = parser(__doc__).parse_args()
    import torch

    import trainables

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = peak_flops(name)
    quick = args.quick or not cuda
    rn = trainables.create_model("resnet18", num_classes=10, in_chans=3, image_size=32, stem="cifar")
    vit_name = "timm/vit_tiny_patch16_224" if quick else "timm/vit_base_patch16_224"
    vit = trainables.create_model(vit_name, num_classes=10, in_chans=3, image_size=224)
    cases = {
        "resnet18_cifar": mfu_case(rn, 8 if quick else 512, 32, 2 if quick else 50, device, channels_last=cuda),
        vit_name.split("/")[1]: mfu_case(
            vit, 2 if quick else 128, 224, 1 if quick else 30, device, channels_last=False
        ),
    }
    for c in cases.values():
        c["mfu"] = c["achieved_flops"] / peak if peak else None
    vals = [c["mfu"] for c in cases.values() if c["mfu"] is not None]
    emit(
        "gpu_mfu",
        {
            "device_name": name,
            "peak_flops": peak,
            "cases": cases,
            "ratio": min(vals) if vals else None,
            "status": "measured" if vals else "pending: needs a GPU",
            "target": "resnet18 >= 0.30, vit_base >= 0.25 on an H100",
        },
        args.quick,
    )


if __name__ == "__main__":
    main()
