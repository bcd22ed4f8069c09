"""Reading one tensor's shape while inferring an architecture from a checkpoint's ``{key: shape}``.

The architecture readers (``*_arch.py``) index shapes (``shape[1]`` is the input width, ...): a file whose
tensor has another rank would end in an IndexError far from the cause. ``shape_of`` checks the rank first
and raises ValueError naming the key, which the loaders turn into one message naming the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def shape_of(shapes: Mapping[str, Any], key: str, ndim: int | None, layout: str) -> tuple[int, ...]:
    """The shape of ``key`` (``shapes`` maps key -> shape, or a tensor standing for its shape).

    ``layout`` names what the file should be ("a Wan DiT checkpoint"); ``ndim`` is the rank the architecture
    reader relies on (None: any). ValueError when the key is missing or has another rank.
    """
    if key not in shapes:
        raise ValueError(f"not {layout}: key {key!r} is missing")
    value = shapes[key]
    shape = tuple(int(size) for size in getattr(value, "shape", value))
    if ndim is not None and len(shape) != ndim:
        raise ValueError(
            f"{key} has shape {shape} ({len(shape)} dimensions); {layout} has {ndim} dimensions there"
        )
    return shape
