"""A trial killed by Ray's memory monitor must end that trial, not the study.

Ray Tune (2.60) hands the failure of a trial's actor task to its actor manager, which knows two kinds:
the actor died (``RayActorError``) or the task raised (``RayTaskError``). When Ray's memory monitor kills
the trial's process the task fails with ``ray.exceptions.OutOfMemoryError``, which is neither, so the
manager re-raises it ("Caught unexpected exception") out of ``Tuner.fit()``: the whole study ends in a
page of Ray's text. The process did die, so the error is passed on as what it is, the actor's death,
keeping Ray's message: Tune ends that trial as failed, the study goes on, and the status rule
(``_export.trial_status``) reads the message as ``oom``.
"""

from __future__ import annotations

from typing import Any


def trials_survive_memory_kills() -> None:
    """Patch Tune's actor manager once per process (a no-op on a Ray without that manager)."""
    try:
        from ray.air.execution._internal.actor_manager import RayActorManager
        from ray.exceptions import OutOfMemoryError, RayActorError
    except ImportError:
        return
    failed = getattr(RayActorManager, "_actor_task_failed", None)
    if failed is None or getattr(failed, "memory_kill_is_actor_death", False):
        return

    def _actor_task_failed(self: Any, tracked_actor_task: Any, exception: Exception) -> Any:
        if isinstance(exception, OutOfMemoryError):
            exception = RayActorError(error_msg=f"ray.exceptions.OutOfMemoryError: {exception}")
        return failed(self, tracked_actor_task, exception)

    _actor_task_failed.memory_kill_is_actor_death = True  # type: ignore[attr-defined]
    RayActorManager._actor_task_failed = _actor_task_failed  # type: ignore[method-assign]  # the patch is the point
