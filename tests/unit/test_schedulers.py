"""Flow-matching schedulers: official Wan grids, and trajectories against diffusers' solvers.

diffusers is the independent reference for the step math. Each diffusers scheduler is handed OUR grid
(diffusers' own defaults are different grids, see test_official_grids_are_not_diffusers_defaults), both are
driven by the same deterministic velocity model, and the final samples must agree to float32 round-off.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from telefuser_cli.schedulers import FlowScheduler, make_scheduler, shift_sigmas

pytestmark = pytest.mark.numeric

diffusers = pytest.importorskip("diffusers")

STEPS_SHIFTS = [(1, 5.0), (2, 3.0), (4, 5.0), (7, 1.0), (12, 8.0), (40, 12.0)]
REL_TOL = 1e-5


# ----------------------------------------------------------------------------- helpers


def _velocity_model(seed: int):
    """v(x, t): a fixed random channel mix scaled by t, a t-dependent bias, and a mild nonlinearity."""
    g = torch.Generator().manual_seed(seed)
    c = 4
    w = torch.randn(c, c, generator=g) / c**0.5
    bias = torch.randn(1, c, 3, 4, 4, generator=g)

    def v(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = t.float() / 1000.0
        return (
            torch.einsum("ij,bj...->bi...", w, x) * (0.5 + tt)
            + torch.cos(3 * tt) * bias
            + 0.1 * torch.tanh(x)
        )

    x_init = torch.randn(1, c, 3, 4, 4, generator=g)
    return v, x_init


def _run_both(ours: FlowScheduler, ref, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the same trajectory through ours and a diffusers scheduler; the velocity sees our timestep."""
    v, x = _velocity_model(seed)
    ref.set_begin_index(0)  # step by position, not by looking timesteps up
    xa, xb = x.clone(), x.clone()
    for i, t in enumerate(ours.timesteps):
        xa = ours.step(v(xa, t), i, xa)
        xb = ref.step(v(xb, t), ref.timesteps[i], xb, return_dict=False)[0]
    return xa, xb


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def _hand_grid(start: float, n: int, shift: float) -> list[float]:
    """shift(linspace(start, 0, n + 1)[:n]) in plain Python floats."""
    return [shift * s / (1 + (shift - 1) * s) for s in (start * (1 - k / n) for k in range(n))]


# ----------------------------------------------------------------------------- grids


def test_shift_sigmas_formula() -> None:
    s = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    assert torch.allclose(shift_sigmas(s, 3.0), 3 * s / (1 + 2 * s), rtol=0, atol=1e-15)
    assert torch.equal(shift_sigmas(s, 1.0), s)


def test_unipc_official_integer_timesteps() -> None:
    sched = make_scheduler("unipc", 4, 5.0)
    assert sched.timesteps.dtype == torch.float32
    assert sched.timesteps.tolist() == [999.0, 937.0, 833.0, 624.0]
    assert sched.sigmas.shape == (5,) and sched.sigmas[-1].item() == 0.0


def test_dpm_official_integer_timesteps() -> None:
    sched = make_scheduler("dpm++", 4, 5.0)
    assert sched.timesteps.tolist() == [1000.0, 937.0, 833.0, 625.0]
    assert sched.sigmas[0].item() == 1.0 and sched.sigmas[-1].item() == 0.0


@pytest.mark.parametrize("steps,shift", STEPS_SHIFTS)
def test_grids_match_hand_formulas(steps: int, shift: float) -> None:
    unipc, dpm, euler = (make_scheduler(n, steps, shift) for n in ("unipc", "dpm++", "euler"))
    sigma_max = float(np.float32(1 - 1 / 1000))  # the official UniPC starts at float32(0.999)
    for sched, start in ((unipc, sigma_max), (dpm, 1.0), (euler, 1.0)):
        want = torch.tensor(_hand_grid(start, steps, shift) + [0.0], dtype=torch.float32)
        assert sched.sigmas.dtype == torch.float32 and sched.sigmas.shape == (steps + 1,)
        torch.testing.assert_close(sched.sigmas, want, rtol=2e-7, atol=0)
    # Integer timesteps: the float64 sigma * 1000, truncated (before the float32 rounding of the sigmas,
    # which can cross an integer: 12 steps at shift 8 give sigma 0.96 -> 960, float32(0.96) * 1000 -> 959.99).
    for sched, start in ((unipc, sigma_max), (dpm, 1.0)):
        assert sched.timesteps.tolist() == [
            float(math.floor(s * 1000)) for s in _hand_grid(start, steps, shift)
        ]
    torch.testing.assert_close(euler.timesteps, euler.sigmas[:-1] * 1000, rtol=0, atol=0)


def test_official_grids_are_not_diffusers_defaults() -> None:
    """Why the grids are passed explicitly: diffusers' defaults (same shift) are other grids."""
    d_unipc = diffusers.UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0
    )
    d_unipc.set_timesteps(4)
    assert not torch.allclose(d_unipc.sigmas, make_scheduler("unipc", 4, 5.0).sigmas, atol=1e-4)
    d_euler = diffusers.FlowMatchEulerDiscreteScheduler(shift=5.0)
    d_euler.set_timesteps(4)
    assert not torch.allclose(d_euler.sigmas, make_scheduler("euler", 4, 5.0).sigmas, atol=1e-4)


def test_euler_explicit_timesteps_lightx2v_mapping() -> None:
    ts = [1000, 750, 500, 250]
    shifted = make_scheduler("euler", 40, 5.0, timesteps=ts)  # num_steps is replaced by len(timesteps)
    want = [5 * (t / 1000) / (1 + 4 * (t / 1000)) for t in ts] + [0.0]
    torch.testing.assert_close(shifted.sigmas, torch.tensor(want, dtype=torch.float32), rtol=0, atol=0)
    assert shifted.timesteps.tolist() == pytest.approx([1000.0, 937.5, 833.3333, 625.0], rel=1e-7)
    plain = make_scheduler("euler", 4, 1.0, timesteps=ts)
    assert plain.sigmas.tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert plain.timesteps.tolist() == [1000.0, 750.0, 500.0, 250.0]


# ----------------------------------------------------------------------------- trajectories vs diffusers


@pytest.mark.parametrize("steps,shift", STEPS_SHIFTS)
def test_unipc_trajectory_matches_diffusers(steps: int, shift: float) -> None:
    """diffusers' UniPCMultistepScheduler takes our shifted grid via set_timesteps(sigmas=...), flow_shift=1."""
    ours = make_scheduler("unipc", steps, shift)
    ref = diffusers.UniPCMultistepScheduler(
        num_train_timesteps=1000,
        solver_order=2,
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=1.0,
        predict_x0=True,
        solver_type="bh2",
        lower_order_final=True,
        final_sigmas_type="zero",
    )
    ref.set_timesteps(sigmas=ours.sigmas[:-1].numpy().astype(np.float64))
    assert torch.equal(ref.sigmas, ours.sigmas)
    xa, xb = _run_both(ours, ref, seed=steps)
    assert xa.dtype == torch.float32
    assert _rel_err(xa, xb) < REL_TOL


# diffusers' own DPM set_timesteps trips a numpy-2 deprecation inside it; not ours to fix.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
@pytest.mark.parametrize("steps,shift", STEPS_SHIFTS)
def test_dpm_trajectory_matches_diffusers(steps: int, shift: float) -> None:
    """diffusers' DPMSolverMultistepScheduler has no ``sigmas=`` and its flow grid never contains sigma 1,
    so after set_timesteps(N) its ``sigmas`` and ``timesteps`` attributes are set to our grid explicitly."""
    ours = make_scheduler("dpm++", steps, shift)
    ref = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=1000,
        solver_order=2,
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=1.0,
        algorithm_type="dpmsolver++",
        solver_type="midpoint",
        lower_order_final=True,
        final_sigmas_type="zero",
    )
    ref.set_timesteps(steps)
    ref.sigmas = ours.sigmas.clone()
    ref.timesteps = ours.timesteps.long()
    xa, xb = _run_both(ours, ref, seed=100 + steps)
    assert _rel_err(xa, xb) < REL_TOL


@pytest.mark.parametrize("steps,shift", STEPS_SHIFTS)
def test_euler_trajectory_matches_diffusers(steps: int, shift: float) -> None:
    ours = make_scheduler("euler", steps, shift)
    ref = diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    ref.set_timesteps(sigmas=ours.sigmas[:-1].tolist())
    assert torch.equal(ref.sigmas, ours.sigmas) and torch.equal(ref.timesteps, ours.timesteps)
    xa, xb = _run_both(ours, ref, seed=200 + steps)
    assert _rel_err(xa, xb) < REL_TOL


def test_euler_explicit_timesteps_trajectory_matches_diffusers() -> None:
    """diffusers given the unshifted t/1000 as sigmas and shift=5 applies the same shift (in float32)."""
    ts = [1000, 750, 500, 250]
    ours = make_scheduler("euler", 4, 5.0, timesteps=ts)
    ref = diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=5.0)
    ref.set_timesteps(sigmas=[t / 1000 for t in ts])
    torch.testing.assert_close(ref.sigmas, ours.sigmas, rtol=2e-7, atol=0)
    xa, xb = _run_both(ours, ref, seed=7)
    assert _rel_err(xa, xb) < REL_TOL


# ----------------------------------------------------------------------------- behaviour and errors


@pytest.mark.parametrize("name", ["unipc", "dpm++", "euler"])
def test_step_dtype_and_no_host_sync(name: str) -> None:
    sched = make_scheduler(name, 3, 5.0)
    x = torch.randn(1, 2, 1, 2, 2)
    out = sched.step(torch.randn_like(x).bfloat16(), 0, x)
    assert out.dtype == torch.float32 and out.shape == x.shape
    # A meta tensor has no data: any .item() / host sync inside step would raise here.
    meta = make_scheduler(name, 3, 5.0)
    xm = torch.empty(1, 2, 1, 2, 2, device="meta")
    for i in range(3):
        xm = meta.step(torch.empty_like(xm), i, xm)
    assert xm.device.type == "meta"


@pytest.mark.parametrize("name", ["unipc", "dpm++", "euler"])
def test_single_step_lands_on_x0_prediction(name: str) -> None:
    """With one step every solver returns x - sigma_0 * v (the last step is first order to sigma 0)."""
    sched = make_scheduler(name, 1, 5.0)
    x, v = torch.randn(2, 3), torch.randn(2, 3)
    torch.testing.assert_close(sched.step(v, 0, x), x - sched.sigmas[0] * v)


def test_steps_must_be_taken_in_order() -> None:
    sched = make_scheduler("unipc", 4, 5.0)
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="expected step index 0"):
        sched.step(x, 1, x)
    sched.step(x, 0, x)
    with pytest.raises(ValueError, match="expected step index 1"):
        sched.step(x, 0, x)


def test_unknown_scheduler_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"'ddim'.*dpm\+\+, euler, unipc"):
        make_scheduler("ddim", 4, 5.0)


@pytest.mark.parametrize("name", ["unipc", "dpm++", "euler"])
@pytest.mark.parametrize("steps", [0, -3])
def test_num_steps_below_one_is_an_error(name: str, steps: int) -> None:
    with pytest.raises(ValueError, match="num_steps"):
        make_scheduler(name, steps, 5.0)


@pytest.mark.parametrize("shift", [0.0, -1.0, float("nan")])
def test_bad_shift_is_an_error(shift: float) -> None:
    with pytest.raises(ValueError, match="shift"):
        make_scheduler("euler", 4, shift)


@pytest.mark.parametrize("name", ["unipc", "dpm++"])
def test_explicit_timesteps_refused_for_multistep_solvers(name: str) -> None:
    with pytest.raises(ValueError, match="only supported by the 'euler'"):
        make_scheduler(name, 4, 5.0, timesteps=[1000, 750, 500, 250])


@pytest.mark.parametrize("ts", [[], [750, 1000], [1000, 1000], [1001, 500], [500, 0]])
def test_bad_explicit_timesteps_are_errors(ts: list[int]) -> None:
    with pytest.raises(ValueError, match="timesteps"):
        make_scheduler("euler", 4, 5.0, timesteps=ts)
