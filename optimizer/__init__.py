"""layout-sweep: a parallel PyWake layout-optimization sweep on top of h5guard.

A client of h5guard's public API only; h5guard never imports this package.
"""

from __future__ import annotations

from optimizer.config import DEMO_SPEC, SpecError, SweepConfig, expand_spec, load_spec
from optimizer.engines import BatchResult, Engine, LocalEngine
from optimizer.results import RESULT_SCHEMA
from optimizer.sweep import RunResult, SweepError, SweepState, read_state, run_sweep

__all__ = [
    "DEMO_SPEC",
    "RESULT_SCHEMA",
    "BatchResult",
    "Engine",
    "LocalEngine",
    "RunResult",
    "SpecError",
    "SweepConfig",
    "SweepError",
    "SweepState",
    "expand_spec",
    "load_spec",
    "read_state",
    "run_sweep",
]
