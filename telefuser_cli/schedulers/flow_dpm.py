"""DPM-Solver++ (2M, midpoint, data prediction) on the official Wan ``sample_solver='dpm++'`` grid.

Official setup (``text2video.py``): ``FlowDPMSolverMultistepScheduler(num_train_timesteps=1000, shift=1)``
then ``retrieve_timesteps(scheduler, sigmas=get_sampling_sigmas(N, shift))``, where
``get_sampling_sigmas = shift(linspace(1, 0, N + 1)[:N])`` in float64 (from 1, unlike UniPC's 0.999).
``set_timesteps(sigmas=...)`` re-applies its own shift (1, an exact identity), appends a final 0 and hands
the DiT INTEGER timesteps ``int64(sigma * 1000)`` (truncated): 1000, 937, 833, 625 for 4 steps at shift 5.
diffusers' ``DPMSolverMultistepScheduler(use_flow_sigmas=True)`` cannot take this grid through
``set_timesteps`` (its flow grid is ``shift(linspace(1, 1/1000, N + 1))`` flipped, without sigma 1).

Step rule of the official solver (order 2, lower_order_final, final sigma "zero"): first order at step 0
(no history) and at the last step (which returns the x0 prediction exactly); second-order multistep
midpoint otherwise. With ``lambda = log((1 - sigma) / sigma)`` the first step starts at lambda = -inf
(sigma 1); the official float32 code then gets ``r0 = inf`` and a zero second-order term at step 1, and
the closed forms below give the same. Coefficients are computed once in float64 from the float32 sigmas
(the official code does it per step in float32): results agree to float32 round-off.
"""

from __future__ import annotations

import math

from torch import Tensor

from .base import FlowScheduler
from .grids import grid, log_snr


def _dpm_coefficients(s_prev: float | None, s_cur: float, s_next: float) -> tuple[float, float, float]:
    """(a, b, c): ``x_next = a * x + b * m_cur + c * (m_cur - m_prev)``; c = 0 for first order (s_prev None).

    DPM-Solver++ in flow form: alpha = 1 - sigma; a = sigma_next / sigma_cur, b = alpha_next * (1 - e^{-h});
    midpoint second order adds ``b / 2 * D1`` with ``D1 = (m_cur - m_prev) / r0``, ``r0 = h_prev / h``.
    """
    lam_cur, lam_next = log_snr(s_cur), log_snr(s_next)
    h = lam_next - lam_cur
    a = s_next / s_cur
    b = (1.0 - s_next) * -math.expm1(-h)
    if s_prev is None:
        return a, b, 0.0
    r0 = (lam_cur - log_snr(s_prev)) / h
    return a, b, 0.5 * b / r0


class FlowDPMScheduler(FlowScheduler):
    """Official Wan DPM++: dpmsolver++, order 2, midpoint, flow prediction.

    timesteps: [N] float32 holding the official integers ``int64(sigma * 1000)``.
    """

    def __init__(self, num_steps: int, shift: float, num_train_timesteps: int = 1000) -> None:
        super().__init__(*grid("dpm++", num_steps, shift, None, num_train_timesteps))
        s, n = self._sig, num_steps
        self._coef = [
            _dpm_coefficients(s[i - 1] if 0 < i < n - 1 else None, s[i], s[i + 1]) for i in range(n)
        ]
        if not all(math.isfinite(v) for step in self._coef for v in step):
            raise ValueError(
                f"DPM++ grid for num_steps={num_steps}, shift={shift} is degenerate in float32: {s}"
            )
        self._m_prev: Tensor | None = None

    def step(self, velocity: Tensor, i: int, sample: Tensor) -> Tensor:
        """x: [B, C, F, H, W] (any shape) at sigmas[i] -> x at sigmas[i + 1], float32."""
        self._advance(i)
        x = sample.float()
        m = x - self._sig[i] * velocity.float()  # x0 prediction
        a, b, c = self._coef[i]
        x_next = a * x + b * m
        if c != 0.0:
            x_next = x_next + c * (m - self._m_prev)
        self._m_prev = m
        return x_next
