"""Shared fixtures and Hypothesis profiles.

``HYPOTHESIS_PROFILE=ci`` (the default) keeps property tests short and deterministic;
``HYPOTHESIS_PROFILE=thorough`` runs many more examples for on-demand campaigns.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "thorough",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"


@pytest.fixture(scope="session")
def sandbox():  # type: ignore[no-untyped-def]
    """One checker pool for the whole session: start-up costs ~0.3 s per child."""
    from h5guard import Sandbox

    with Sandbox(workers=2, timeout=30) as box:
        yield box
