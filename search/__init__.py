"""Orchestration: study specs, search spaces, searchers, schedulers, tracking, export and the CLI.

Knows nothing about models or data; the trial side is passed in as a backend.
"""

from .spec._distributions import DISTRIBUTIONS
from .spec._files import dump_spec
from .spec._schema import SpecError
from .spec._space import grid_points, preview_configs, to_tune
from .spec._spec import load_spec, resolve, smoke_spec

__all__ = [
    "DISTRIBUTIONS",
    "SpecError",
    "dump_spec",
    "grid_points",
    "load_spec",
    "preview_configs",
    "resolve",
    "run_study",
    "smoke_spec",
    "to_tune",
]


def run_study(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201  (imports Ray lazily)
    from .run._runner import run_study as _run

    return _run(*args, **kwargs)
