"""Pools into batches: where the train pool's pixels live (device or host memory), uint8 pixels gathered by index
(or decoded by loader workers when the set is streamed), then converted, resized, augmented and normalised on
the device; and batched prediction over pool indices.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .augment import augment_batch
from .data import Pools
from .images import ImageFiles
from .recipe import two_logits
from .resources import device_memory, pool_fits


def as_tensor(a: np.ndarray) -> torch.Tensor:
    """Zero-copy view of a (possibly read-only, shared-memory) array; nothing ever writes to it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(a)


Pixels = torch.Tensor | ImageFiles  # an in-memory uint8 pool, or files decoded on demand


def pixels(a: np.ndarray | ImageFiles) -> Pixels:
    """A pool's pixels as the engine reads them: a zero-copy tensor, or the streamed files as they are."""
    return a if isinstance(a, ImageFiles) else as_tensor(a)


def take(x: Pixels, idx: torch.Tensor) -> torch.Tensor:
    """uint8 images at positions ``idx`` (decoded from files when ``x`` is streamed)."""
    if isinstance(x, ImageFiles):
        return torch.from_numpy(x[idx.cpu().numpy()])
    return x[idx.to(x.device)]


def channel_stats(x: Pixels, idx: np.ndarray, limit: int = 10_000) -> tuple[list[float], list[float]]:
    """Per-channel mean/std (0..1 scale) of the training images (a fixed subsample of at most ``limit``)."""
    if isinstance(x, ImageFiles):
        limit = min(limit, 2_000)  # each is a file decode; 2,000 pin a channel mean to ~0.1 %
    device = x.device if isinstance(x, torch.Tensor) else torch.device("cpu")
    sub = torch.as_tensor(idx[np.linspace(0, len(idx) - 1, min(limit, len(idx))).astype(np.int64)], device=device)
    # Sums in float64 over chunks of 256 images: a float copy of all 10,000 would be 6 GB at 224 px, per trial.
    s = torch.zeros(x.shape[1], dtype=torch.float64, device=device)
    s2 = torch.zeros_like(s)
    for i in range(0, len(sub), 256):
        xs = take(x, sub[i : i + 256]).double()
        s += xs.sum(dim=(0, 2, 3))
        s2 += xs.square().sum(dim=(0, 2, 3))
    n = len(sub) * x.shape[2] * x.shape[3]
    mean = s / n
    var = (s2 / n - mean.square()) * n / max(n - 1, 1)  # unbiased, as torch.std
    return (mean / 255).tolist(), (var.clamp_min(0).sqrt() / 255).clamp_min(1e-3).tolist()


def place_pool(pools: Pools, device: torch.device, gpu: float) -> tuple[Pixels, torch.Tensor]:
    """The train pool's pixels and labels where batches are gathered: device memory when the uint8 pool
    fits the trial's share of it (``resources.pool_fits``), else (shared) host memory, a copy per batch."""
    x, y = pixels(pools.train_x), as_tensor(pools.train_y)
    if device.type == "cuda" and isinstance(x, torch.Tensor) and pool_fits(x.numel(), gpu, *device_memory(device)):
        x, y = x.to(device), y.to(device)
    return x, y


class _FileBatches(torch.utils.data.Dataset):
    """Item i = pool position i; a loader worker decodes a whole batch of them in one call (``__getitems__``)."""

    def __init__(self, files: ImageFiles) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.files[int(i)])

    def __getitems__(self, idx: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.files[np.asarray(idx)])


class _PassOrder(torch.utils.data.Sampler):
    """The loader's batch sampler: the batches of the current pass (a training epoch, an evaluation), set
    before each pass. The loader — and its worker processes — last the trial; only this order changes."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.chunks)

    def __len__(self) -> int:
        return len(self.chunks)


def _whole_batch(xb: Any) -> Any:
    """Collation: ``__getitems__`` already returns the stacked batch."""
    return xb


class Batcher:
    """Turns pool indices into normalised float batches on the device.

    In-memory pools are gathered by index in this process (no loader workers: the copy is a
    memcpy). Streamed pools are decoded by ``workers`` DataLoader processes, a few batches ahead;
    the processes start on the first pass and persist until ``close()``.
    Either way the uint8 batch is converted, resized, augmented and normalised on the device.
    """

    def __init__(
        self,
        x: Pixels,
        y: torch.Tensor,
        size: int,
        mean: list[float],
        std: list[float],
        device: torch.device,
        channels_last: bool,
        workers: int = 0,
    ) -> None:
        self.x, self.y, self.size, self.device = x, y, size, device
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255
        self.channels_last = channels_last
        self.workers = workers
        self._order = _PassOrder()
        self._loader: torch.utils.data.DataLoader | None = None

    def finish(
        self, xb: torch.Tensor, aug: dict[str, Any] | None = None, g: torch.Generator | None = None
    ) -> torch.Tensor:
        """A uint8 batch (any device) -> float, resized, augmented, normalised, on the device."""
        xb = xb.to(self.device, non_blocking=True).float()
        if xb.shape[-1] != self.size or xb.shape[-2] != self.size:
            xb = F.interpolate(xb, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        if aug is not None:
            xb = augment_batch(xb, aug, g)
        xb = (xb - self.mean) / self.std
        if self.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        return xb

    def labels(self, idx: torch.Tensor) -> torch.Tensor:
        return self.y[idx.to(self.y.device)].to(self.device, non_blocking=True)

    def __call__(
        self, idx: torch.Tensor, aug: dict[str, Any] | None = None, g: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.finish(take(self.x, idx), aug, g), self.labels(idx)

    def _file_loader(self) -> torch.utils.data.DataLoader:
        if self._loader is None:
            assert isinstance(self.x, ImageFiles)  # the loader is for streamed sets only
            self._loader = torch.utils.data.DataLoader(
                _FileBatches(self.x),
                batch_sampler=self._order,
                collate_fn=_whole_batch,
                num_workers=self.workers,
                persistent_workers=self.workers > 0,
                pin_memory=self.device.type == "cuda",
                prefetch_factor=4 if self.workers else None,
                generator=torch.Generator().manual_seed(0),
            )  # its own: a loader draws a seed, which must not move
            # the global stream that dropout and the weights use
        return self._loader

    def batches(
        self, order: torch.Tensor, batch_size: int, aug: dict[str, Any] | None = None, g: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of ``order`` in order. Augmentation draws from ``g`` lazily, batch by batch, so the
        random stream is the same whether the pixels come from memory or from loader workers."""
        chunks = list(order.split(batch_size))
        if not isinstance(self.x, ImageFiles):
            for idx in chunks:
                yield self(idx, aug, g)
            return
        loader = self._file_loader()
        self._order.chunks = [idx.numpy() for idx in chunks]
        for i, xb in enumerate(loader):  # the loader runs to its end, so the next pass starts clean
            yield self.finish(xb, aug, g), self.labels(chunks[i])

    def close(self) -> None:
        """Stop the loader's worker processes (a no-op for in-memory pools)."""
        it = getattr(self._loader, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        self._loader = None


class TestTimeAveraged(nn.Module):
    """``train.tta``: a prediction that averages (float32) logits over views of the image. Every prediction of such
    a model goes through it: validation, test, tune-eval, the cost measured and the MLflow export.

    flip: the image and its mirror image. flip_shift: airbench94's (Jordan 2024): that mean for the image (weight
    1/2) and for the windows one pixel up-left and one pixel down-right of it, edges reflected (1/4 each): six passes.
    """

    def __init__(self, model: nn.Module, tta: str = "flip") -> None:
        super().__init__()
        self.model, self.tta = model, tta

    def _mirrored(self, x: torch.Tensor) -> torch.Tensor:
        return (self.model(x).float() + self.model(x.flip(-1)).float()) / 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views = self._mirrored(x)
        if self.tta == "flip":
            return views
        h, w = x.shape[-2:]
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")  # one pixel each side: shifted views keep their size
        shifted = (self._mirrored(padded[..., :h, :w]) + self._mirrored(padded[..., 2:, 2:])) / 2
        return (views + shifted) / 2


def predictor(model: nn.Module, tta: str) -> nn.Module:
    """``model`` as it predicts under ``train.tta`` (none: itself)."""
    return model if tta == "none" else TestTimeAveraged(model, tta)


@torch.no_grad()
def predict(
    model: nn.Module, batcher: Batcher, idx: np.ndarray, batch_size: int, autocast: bool, tta: str = "none"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32, on CPU) and labels for the pool indices ``idx``, predicted under ``tta`` (train.tta:
    ``predictor``)."""
    model.eval()
    net = predictor(model, tta)
    outs, ys = [], []
    for xb, yb in batcher.batches(torch.as_tensor(idx), batch_size):
        with torch.autocast(batcher.device.type, dtype=torch.bfloat16, enabled=autocast):
            outs.append(two_logits(net(xb).float()).cpu())
        ys.append(yb.cpu())
    if not outs:
        return torch.zeros(0), torch.zeros(0, dtype=torch.long)
    return torch.cat(outs), torch.cat(ys)
