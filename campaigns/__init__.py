"""Fault-injection and corruption campaigns that measure h5guard's guarantees.

``python -m campaigns NAME [--budget SECONDS] [--seed N]`` runs one campaign (or
``all``) and prints a table of figures; the exit code is 1 if any invariant broke.
Each campaign module has ``run(budget, seed) -> CampaignResult``.
"""

from __future__ import annotations

import importlib

from campaigns._common import CampaignResult, Row, render_notes, render_result, render_table

CAMPAIGNS = ("corruption", "crash", "ioerror", "concurrency", "fuzz")


def run_campaign(name: str, budget: float, seed: int = 0) -> CampaignResult:
    """Run the campaign ``name`` for about ``budget`` seconds."""
    if name not in CAMPAIGNS:
        raise ValueError(f"unknown campaign {name!r}; expected one of {', '.join(CAMPAIGNS)}")
    module = importlib.import_module(f"campaigns.{name}")
    result: CampaignResult = module.run(budget, seed)
    return result


__all__ = [
    "CAMPAIGNS",
    "CampaignResult",
    "Row",
    "render_notes",
    "render_result",
    "render_table",
    "run_campaign",
]
