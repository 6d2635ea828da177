"""A trial's share of the machine: memory cap, pool placement, GPU-hours, CPU request (no GPU needed)."""

from __future__ import annotations

import pytest

from search.run._runner import _budget
from trainables.resources import cpu_request, gpu_hours, memory_budget, memory_cap, pool_fits, trial_request

GB = 2**30


def test_memory_cap_is_the_fractional_share():
    assert memory_cap(0.25) == 0.25
    assert memory_cap(1) is None and memory_cap(2) is None and memory_cap(0) is None  # whole GPUs: no cap


def test_pool_placement_respects_the_per_process_cap():
    # 80 GB card, 70 GB free. A whole GPU: a 12 GB pool fits (under half of 70 GB).
    assert pool_fits(12 * GB, 1, free_bytes=70 * GB, total_bytes=80 * GB)
    # A quarter of it: the trial may hold 20 GB, so 12 GB is more than half of what it can allocate.
    assert memory_budget(0.25, 70 * GB, 80 * GB, 0) == 20 * GB
    assert not pool_fits(12 * GB, 0.25, free_bytes=70 * GB, total_bytes=80 * GB)
    assert pool_fits(9 * GB, 0.25, free_bytes=70 * GB, total_bytes=80 * GB)
    # What the process already reserved counts against its cap; the device's free memory still bounds it.
    assert not pool_fits(9 * GB, 0.25, free_bytes=70 * GB, total_bytes=80 * GB, reserved_bytes=4 * GB)
    assert not pool_fits(9 * GB, 0.25, free_bytes=10 * GB, total_bytes=80 * GB)
    assert memory_budget(0.25, 70 * GB, 80 * GB, 30 * GB) == 0.0


def test_gpu_hours_weigh_time_by_the_share_held():
    assert gpu_hours(3600, 0.25) == pytest.approx(0.25)
    assert gpu_hours(7200, 1) == pytest.approx(2.0)
    assert gpu_hours(3600, 0.25, on_gpu=False) == 0.0  # trained on CPU
    assert gpu_hours(3600, 0, on_gpu=True) == pytest.approx(1.0)  # outside Ray: the whole device


def test_search_budget_uses_the_same_rule():
    rows = [{"epochs": 2}, {"epochs": 3}]
    trials = [{"seconds": 1800}, {"seconds": 5400}]
    assert _budget(rows, trials, 0.25, gpu_hours)["gpu_hours"] == pytest.approx(gpu_hours(7200, 0.25)) == 0.5
    assert _budget(rows, trials, 0.0, gpu_hours)["gpu_hours"] == 0.0  # trials on CPU


def test_streamed_trials_ask_for_their_loader_processes():
    res = {"cpu": 2, "gpu": 0.5}
    assert trial_request(res, workers=4, streamed=True) == {"cpu": 6.0, "gpu": 0.5}
    assert trial_request(res, workers=4, streamed=False) == {"cpu": 2.0, "gpu": 0.5}  # in memory: no workers
    # Never more than the cluster has (the trial would wait forever), never less than resources.cpu.
    assert cpu_request(2, 4, True, cluster_cpus=4) == 4.0
    assert cpu_request(2, 4, True, cluster_cpus=1) == 2.0
