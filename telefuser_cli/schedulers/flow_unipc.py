"""UniPC (bh2, predict-x0, order 2, lower order at the final step) on the official Wan grid.

Official setup (Wan2.1 / Wan2.2 ``text2video.py``): ``FlowUniPCMultistepScheduler(num_train_timesteps=1000,
shift=1, use_dynamic_shifting=False).set_timesteps(N, shift=shift)``, which gives
``sigma = shift(linspace(float32(1 - 1/1000), 0, N + 1)[:N])`` (float64, i.e. from 0.999, not from 1), a
final sigma 0, and hands the DiT INTEGER timesteps ``int64(sigma * 1000)`` (truncated): 999, 937, 833, 624
for 4 steps at shift 5. diffusers' ``UniPCMultistepScheduler(use_flow_sigmas=True, flow_shift=s)`` defaults to
``shift(linspace(1, 1/1000, N + 1)[:-1])`` instead; it follows the official grid when given
``set_timesteps(sigmas=<our unshifted grid>)`` with ``flow_shift=shift`` or our shifted grid with
``flow_shift=1``.

The math is UniPC's (Zhao et al. 2023) in the data-prediction form, with ``lambda = log((1 - sigma) / sigma)``
and ``h = lambda_next - lambda_cur``: a predictor (UniP) gives x_{i+1}; at the next call the new x0 prediction
corrects that x_{i+1} (UniC) before the next predictor runs. Like the official step, the x0 prediction is
taken from the *uncorrected* sample, and the sample returned by the last step is the predictor's output.
The per-step coefficients (including the 2x2 solve for the order-2 corrector) are computed once here in
float64; the official code computes the same numbers per step in float32, so results agree to float32
round-off, not bit for bit.
"""

from __future__ import annotations

import math

from torch import Tensor

from .base import FlowScheduler
from .grids import grid, log_snr

_ORDER = 2


def _predictor(s_cur: float, s_next: float, s_prev: float | None) -> tuple[float, float, float]:
    """UniP coefficients (a, b, c): ``x_next = a * x + b * m_cur + c * (m_prev - m_cur)``.

    s_prev is None for a first-order step (c = 0). Order 2 uses rho_p = 1/2, as the official code does.
    """
    lam_cur, lam_next = log_snr(s_cur), log_snr(s_next)
    h = lam_next - lam_cur
    alpha_next = 1.0 - s_next
    phi1 = math.expm1(-h)  # h * phi_1(h) of the x0 form; B(h) of bh2 is the same number
    a, b = s_next / s_cur, -alpha_next * phi1
    if s_prev is None:
        return a, b, 0.0
    rk = (log_snr(s_prev) - lam_cur) / h
    return a, b, -alpha_next * phi1 * 0.5 / rk


def _corrector(s_prev2: float | None, s_prev: float, s_cur: float) -> tuple[float, float, float, float]:
    """UniC coefficients (a, b, ct, c1) that refine x at s_cur after the predictor step s_prev -> s_cur:

    ``x_cur = a * x_prev + b * m_prev + ct * (m_cur - m_prev) + c1 * (m_prev2 - m_prev)``, where x_prev is the
    (corrected) sample the predictor started from and m_* are x0 predictions at those sigmas. s_prev2 is None
    when that predictor step was first order (UniC-1, rho_c = 1/2; c1 = 0).
    """
    lam_prev, lam_cur = log_snr(s_prev), log_snr(s_cur)
    h = lam_cur - lam_prev
    alpha_cur = 1.0 - s_cur
    hh = -h
    phi1 = math.expm1(hh)
    bh = phi1  # bh2: B(h) = e^{-h} - 1
    a, b = s_cur / s_prev, -alpha_cur * phi1
    if s_prev2 is None:
        return a, b, -alpha_cur * bh * 0.5, 0.0
    rk = (log_snr(s_prev2) - lam_prev) / h
    # b_k = k! * h*phi_{k+1}(h) / B(h) for k = 1, 2 (the official recurrence), then solve
    # [[1, 1], [rk, 1]] @ [rho_0, rho_1] = [b_1, b_2] in closed form.
    hphi2 = phi1 / hh - 1.0
    b1 = hphi2 / bh
    b2 = (hphi2 / hh - 0.5) * 2.0 / bh
    rho0 = (b1 - b2) / (1.0 - rk)
    rho1 = b1 - rho0
    return a, b, -alpha_cur * bh * rho1, -alpha_cur * bh * rho0 / rk


class FlowUniPCScheduler(FlowScheduler):
    """Official Wan UniPC: order 2, bh2, x0 prediction from flow velocity, lower order at the final step.

    timesteps: [N] float32 holding the official integers ``int64(sigma * 1000)``.
    """

    def __init__(self, num_steps: int, shift: float, num_train_timesteps: int = 1000) -> None:
        super().__init__(*grid("unipc", num_steps, shift, None, num_train_timesteps))
        s, n = self._sig, num_steps
        # Predictor order at step i: 1 at the first step (no history) and at the last (lower_order_final).
        orders = [min(_ORDER, n - i, i + 1) for i in range(n)]
        self._pred = [_predictor(s[i], s[i + 1], s[i - 1] if orders[i] == 2 else None) for i in range(n)]
        # Corrector at step i >= 1 has the order of the predictor step that produced x_i.
        self._corr = [None] + [
            _corrector(s[i - 2] if orders[i - 1] == 2 else None, s[i - 1], s[i]) for i in range(1, n)
        ]
        coefs = [v for step in self._pred + self._corr[1:] for v in step]
        if not all(math.isfinite(c) for c in coefs):
            raise ValueError(
                f"UniPC grid for num_steps={num_steps}, shift={shift} is degenerate in float32: {s}"
            )
        self._x_prev: Tensor | None = None  # the (corrected) sample the last predictor started from
        self._m_prev: Tensor | None = None  # x0 predictions of the last two steps
        self._m_prev2: Tensor | None = None

    def step(self, velocity: Tensor, i: int, sample: Tensor) -> Tensor:
        """x: [B, C, F, H, W] (any shape) at sigmas[i] -> x at sigmas[i + 1], float32."""
        self._advance(i)
        x = sample.float()
        m = x - self._sig[i] * velocity.float()  # x0 prediction, from the uncorrected sample
        if i > 0:
            a, b, ct, c1 = self._corr[i]
            x = a * self._x_prev + b * self._m_prev + ct * (m - self._m_prev)
            if c1 != 0.0:
                x = x + c1 * (self._m_prev2 - self._m_prev)
        a, b, c = self._pred[i]
        x_next = a * x + b * m
        if c != 0.0:
            x_next = x_next + c * (self._m_prev - m)
        self._x_prev, self._m_prev2, self._m_prev = x, self._m_prev, m
        return x_next
