"""The sampling plan of a run as config.json and dump-config record it: the grid the scheduler runs on,
computed without torch (schedulers/grids.py), so dump-config stays light."""

from __future__ import annotations

from typing import Any

from telefuser_cli.config.schema import RootConfig
from telefuser_cli.errors import UserError
from telefuser_cli.families import spec_of
from telefuser_cli.schedulers import dit_timesteps


def sampling_plan(settings: RootConfig) -> dict[str, Any]:
    """The main trajectory's timesteps, and what the family adds (a mixture of experts: steps per expert)."""
    pipeline = settings.pipeline
    solver = pipeline.sample_solver.value
    try:
        timesteps = dit_timesteps(
            solver, pipeline.num_inference_steps, pipeline.sigma_shift, pipeline.timesteps
        )
    except ValueError as error:
        raise UserError(f"pipeline.sample_solver / num_inference_steps / timesteps: {error}") from None
    plan: dict[str, Any] = {"timesteps": [round(float(t), 4) for t in timesteps]}
    plan.update(spec_of(settings.model.family).sampling_record(settings, timesteps))
    return plan
