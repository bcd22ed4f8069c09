"""The sampling plan of a run (timesteps, and which expert runs each step), without loading weights."""

from __future__ import annotations

from typing import Any

from telefuser_cli.config.schema import PipelineConfig
from telefuser_cli.errors import UserError
from telefuser_cli.pipelines.wan import expert_schedule
from telefuser_cli.schedulers import FlowScheduler, make_scheduler

EXPERT_NAMES = ("high_noise", "low_noise")


def build_scheduler(pipeline: PipelineConfig) -> FlowScheduler:
    try:
        return make_scheduler(
            pipeline.sample_solver, pipeline.num_inference_steps, pipeline.sigma_shift, pipeline.timesteps
        )
    except ValueError as error:
        raise UserError(f"pipeline.sample_solver / num_inference_steps / timesteps: {error}") from None


def step_schedule(pipeline: PipelineConfig, moe: bool, scheduler: FlowScheduler) -> list[int]:
    if not moe:
        return [0] * scheduler.num_steps
    return expert_schedule(scheduler.timesteps, pipeline.boundary, pipeline.boundary_step_index)


def sampling_plan(pipeline: PipelineConfig, moe: bool) -> dict[str, Any]:
    """What config.json and dump-config record about sampling."""
    scheduler = build_scheduler(pipeline)
    plan: dict[str, Any] = {"timesteps": [round(float(t), 4) for t in scheduler.timesteps]}
    if moe:
        schedule = step_schedule(pipeline, moe, scheduler)
        plan["expert_steps"] = {name: schedule.count(i) for i, name in enumerate(EXPERT_NAMES)}
    return plan
