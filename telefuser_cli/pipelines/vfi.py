"""Video frame interpolation (RIFE) of a decoded video: from the base fps to a target fps.

The output timeline: source frame i is shown at time i / base_fps and lasts 1 / base_fps, so the source
lasts F / base_fps seconds. Output frame k is the picture at time k / target_fps, for every k with
k / target_fps < F / base_fps:

    F' = ceil(F * target_fps / base_fps)

so a video written with F' frames at target_fps lasts exactly as long as the source whenever
F * target_fps / base_fps is a whole number (16 -> 32 and 16 -> 24 with an even F), and less than one
output frame longer otherwise. Output time k / target_fps is source position p = k * base_fps / target_fps:
frame floor(p) and the next one, at timestep p - floor(p). A whole p is a source frame, copied; positions
past the last source frame (the final output frames of the last source frame's display time) hold it.
For an integer ratio m this inserts m - 1 evenly spaced frames between each pair and holds the last
frame m times. Arithmetic is exact (fractions), so 16 -> 24 gives timesteps exactly 0, 2/3, 1/3, ...
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F

from telefuser_cli.models.rife import IFNet, size_multiple

PlanEntry = tuple[int, int, float]


def _fps(value: float, name: str) -> Fraction:
    # limit_denominator turns 23.976 (a binary float) into 2997/125 instead of a 50-bit fraction.
    fps = Fraction(value).limit_denominator(100_000)
    if fps <= 0:
        raise ValueError(f"{name}={value} must be positive")
    return fps


def output_frame_count(num_frames: int, base_fps: float, target_fps: float) -> int:
    """F' = ceil(F * target_fps / base_fps): the output frames inside the source's duration."""
    return math.ceil(num_frames * _fps(target_fps, "target_fps") / _fps(base_fps, "base_fps"))


def interpolation_plan(num_frames: int, base_fps: float, target_fps: float) -> list[PlanEntry]:
    """For each output frame: (i, j, t), the output is frame i blended toward frame j at timestep t.

    t == 0 (then j == i) means "copy source frame i": no network call. See the module docstring for
    the timeline; raises ValueError for fewer than one frame or a target below the base fps.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames={num_frames}: need at least one frame to interpolate")
    base, target = _fps(base_fps, "base_fps"), _fps(target_fps, "target_fps")
    if target < base:
        raise ValueError(
            f"target_fps={target_fps} is below base_fps={base_fps}; interpolation only adds frames"
        )
    plan: list[PlanEntry] = []
    for k in range(math.ceil(num_frames * target / base)):
        position = k * base / target
        i = math.floor(position)
        t = position - i
        if t == 0 or i >= num_frames - 1:
            last = min(i, num_frames - 1)
            plan.append((last, last, 0.0))
        else:
            plan.append((i, i + 1, float(t)))
    return plan


def network_calls(plan: list[PlanEntry]) -> int:
    """How many output frames need the network (the rest are copies)."""
    return sum(1 for i, j, t in plan if i != j and 0 < t < 1)


def _to_model(
    frames: torch.Tensor, device: torch.device, dtype: torch.dtype, pad: tuple[int, int]
) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> [B, 3, H + pad_h, W + pad_w] in [0, 1], zero padding right and bottom
    (as Practical-RIFE's inference_video pads)."""
    x = frames.to(device, non_blocking=True).permute(0, 3, 1, 2).to(dtype) / 255.0
    return F.pad(x, (0, pad[1], 0, pad[0])) if pad != (0, 0) else x


def interpolate(
    model: IFNet,
    frames: torch.Tensor | np.ndarray,
    base_fps: float,
    target_fps: float,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    chunk_size: int = 8,
    scale: float = 1.0,
    advance: Callable[[], None] | None = None,
) -> torch.Tensor | np.ndarray:
    """Interpolate a uint8 video [F, H, W, 3] from base_fps to target_fps -> uint8 [F', H, W, 3].

    model: an IFNet already on `device` (its weights' dtype is its run dtype); frames stay on the host
    and go to `device` `chunk_size` pairs at a time, converted to `dtype` there (float32 recommended:
    the network casts to its own dtype for the convolutions). Any H, W: frames are zero-padded to the
    multiple the scale list needs (64 at scale 1) and the result cropped back. Source frames are copied
    exactly. `scale` is RIFE's flow scale (scale_list = default / scale). `advance` is called once per
    chunk (``math.ceil(network_calls(plan) / chunk_size)`` times). Returns the input's type (tensor or
    ndarray). Values are rounded to the nearest integer (Practical-RIFE truncates).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be at least 1")
    video = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if video.dtype != torch.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [F, H, W, 3], got {video.dtype} {tuple(video.shape)}")
    video = video.cpu()
    _, h, w, _ = video.shape
    plan = interpolation_plan(video.shape[0], base_fps, target_fps)
    scale_list = model.scale_list(scale)
    m = size_multiple(scale_list)
    pad = (-h % m, -w % m)

    out = torch.empty((len(plan), h, w, 3), dtype=torch.uint8)
    pending: list[tuple[int, int, int, float]] = []
    for k, (i, j, t) in enumerate(plan):
        if i == j or t <= 0:
            out[k] = video[i]
        elif t >= 1:
            out[k] = video[j]
        else:
            pending.append((k, i, j, t))

    for start in range(0, len(pending), chunk_size):
        ks, i0, i1, ts = zip(*pending[start : start + chunk_size], strict=True)
        img0 = _to_model(video[list(i0)], device, dtype, pad)
        img1 = _to_model(video[list(i1)], device, dtype, pad)
        t = torch.tensor(ts, dtype=torch.float32, device=device)
        with torch.inference_mode():
            mid = model(img0, img1, t, scale_list)[:, :, :h, :w]
        out[list(ks)] = (mid * 255).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu()
        if advance is not None:
            advance()
    return out.numpy() if isinstance(frames, np.ndarray) else out
