"""Causal 3-D convolution of the video VAEs, and the frame cache that streams it.

Every 3x3x3 convolution of the Wan and HunyuanVideo VAEs is causal in time: a frame needs only itself and
the two frames before it. The two families pad differently (``pad_mode``): Wan puts zeros before the first
frame and around each frame, and runs one frame at a time from a cache; HunyuanVideo replicates the first
frame and the frame edges, and runs the whole clip at once.

:class:`CausalCache` carries the past frames across the chunks of one encode or decode (one slot per call
site, in call order); :class:`PastFrames` is one convolution's two-frame ring.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from telefuser_cli.ops.cpu_kernels import add_conv2d_


class PastFrames:
    """The last two input frames of one causal convolution, zeros before the first frame.

    A two-frame ring: frame t-2 sits in slot ``count % 2`` and frame t overwrites it once the taps that
    see t-2 have run, so past frames are never copied (see ``CausalConv3d.step``).
    """

    def __init__(self, like: Tensor) -> None:
        b, c, h, w = like.shape
        self.frames = torch.empty((b, c, 2, h, w), dtype=like.dtype, device=like.device,
                                  memory_format=torch.channels_last_3d).zero_()  # fmt: skip
        self.count = 0


class CausalCache:
    """Per-call-site state of one encode or decode, one slot per call site in call order.

    The same object is passed through every chunk; ``start_chunk()`` rewinds the cursor before each
    chunk. A slot holds ``None`` before its first use, then what its call site stored: the
    :class:`PastFrames` of a causal convolution, or a tensor of past frames (temporal resampling).
    """

    def __init__(self) -> None:
        self._slots: list[PastFrames | Tensor | None] = []
        self._pos = 0

    def start_chunk(self) -> None:
        self._pos = 0

    def past(self) -> PastFrames | Tensor | None:
        """The slot at the cursor (does not advance)."""
        return self._slots[self._pos] if self._pos < len(self._slots) else None

    def update(self, value: PastFrames | Tensor) -> None:
        """Store ``value`` in the slot at the cursor and advance."""
        if self._pos == len(self._slots):
            self._slots.append(value)
        else:
            self._slots[self._pos] = value
        self._pos += 1


def memory_format_of(x: Tensor) -> torch.memory_format:
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format


class CausalConv3d(nn.Conv3d):
    """3-D convolution causal in time: it sees only the current and the past frames.

    The time padding is ``2 * padding[0]`` frames, all in front. ``pad_mode="zeros"`` (Wan): the past
    frames come from the cache or are zeros, the spatial padding is the convolution's own zero padding, and
    a temporal kernel of 3 runs one frame at a time from a :class:`PastFrames` ring (``step``).
    ``pad_mode="replicate"`` (HunyuanVideo): the first frame and the frame edges are replicated and the whole
    clip goes through one convolution (no cache). A temporal kernel of 1 is a plain convolution.
    """

    def __init__(
        self, in_dim: int, out_dim: int, kernel_size, stride=1, padding=0, pad_mode: str = "zeros"
    ) -> None:
        pt, ph, pw = (padding,) * 3 if isinstance(padding, int) else padding
        if pad_mode not in ("zeros", "replicate"):
            raise ValueError(f"pad_mode={pad_mode!r} is not one of 'zeros', 'replicate'")
        conv_padding = (0, ph, pw) if pad_mode == "zeros" else 0
        super().__init__(in_dim, out_dim, kernel_size, stride=stride, padding=conv_padding)
        self.pad_mode = pad_mode
        self.time_pad = 2 * pt
        # F.pad order: (left, right, top, bottom, front, back).
        self.replicate_pad = (pw, pw, ph, ph, self.time_pad, 0)
        if self.time_pad and (self.kernel_size[0], self.time_pad, self.stride) != (3, 2, (1, 1, 1)):
            raise ValueError(
                "a causally padded CausalConv3d needs a temporal kernel of 3, padding 1 and stride 1, got "
                f"kernel_size={self.kernel_size}, padding={padding}, stride={self.stride}"
            )

    def forward(self, x: Tensor) -> Tensor:
        """No past frames (zeros or the first frame in front). x: [B, C, T, H, W] -> [B, C', T', H', W']."""
        if self.pad_mode == "replicate":
            return super().forward(F.pad(x, self.replicate_pad, mode="replicate"))
        if self.time_pad == 0:
            return super().forward(x)
        return self.step(x, CausalCache())

    def step(
        self, x: Tensor, cache: CausalCache, act: Callable[[Tensor, Tensor], None] | None = None
    ) -> Tensor:
        """One chunk, frame by frame, with the past frames in ``cache`` (temporal kernel 3, zeros padding
        only); ``act(x, out)`` writes the conv input (default: a copy of x) straight into the ring.

        x: [B, C, T, H, W] -> [B, C', T, H', W'].
        """
        assert self.pad_mode == "zeros", "step streams zero-padded convolutions only"
        past = cache.past()
        if past is None:
            past = PastFrames(x[:, :, 0])
        cache.update(past)
        first = self._frame(x[:, :, 0], past, act).unsqueeze(2)
        if x.shape[2] == 1:
            return first
        out = torch.empty((*first.shape[:2], x.shape[2], *first.shape[3:]), dtype=first.dtype,
                          device=first.device, memory_format=torch.channels_last_3d)  # fmt: skip
        out[:, :, :1].copy_(first)
        for i in range(1, x.shape[2]):
            out[:, :, i].copy_(self._frame(x[:, :, i], past, act))
        return out

    def _frame(self, x: Tensor, past: PastFrames, act: Callable[[Tensor, Tensor], None] | None) -> Tensor:
        """x: [B, C, H, W] (frame t) -> [B, C', H', W']; advances ``past`` to hold frames t-1 and t."""
        oldest = past.count % 2  # the slot of frame t-2 (zeros while t < 2)
        taps = self._taps()
        y = None
        if past.count:
            # Tap 0 sees frame t-2, tap 1 frame t-1, wherever the ring holds them.
            y = F.conv2d(past.frames[:, :, oldest], taps[0], self.bias, 1, self.padding[1:])
            y = add_conv2d_(y, past.frames[:, :, 1 - oldest], taps[1], self.padding[1:])
        slot = past.frames[:, :, oldest]
        if act is None:
            slot.copy_(x)
        else:
            act(x, slot)
        past.count += 1
        if y is None:
            # The first frame: both past frames are zeros, only the last tap contributes.
            return F.conv2d(slot, taps[2], self.bias, 1, self.padding[1:])
        return add_conv2d_(y, slot, taps[2], self.padding[1:])

    def _taps(self) -> tuple[Tensor, Tensor, Tensor]:
        """The kernel's three temporal taps [O, I, kh, kw], each channels-last contiguous, as oneDNN takes the
        weight of a convolution over channels-last frames (otherwise it reorders the weight on every call:
        for a 1024-channel layer, a 36 MiB copy per frame and tap). The weight is re-laid out once, in place:
        its shape and values stay as loaded, only its strides change (no second copy of the layer)."""
        weight = self.weight
        if not weight.permute(2, 0, 3, 4, 1).is_contiguous():
            weight.data = weight.data.permute(2, 0, 3, 4, 1).contiguous().permute(1, 4, 0, 2, 3)
        return weight[:, :, 0], weight[:, :, 1], weight[:, :, 2]
