"""How a run computes — bf16 autocast or fp32, channels_last or NCHW — chosen by timing them on this device.

Which is fastest depends on the device, not on a flag one can read: on a 2-core AMD EPYC with avx512_bf16 and no
AMX, bf16 + channels_last trains the CIFAR CNN 3.0x faster than fp32 (benchmarks/precision.py), where the older
rule ("bf16 only with AMX or CUDA") kept it in fp32. So each candidate trains a few steps of the run's own model
at its input shape, and the fastest wins; the first candidate (NCHW at the chosen precision, fp32 under ``auto``)
stays unless another beats it by ``MIN_GAIN``, so the choice is never slower than fp32 beyond timing noise.

``train.precision`` names the candidates: ``auto`` both precisions, ``fp32`` or ``bf16`` that one; layouts are
timed only for convolution-heavy models. A measurement is cached per machine, torch version, thread count, model
family (its registry name, not its widths), trainable share, input shape and the source of its layers
(``CACHE_DIR/arithmetic.json``), and taken under a file lock: a study measures once and its trials, whatever
widths they search, compute alike. Every run records what it chose and the timings behind it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import inspect
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import folders

FP32, BF16, CHANNELS_LAST = "fp32", "bf16", "+channels_last"
MIN_GAIN = 1.10  # x the first candidate's images/s another needs to replace it: step timings on 2 busy cores
# spread by a few per cent, and bf16 rounds differently, so it must pay clearly
TIMING_BATCH = 32  # images per timed step on a CPU at most: the candidates' ratio holds at small batches, the cost
# does not (a GPU times the run's own batch: small ones are kernel-launch bound there)
TIMED_STEPS = 1  # per candidate and round, after one untimed step (kernel selection, bf16 weight reorders)
ROUNDS = 3  # candidates timed in turn, round after round; each one's median: drift on a busy machine cancels
MAX_ROUNDS = 9  # rounds go on (to this many) until the last ROUNDS each pick what the medians pick: a burst of
# load over two of three rounds (another run's processes ending, 2026-12-07) made bf16 NCHW look 1.25x faster than
# bf16 + channels_last, which every other timing put 1.3x ahead, and the cache kept that choice for the machine
MAX_STEP_S = 3.0  # s: a first step slower than this skips timing (a large model on a CPU): the hardware rule
# A run times the candidates only when the gain that MIN_GAIN requires of a winner (1 - 1/1.10: 9 % of the run)
# would repay the images timing trains; a shorter run (a smoke run, a test's few steps of a ConvNeXt-B, where timing
# took longer than the run) takes the hardware rule without timing.
REPAYS = 1 - 1 / MIN_GAIN

Measure = Callable[[str], float]  # candidate -> images/s


@dataclass(frozen=True)
class Arithmetic:
    """What a run computes with, and why."""

    autocast: bool  # bf16 autocast
    channels_last: bool
    images_per_s: dict[str, float] = field(default_factory=dict)  # per timed candidate ({} when not timed)
    source: str = "measured"  # measured | cached | rule (too slow to time) | short-run rule | fixed (one candidate)

    @property
    def name(self) -> str:
        return (BF16 if self.autocast else FP32) + (CHANNELS_LAST if self.channels_last else "")

    def record(self) -> dict[str, Any]:
        return {"arithmetic": self.name, "source": self.source, "images_per_s": dict(self.images_per_s)}


def native_bf16(device: torch.device) -> bool:
    """bf16 matrix units in hardware: CUDA, or a CPU with AMX tiles (the fallback rule when timing is too slow)."""
    if device.type == "cuda":
        return True
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private, but the only probe torch offers
    return device.type == "cpu" and bool(amx and amx())


def convolutional(model: nn.Module) -> bool:
    """The model has convolutions, whose layout may pay (timing decides: a parameter count does not tell, the
    CIFAR CNN holds most of its parameters in a Linear layer and spends most of its time in convolutions)."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def candidates(precision: str, conv: bool) -> list[str]:
    """The arithmetic ``train.precision`` allows, the one to beat first."""
    precisions = [FP32, BF16] if precision == "auto" else [precision]
    return [p + layout for p in precisions for layout in (["", CHANNELS_LAST] if conv else [""])]


def pick(images_per_s: dict[str, float], min_gain: float = MIN_GAIN) -> str:
    """The fastest candidate, or the first unless the fastest beats it by ``min_gain``."""
    first = next(iter(images_per_s))
    best = max(images_per_s, key=lambda k: images_per_s[k])
    return best if images_per_s[best] >= min_gain * images_per_s[first] else first


def parse(name: str) -> tuple[bool, bool]:
    """(autocast, channels_last) of a candidate's name."""
    return name.startswith(BF16), name.endswith(CHANNELS_LAST)


def choose(
    model: nn.Module,
    precision: str,
    device: torch.device,
    input_shape: tuple[int, ...],
    family: str = "",
    measure: Measure | None = None,
    cache: bool = True,
    run_images: int | None = None,
) -> Arithmetic:
    """The arithmetic a run of ``model`` (registry name ``family``) on batches of ``input_shape`` trains with
    (``measure``: injected timings, never cached; ``cache``: reuse and keep this machine's measurement;
    ``run_images``: the images the run trains on, epochs included, which timing must be worth)."""
    options = candidates(precision, convolutional(model))
    if len(options) == 1:
        return Arithmetic(*parse(options[0]), source="fixed")
    if not cache or measure is not None:
        return _measured(options, precision, device, measure or time_candidates(model, device, input_shape))
    key = cache_key(model, family, device, input_shape, options)
    with _locked():  # concurrent trials: the first measures (alone), the others read what it found
        cached = _read_cache().get(key)
        if cached == {}:  # too slow to time, found before: the rule again, without a slow step
            return _rule(options, precision, device, source="cached rule")
        if cached is not None and set(cached) == set(options):
            return Arithmetic(*parse(pick({k: cached[k] for k in options})), images_per_s=cached, source="cached")
        if run_images is not None and run_images * REPAYS < timing_images(options, input_shape, device):
            return _rule(options, precision, device, source="short-run rule")  # not cached: a longer run times
        chosen = _measured(options, precision, device, time_candidates(model, device, input_shape))
        _write_cache(key, chosen.images_per_s)
    return chosen


def _measured(options: list[str], precision: str, device: torch.device, timer: Measure) -> Arithmetic:
    runs: dict[str, list[float]] = {option: [] for option in options}
    while True:
        for option in options:
            ips = timer(option)
            if ips <= 0:  # too slow to time: the hardware rule, as before timing existed
                return _rule(options, precision, device)
            runs[option].append(ips)
        timings = {option: statistics.median(v) for option, v in runs.items()}
        chosen = pick(timings)
        if settled(runs, chosen) or len(runs[options[0]]) >= MAX_ROUNDS:
            return Arithmetic(*parse(chosen), images_per_s=timings)


def settled(runs: dict[str, list[float]], chosen: str) -> bool:
    """Whether each of the last ``ROUNDS`` rounds, on its own, picks ``chosen`` (what the medians pick)."""
    rounds = len(next(iter(runs.values())))
    return rounds >= ROUNDS and all(
        pick({option: v[r] for option, v in runs.items()}) == chosen for r in range(rounds - ROUNDS, rounds)
    )


def _rule(options: list[str], precision: str, device: torch.device, source: str = "rule") -> Arithmetic:
    """bf16 (and channels_last for convolutions) where the device has bf16 matrix units, as before timing."""
    bf16 = precision == BF16 or (precision == "auto" and native_bf16(device))
    return Arithmetic(bf16, native_bf16(device) and CHANNELS_LAST in options[-1], source=source)


def timing_images(options: list[str], input_shape: tuple[int, ...], device: torch.device) -> int:
    """Images timing all ``options`` trains through (forward and backward), its untimed steps included, when
    its first ``ROUNDS`` agree (the usual case; rounds that disagree take up to ``MAX_ROUNDS``)."""
    return len(options) * ROUNDS * (1 + TIMED_STEPS) * timing_shape(input_shape, device)[0]


def timing_shape(input_shape: tuple[int, ...], device: torch.device) -> tuple[int, ...]:
    batch = input_shape[0] if device.type == "cuda" else max(1, min(TIMING_BATCH, input_shape[0]))
    return (batch, *input_shape[1:])


def time_candidates(model: nn.Module, device: torch.device, input_shape: tuple[int, ...]) -> Measure:
    """Images/s of forward + backward of ``model`` on random input in each candidate's arithmetic. The model's
    weights are untouched (no optimizer step), its buffers (BatchNorm statistics) put back, its gradients dropped,
    and the global random streams left as they were: the run that follows is the run it would have been."""
    shape = timing_shape(input_shape, device)
    batch = shape[0]

    def measure(option: str) -> float:
        autocast, channels_last = parse(option)
        buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
        was_training = model.training
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            x = torch.randn(shape, device=device)
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            model.to(memory_format=fmt)
            x = x.contiguous(memory_format=fmt)
            model.train()

            def step() -> float:
                t0 = time.perf_counter()
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    out = model(x)
                if out.requires_grad:  # a wholly frozen model times its forward pass
                    out.float().logsumexp(1).mean().backward()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                return time.perf_counter() - t0

            try:
                if step() > MAX_STEP_S:
                    return 0.0
                seconds = sum(step() for _ in range(TIMED_STEPS))
            finally:
                model.to(memory_format=torch.contiguous_format)
                model.zero_grad(set_to_none=True)
                model.train(was_training)
                with torch.no_grad():
                    for n, b in model.named_buffers():
                        b.copy_(buffers[n])
        return batch * TIMED_STEPS / max(seconds, 1e-9)

    return measure


def _device_id(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"cpu {cpu} {torch.backends.cpu.get_cpu_capability()}"


def cache_key(
    model: nn.Module, family: str, device: torch.device, input_shape: tuple[int, ...], options: list[str]
) -> str:
    """Machine, torch, threads, the model family, the share of its parameters that trains (a frozen backbone
    costs far less backward) and the batch it is timed at (a searched batch size does not split the choice)."""
    total = sum(p.numel() for p in model.parameters()) or 1
    trains = round(sum(p.numel() for p in model.parameters() if p.requires_grad) / total, 1)
    return json.dumps(
        [_device_id(device), torch.__version__, torch.get_num_threads(), family or type(model).__name__, trains]
        + [list(timing_shape(input_shape, device)), options, code_digest(model)]
    )


def code_digest(model: nn.Module) -> str:
    """A digest of the source of the model's layers outside torch (torch's own: its version, above), so that a
    changed layer is timed again: the ViT's CPU attention, rewritten on 2026-12-07, turned bf16 from 0.8x fp32's
    speed to about 2x, which a measurement cached before it would have hidden."""
    torch_dir = str(Path(torch.__file__).parent)
    files = set()
    for layer in {type(module) for module in model.modules()}:  # each class once, not each of its instances
        try:
            source = inspect.getsourcefile(layer)
        except TypeError:  # a class without a file (built in)
            continue
        if source and not source.startswith(torch_dir):
            files.add(source)
    digest = hashlib.sha256()
    for source in sorted(files):
        with contextlib.suppress(OSError):
            digest.update(Path(source).read_bytes())
    return digest.hexdigest()[:16]


def _cache_file() -> Path:
    return folders.CACHE_DIR / "arithmetic.json"


@contextlib.contextmanager
def _locked() -> Any:
    """Hold the cache's lock file (an unwritable cache: no lock, each run measures for itself)."""
    try:
        _cache_file().parent.mkdir(parents=True, exist_ok=True)
        lock = open(_cache_file().with_suffix(".lock"), "a")
    except OSError:
        yield
        return
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError:  # a file system without locks (some NFS mounts): measure without one
            pass
        yield


def _read_cache() -> dict[str, dict[str, float]]:
    try:
        data = json.loads(_cache_file().read_text())
    except (OSError, ValueError):  # none yet, or damaged: measure again
        return {}
    if not isinstance(data, dict):
        return {}
    return {  # entries of numbers only: anything else is measured again
        k: v
        for k, v in data.items()
        if isinstance(v, dict) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v.values())
    }


def _write_cache(key: str, timings: dict[str, float]) -> None:
    """Add one measurement; written whole and renamed, so a concurrent reader never sees half a file (two
    writers at once: one entry may be lost and measured again)."""
    path = _cache_file()
    data = {**_read_cache(), key: timings}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".arithmetic-")
    except OSError:  # a read-only cache: the run measured, it only cannot remember
        return
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
    except OSError:  # a full disk: no half-written cache left behind
        Path(tmp).unlink(missing_ok=True)
