"""The sampling plan of a run as config.json and dump-config record it, from the scheduler that runs."""

from __future__ import annotations

from typing import Any

from telefuser_cli.config.schema import RootConfig
from telefuser_cli.families import spec_of
from telefuser_cli.families.base import build_scheduler


def sampling_plan(settings: RootConfig) -> dict[str, Any]:
    """The main trajectory's timesteps, and what the family adds (a mixture of experts: steps per expert)."""
    timesteps = build_scheduler(settings.pipeline).timesteps.tolist()
    plan: dict[str, Any] = {"timesteps": [round(float(t), 4) for t in timesteps]}
    plan.update(spec_of(settings.model.family).sampling_record(settings, timesteps))
    return plan
