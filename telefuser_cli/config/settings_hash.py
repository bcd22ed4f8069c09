"""The settings hash: one sha256 naming what determines a job's video.

It is the sha256 of the canonical JSON (keys sorted, no spaces, UTF-8, enums by name) of:

- `model`: the whole model entry (weights root, component files, facts) except its `description`;
- `pipeline`: the whole inference layer (sampler, steps, guidance, shift, frames, fps, negative prompt,
  per-component runtime: dtype, attention, offload, compile, LoRA, parallel degrees);
- `user`: prompt, negative prompt, seed (the seed the job runs with: a drawn `-1` is resolved first),
  resolution, aspect ratio, image paths, target fps; not `prompt_file` / `prompt_line`, which only say
  where the prompt text came from (a job replayed from its record hashes the same);
- `output`: what the job writes (video quality, latents, intermediate videos, frame strip), not
  `overwrite`, which is a permission about the destination.

Never part of it: timestamps, timings, device, package versions, `launcher` (how many processes ran it),
or anything else about how the run went. File contents (weights, input images) are named by path, not
hashed. config.json records it as `settings_sha256`, the video's metadata carries it under the same
name, and `generate -m --resume` compares it to decide that a finished job is the one asked for.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from telefuser_cli.config.schema import RootConfig

# Keys of each layer that do not change the video a job writes (see the module docstring).
_LEFT_OUT = {
    "model": ("description",),
    "user": ("prompt_file", "prompt_line"),
    "output": ("overwrite",),
}


def settings_document(settings: RootConfig) -> dict[str, Any]:
    """The part of the settings the hash covers, as plain data."""
    from telefuser_cli.config.dump import to_plain

    document = {}
    for layer in ("model", "pipeline", "user", "output"):
        values = to_plain(getattr(settings, layer))
        document[layer] = {k: v for k, v in values.items() if k not in _LEFT_OUT.get(layer, ())}
    return document


def settings_sha256(settings: RootConfig) -> str:
    """sha256 (hex) of the canonical JSON of `settings_document(settings)`."""
    text = json.dumps(
        settings_document(settings),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
