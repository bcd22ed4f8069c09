"""`telefuser keys`: every configuration key with its type, its default for a model or recipe, and what it means.

A key's description is the `# comment` written directly above its field in config/schema.py, read from
that file's source at run time, so it is written once, beside the field. Fields that have no such comment
yet take theirs from WRITTEN below (keyed by class and field, so that one text serves every component's
runtime settings); a comment added in schema.py replaces the entry here, which can then go.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import functools
import io
import json
import tokenize
import types
import typing
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from telefuser_cli.config import schema
from telefuser_cli.config.schema import RootConfig

SECTIONS = tuple(field.name for field in dataclasses.fields(RootConfig))
# Comments that are instructions to tools, not descriptions.
_PRAGMAS = ("fmt:", "noqa", "type:", "pragma")
# Descriptions of the schema fields without a comment in config/schema.py: "Class.field" -> text.
WRITTEN = {
    "ModelConfig.name": "The entry's name, as in model=NAME.",
    "ModelConfig.description": "One line shown by `telefuser list`.",
    "ModelConfig.root": (
        "The folder holding the weights; component paths are relative to it. The packaged entries look "
        "under $TELEFUSER_MODEL_ROOT (default ~/models)."
    ),
    "ModelConfig.family": "The model family of the weights: it decides the loaders and the pipeline.",
    "ModelConfig.task": (
        "What the weights do: t2v text-to-video, i2v image-to-video, flf2v first and last frame to video,"
        " ti2v text and image to video."
    ),
    "ModelConfig.distill": "Distilled weights (fewer steps, or no guidance).",
    "ModelConfig.moe": "A mixture of two experts, a high-noise and a low-noise DiT (dit_high, dit_low).",
    "ModelConfig.quant": "Storage precision of the DiT weights; checked against the files.",
    "ModelConfig.flow_type": "flow_match, or meanflow for the step-distilled HunyuanVideo 1.5.",
    "ModelConfig.dit_high": "Mixture of experts: the high-noise expert's DiT file(s).",
    "ModelConfig.dit_low": "Mixture of experts: the low-noise expert's DiT file(s).",
    "ModelConfig.text_encoder": (
        "The text encoder's weights (Wan: UMT5 .pth; HunyuanVideo 1.5: the Qwen2.5-VL folder)."
    ),
    "ModelConfig.tokenizer": "The tokenizer's folder.",
    "ModelConfig.vae": "The VAE's weights (Wan: .pth; HunyuanVideo 1.5: the vae/ folder).",
    "ModelConfig.clip": "Wan2.1 image-to-video: the CLIP image encoder's weights.",
    "ModelConfig.vision_encoder": "HunyuanVideo 1.5 image-to-video: the SigLIP image encoder's folder.",
    "ModelConfig.dit_sr": "HunyuanVideo 1.5: the super-resolution transformer, for pipeline.enable_sr.",
    "ModelConfig.upsampler": "HunyuanVideo 1.5: the latent upsampler of the super-resolution stage.",
    "PipelineConfig.description": "One line shown by `telefuser list`.",
    "PipelineConfig.dit_high_config": (
        "Mixture of experts: the high-noise expert's runtime (follows dit_config unless set)."
    ),
    "PipelineConfig.dit_low_config": (
        "Mixture of experts: the low-noise expert's runtime (follows dit_config unless set)."
    ),
    "PipelineConfig.text_encoding_config": "The text encoder's runtime.",
    "PipelineConfig.vae_config": "The VAE's runtime.",
    "PipelineConfig.clip_config": "The image encoder's runtime (image-to-video).",
    "PipelineConfig.sample_solver": "The sampler.",
    "PipelineConfig.num_inference_steps": "Denoising steps (more: slower, usually finer).",
    "PipelineConfig.cfg_scale_high": "Mixture of experts: the high-noise expert's guidance scale (1 = none).",
    "PipelineConfig.cfg_scale_low": "Mixture of experts: the low-noise expert's guidance scale (1 = none).",
    "PipelineConfig.sigma_shift": (
        "Shift of the flow-matching noise schedule; higher spends more steps at high noise."
    ),
    "PipelineConfig.boundary": (
        "Mixture of experts: the high-noise expert runs while the timestep t >= boundary x 1000."
    ),
    "PipelineConfig.num_frames": "Frames to generate, of the form 4k+1.",
    "PipelineConfig.fps": "Frame rate of the generated frames.",
    "PipelineConfig.negative_prompt": (
        "The pipeline's default negative prompt, used after user.negative_prompt."
    ),
    "PipelineConfig.tile_size": "VAE tile [height, width] in latent pixels (pipeline.tiled).",
    "PipelineConfig.tile_stride": (
        "Step between VAE tiles, [height, width] in latent pixels (pipeline.tiled)."
    ),
    "PipelineConfig.target_fps": "Frame rate to interpolate to (pipeline.enable_vfi); user.target_fps wins.",
    "PipelineConfig.vfi_config": "The frame interpolation (RIFE) model's runtime.",
    "PipelineConfig.vfi_chunk_size": "Frame pairs interpolated per RIFE call.",
    "PipelineConfig.sr_resolution": (
        "Output resolution of the super-resolution stage: 720p or 1080p (as model.dit_sr)."
    ),
    "PipelineConfig.sr_steps": "Denoising steps of the super-resolution stage.",
    "PipelineConfig.sr_shift": "Sigma shift of the super-resolution stage.",
    "PipelineConfig.sr_cfg_scale": "Guidance scale of the super-resolution stage (1 = none).",
    "PipelineConfig.lq_noise_strength": (
        "Noise mixed into the upsampled latents before the super-resolution stage: (1 - s) x latents + s "
        "x noise, s in [0, 1]."
    ),
    "PipelineConfig.save_pre_sr_video": "Also write the base video, before super-resolution.",
    "ModelRuntimeConfig.device_type": "Where the component runs; auto: a GPU when there is one.",
    "ModelRuntimeConfig.device_id": "Which GPU (cuda:N).",
    "ModelRuntimeConfig.lora_configs": (
        "LoRA files merged into the DiT before it runs: a list of {path, strength}."
    ),
    "ModelRuntimeConfig.torch_dtype": "Precision the component computes in.",
    "ModelRuntimeConfig.compile": "Regional torch.compile of the DiT's transformer blocks.",
    "OffloadConfig.offload_type": (
        "Where the weights wait between uses: on the device, in host memory per model (MODEL_CPU_OFFLOAD)"
        " or per block (SEQUENTIAL_CPU_OFFLOAD); no-ops without a GPU."
    ),
    "AttentionConfig.attn_impl": (
        "Attention kernel; AUTO picks the fastest installed one for the device; FLASH_ATTN_2/3 and "
        "SAGE_ATTN need their packages."
    ),
    "ParallelConfig.cfg_degree": "CFG parallelism: the two guidance passes on two ranks (1 or 2).",
    "ParallelConfig.sp_ulysses_degree": (
        "Ulysses sequence parallelism (all-to-all over heads); must divide the head count."
    ),
    "ParallelConfig.sp_ring_degree": "Ring-attention sequence parallelism.",
    "ParallelConfig.dp_degree": "Not available in this version: must stay 1.",
    "ParallelConfig.pp_degree": "Not available in this version: must stay 1.",
    "ParallelConfig.tp_degree": "Not available in this version: must stay 1.",
    "ParallelConfig.enable_fsdp": "Not available in this version: must stay false.",
    "UserConfig.prompt": "What the video shows (prompt=...; taken literally, commas included).",
    "UserConfig.negative_prompt": "What to avoid; the pipeline's default negative prompt follows it.",
    "UserConfig.aspect_ratio": "Shape of a named resolution (480p, 720p, 1080p).",
    "UserConfig.input_image": "The image to animate (image-to-video models).",
    "UserConfig.end_image": "The last frame (first-and-last-frame models).",
    "OutputConfig.save_latents": "Also write the final latents (latents.safetensors).",
}
# A default wider than this many terminal columns (a default negative prompt) is shortened on screen.
MAX_DEFAULT = 60


@dataclass(frozen=True)
class Key:
    path: str  # dotted, as an override names it: pipeline.dit_config.offload_config.offload_type
    type: str
    default: str
    description: str
    fact: bool = False  # bound to the weights: set by choosing another model entry
    choices: tuple[str, ...] = ()  # an enum's allowed values


def _full_line_comments(source: str) -> dict[int, str]:
    """Line number -> text of each comment that is alone on its line."""
    comments, code_lines = {}, set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
        elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            code_lines.update(range(token.start[0], token.end[0] + 1))
    return {line: text for line, text in comments.items() if line not in code_lines}


def field_comments(source: str) -> dict[tuple[str, str], str]:
    """(class name, field name) -> the comment lines directly above the field, joined into one text."""
    comments = _full_line_comments(source)
    found = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        for statement in node.body:
            if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
                continue
            lines, number = [], statement.lineno - 1
            while number in comments:
                lines.insert(0, comments[number])
                number -= 1
            lines = [line for line in lines if not line.startswith(_PRAGMAS)]
            if lines:
                found[(node.name, statement.target.id)] = " ".join(lines)
    return found


def schema_comments() -> dict[tuple[str, str], str]:
    """The descriptions written in config/schema.py; none where its source is not shipped."""
    try:
        return field_comments(Path(schema.__file__).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, tokenize.TokenError):
        return {}


def descriptions() -> dict[tuple[str, str], str]:
    """Every description: schema.py's comments, WRITTEN where a field has none."""
    written = {tuple(key.split(".")): text for key, text in WRITTEN.items()}
    return {**written, **schema_comments()}


@functools.cache
def schema_key_types() -> dict[str, Any]:
    """Every leaf key of the schema (`pipeline.dit_config.compile`) -> its type, in schema order."""

    def walk(node: type, prefix: str) -> Iterator[tuple[str, Any]]:
        for name, hint in typing.get_type_hints(node).items():
            inner, _ = unwrap_optional(hint)
            path = f"{prefix}.{name}" if prefix else name
            if dataclasses.is_dataclass(inner):
                yield from walk(inner, path)
            else:
                yield path, inner

    return dict(walk(RootConfig, ""))


def unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """(the type inside `X | None`, whether None is allowed)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return args[0], len(args) < len(typing.get_args(hint))
    return hint, False


def _enum(hint: Any) -> type[enum.Enum] | None:
    inner, _ = unwrap_optional(hint)
    return inner if isinstance(inner, type) and issubclass(inner, enum.Enum) else None


def type_name(hint: Any) -> str:
    inner, optional = unwrap_optional(hint)
    if _enum(inner):
        text = "enum"
    elif typing.get_origin(inner) in (list, dict):
        text = (
            f"{typing.get_origin(inner).__name__}[{', '.join(type_name(a) for a in typing.get_args(inner))}]"
        )
    else:
        text = getattr(inner, "__name__", str(inner))
    return f"{text} | null" if optional else text


def show_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"  # as an override or a YAML file writes it
    if isinstance(value, enum.Enum):
        return value.name
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, list | dict):
        text = json.dumps(
            value, ensure_ascii=False, default=lambda v: v.name if isinstance(v, enum.Enum) else str(v)
        )
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False) if value == "" or value != value.strip() else value
    else:
        text = str(value)
    return _shortened(text)


def _shortened(text: str) -> str:
    """`text`, or its start and its length where it takes more than MAX_DEFAULT terminal columns."""
    width = 0
    for index, char in enumerate(text):
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1  # CJK takes two columns
        if width > MAX_DEFAULT:
            return f"{text[:index]}… ({len(text)} characters)"
    return text


def walk(node: Any, prefix: str, comments: dict[tuple[str, str], str]) -> Iterator[Key]:
    """The keys below a settings object, with their values in it; nested settings by their dotted path."""
    hints = typing.get_type_hints(type(node))
    for field in dataclasses.fields(node):
        path = f"{prefix}.{field.name}"
        value = getattr(node, field.name)
        description = comments.get((type(node).__name__, field.name), "")
        inner, _ = unwrap_optional(hints[field.name])
        if dataclasses.is_dataclass(inner) and value is not None:
            if description:  # what the whole group of keys below is for
                yield Key(path, f"group of {inner.__name__}", "", description)
            yield from walk(value, path, comments)
            continue
        kind = _enum(hints[field.name])
        choices = tuple(member.name for member in kind) if kind else ()
        fact = bool(field.metadata.get("fact"))
        yield Key(path, type_name(hints[field.name]), show_value(value), description, fact, choices)


def keys(settings: RootConfig, sections: list[str] | None = None) -> list[Key]:
    """Every key of the chosen sections (all by default), with the values `settings` gives them."""
    comments = descriptions()
    found = []
    for section in sections or SECTIONS:
        found += list(walk(getattr(settings, section), section, comments))
    return found
