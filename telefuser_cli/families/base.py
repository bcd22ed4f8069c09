"""What a model family provides: a torch-free spec and a pipeline the one driver runs.

:class:`FamilySpec` (no torch): which schema families and tasks it serves, the latent geometry of its VAE,
every option of the schema it honours or refuses, and the checks of a job before anything loads.
:class:`FamilyPipeline` (torch, imported only when a job runs): locate the files, encode the image and the
text, give the driver its sampling stages, decode. :class:`Denoiser` and :class:`Step` are the contract
between a family's DiT and the one sampling loop (``pipelines/sampling.py``).
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from telefuser_cli.config.schema import (
    Family,
    ModelConfig,
    ModelRuntimeConfig,
    PipelineConfig,
    RootConfig,
    Task,
)
from telefuser_cli.config.sizes import MAX_SIDE, gib
from telefuser_cli.errors import UserError

if TYPE_CHECKING:
    import torch

    from telefuser_cli.config.validate import RunPlan
    from telefuser_cli.progress import Reporter
    from telefuser_cli.runtime.distributed import ParallelGroups
    from telefuser_cli.schedulers import FlowScheduler


# ---------------------------------------------------------------- the contract with the sampling loop


@dataclass(frozen=True)
class Step:
    """One step of the trajectory as the DiT sees it."""

    index: int
    t: torch.Tensor  # [] float32 on the latents' device: the timestep the DiT receives
    t_next: torch.Tensor  # [] float32: the next step's timestep, 0 after the last (meanflow's reference time)
    t_value: float  # t as a Python float, for choices made per step without a device sync


class Denoiser(Protocol):
    """A loaded DiT with everything bound except the text: what the loop calls each step."""

    cfg_scale: float  # 1: no unconditional pass

    def prepare(self, text: Any) -> Any:
        """The context this DiT samples with, made once from the encoded text (on the DiT's device)."""

    def join(self, context: Any, context_null: Any) -> Any:
        """One context for the batch [cond; uncond] (batched guidance)."""

    def __call__(self, latents: torch.Tensor, step: Step, context: Any) -> torch.Tensor:
        """The velocity for ``latents`` [B, C, T, h, w] float32, returned float32."""


@dataclass
class SamplingStage:
    """One trajectory for the driver to run: its denoisers, scheduler and starting latents."""

    name: str  # the progress bar's label
    denoisers: list[Denoiser]
    scheduler: FlowScheduler
    latents: torch.Tensor  # float32 noise (or noised latents) to start from
    text: Any
    text_null: Any | None
    schedule: list[int] | None = None  # denoiser of each step (mixtures of experts)
    on_switch: Callable[[int, int], None] = lambda old, new: None
    after_step: Callable[[torch.Tensor, Step], torch.Tensor] | None = None
    release: Callable[[], dict[str, Any]] = dict  # frees the DiTs; returns what the record keeps


# ---------------------------------------------------------------- the spec (torch-free)


@dataclass(frozen=True)
class LatentGeometry:
    """How the VAE maps video to latents (channels, compression in time and space) and the DiT's patch."""

    channels: int
    temporal: int
    spatial: int
    patch: tuple[int, int, int] = (1, 1, 1)  # (t, h, w) latents per DiT token

    def shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """[C, T, h, w] of a video of ``frames`` frames (4k+1) at ``width`` x ``height``."""
        return self.channels, (frames - 1) // self.temporal + 1, height // self.spatial, width // self.spatial

    def tokens(self, shape: tuple[int, int, int, int]) -> tuple[int, int, int]:
        """The DiT's token grid over latents of ``shape`` [C, T, h, w]."""
        pt, ph, pw = self.patch
        return -(-shape[1] // pt), shape[2] // ph, shape[3] // pw


# Sizes up to this many times the DiT tokens of a family's largest official setting are allowed (attention
# grows with the square of the tokens): beyond it a run could only fail after loading everything, or run for days.
TOKEN_MARGIN = 4

# Pipeline options the shared driver, sampling loop and runtime read for every family: solver and steps,
# guidance, frames, the negative prompt, noise, decode tiling, frame interpolation, the step cache.
SHARED_OPTIONS = frozenset(
    {
        "sample_solver", "num_inference_steps", "timesteps", "cfg_scale", "sigma_shift", "num_frames", "fps",
        "negative_prompt", "rand_device", "cfg_batch", "step_cache_threshold", "tiled", "tile_size",
        "tile_stride", "enable_vfi", "target_fps", "vfi_scale", "vfi_chunk_size", "vfi_weights", "keep_loaded",
    }
)  # fmt: skip

# Runtime leaves every family honours on every component: where it runs and in which dtype.
PLACEMENT = frozenset({"device_type", "device_id", "torch_dtype"})
# Values of a leaf that change nothing, so a family that does not read the leaf need not refuse them.
_INERT = {"attention_config.attn_impl": ("AUTO", "TORCH_SDPA")}
_DIT_COMPONENTS = ("dit_config", "dit_high_config", "dit_low_config")


def _leaves(value: Any, name: str = "") -> Iterator[tuple[str, Any]]:
    if dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            yield from _leaves(getattr(value, f.name), f"{name}.{f.name}" if name else f.name)
    else:
        yield name, value


def runtime_leaves() -> list[str]:
    """Every leaf of a component's runtime settings, e.g. ``compile``, ``parallel_config.cfg_degree``."""
    return [name for name, _ in _leaves(ModelRuntimeConfig())]


def pipeline_options() -> list[str]:
    """The pipeline's own options (not the components' runtime settings)."""
    return [
        f.name
        for f in dataclasses.fields(PipelineConfig)
        if not f.name.endswith("_config") and f.name != "description"
    ]


def runtime_components() -> list[str]:
    return [f.name for f in dataclasses.fields(PipelineConfig) if f.name.endswith("_config")]


def _plain(value: Any) -> Any:
    return value.name if hasattr(value, "name") and not isinstance(value, str) else value


@dataclass(frozen=True)
class FamilySpec:
    """A model family, torch-free: what it serves and which options it honours.

    Every pipeline option and every runtime leaf of every component is either honoured (read by the code
    that runs) or refused when set away from its default, one line naming the option and the family.
    ``tests/unit/test_family_options.py`` fails when an option of the schema is in neither set.
    """

    name: str
    families: tuple[Family, ...]
    tasks: frozenset[Task]
    pipeline: str  # "module:Class" of its FamilyPipeline, imported only to run
    honoured: frozenset[str]  # pipeline options read by this family
    refused: frozenset[str]  # pipeline options it cannot honour
    # runtime leaves honoured per component; components not named here run with PLACEMENT only
    runtime: dict[str, frozenset[str]] = field(default_factory=dict)
    # the model entry's component fields -> the class that loads each (names only: no import), for the record
    components: dict[str, str] = field(default_factory=dict)

    def honours_leaf(self, component: str, leaf: str) -> bool:
        return leaf in PLACEMENT or leaf in self.runtime.get(component, frozenset())

    # the largest official setting, for the size guard: (description, DiT tokens)
    largest_official: tuple[str, int] = ("", 0)

    def geometry(self, model: ModelConfig) -> LatentGeometry:
        raise NotImplementedError

    def latent_shape(self, model: ModelConfig, width: int, height: int, num_frames: int) -> tuple[int, ...]:
        """[C, T, h, w] of the latents of a ``num_frames`` x ``height`` x ``width`` video (num_frames = 4k+1).

        Raises UserError when the DiT would attend over far more tokens than the family's largest official
        setting, or a side is longer than MAX_SIDE, naming the numbers: such a run could only fail after
        loading every model, or run for days.
        """
        geometry = self.geometry(model)
        shape = geometry.shape(num_frames, height, width)
        grid = geometry.tokens(shape)
        tokens = math.prod(grid)
        official, official_tokens = self.largest_official
        limit = TOKEN_MARGIN * official_tokens
        if tokens > limit:
            raise UserError(
                f"user.resolution={width}x{height} at pipeline.num_frames={num_frames} is {tokens:,} DiT tokens "
                f"({' x '.join(map(str, grid))}; float32 latents {gib(4 * math.prod(shape))}) for model "
                f"{model.name}: more than {limit:,}, {TOKEN_MARGIN}x its family's largest official setting "
                f"({official}, {official_tokens:,} tokens); lower user.resolution or pipeline.num_frames"
            )
        if max(width, height) > MAX_SIDE:
            raise UserError(
                f"user.resolution={width}x{height}: a side of {max(width, height)} pixels is more than "
                f"{MAX_SIDE} (4x the longest official side, 1920 at 1080p); choose a smaller size"
            )
        return shape

    def problems(self, settings: RootConfig) -> list[str]:
        """The family's own checks of a job (tasks, components, experts): one line each."""
        return []

    def sampling_record(self, settings: RootConfig, timesteps: list[float]) -> dict[str, Any]:
        """What config.json records about sampling beyond the timesteps (e.g. steps per expert)."""
        return {}


def _defaults() -> tuple[PipelineConfig, dict[str, ModelRuntimeConfig]]:
    pipeline = PipelineConfig()
    components = {name: getattr(pipeline, name) or ModelRuntimeConfig() for name in runtime_components()}
    return pipeline, components


def unsupported_options(spec: FamilySpec, settings: RootConfig, others: list[FamilySpec]) -> list[str]:
    """Every option set away from its default that ``spec``'s family does not honour, one line each."""

    def supported_by(check: Callable[[FamilySpec], bool]) -> str:
        names = [other.name for other in others if other is not spec and check(other)]
        return f"supported by {', '.join(names)}" if names else "no family supports it in this version"

    default_pipeline, default_components = _defaults()
    pipeline = settings.pipeline
    found = []
    for option in pipeline_options():
        value = getattr(pipeline, option)
        if option in spec.honoured or value == getattr(default_pipeline, option):
            continue
        where = supported_by(lambda other, o=option: o in other.honoured)
        found.append(f"pipeline.{option}={_show(value)}: not supported by {spec.name} ({where})")
    for component in runtime_components():
        runtime = getattr(pipeline, component)
        if runtime is None:
            continue
        defaults = dict(_leaves(default_components[component]))
        for leaf, value in _leaves(runtime):
            if spec.honours_leaf(component, leaf) or _plain(value) in _INERT.get(leaf, ()):
                continue
            if value == defaults[leaf]:
                continue
            key = f"pipeline.{component}.{leaf}"
            taken_here = any(o.honours_leaf(component, leaf) for o in others)
            if (
                component not in _DIT_COMPONENTS
                and not taken_here
                and any(o.honours_leaf("dit_config", leaf) for o in others)
            ):
                found.append(f"{key}={_show(value)}: only the DiT takes it (pipeline.dit_config.{leaf})")
                continue
            where = supported_by(lambda other, c=component, lf=leaf: other.honours_leaf(c, lf))
            found.append(f"{key}={_show(value)}: not supported by {spec.name} ({where})")
    return found


def _show(value: Any) -> str:
    value = _plain(value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
        return f"[{len(value)} entries]"
    return str(value)


# ---------------------------------------------------------------- the pipeline (torch, run time only)


class FamilyPipeline(ABC):
    """One job of one family, in the driver's order (``pipelines/generate.py`` numbers the steps).

    Each method loads what its step needs and frees it before returning, so at most one large model is
    resident at a time (or the experts of one stage).
    """

    def __init__(self, settings: RootConfig, plan: RunPlan, groups: ParallelGroups) -> None:
        self.settings = settings
        self.plan = plan
        self.groups = groups
        self.record: dict[str, Any] = {}  # run facts for config.json (sizes written, runtime reports)

    @property
    @abstractmethod
    def device(self) -> torch.device:
        """Where the DiT runs (and the latents live)."""

    @abstractmethod
    def locate(self) -> None:
        """1. Find and check every file before anything loads, so a missing VAE fails in seconds."""

    def encode_image(self, reporter: Reporter) -> None:
        """2. Image-to-video: encode the image(s); the output size may follow the image."""
        return None  # text-to-video families have nothing to encode here

    @abstractmethod
    def encode_text(self, reporter: Reporter, prompts: list[str]) -> list[Any]:
        """3. The text features of each prompt, as the family's DiTs take them (on the DiT's device)."""

    @abstractmethod
    def first_stage(self, reporter: Reporter, text: Any, text_null: Any | None) -> SamplingStage:
        """4. Load the DiT(s) and draw the noise: the main trajectory."""

    def refine_stage(
        self, reporter: Reporter, latents: torch.Tensor, text: Any, text_null: Any | None,
        write_intermediate: Callable[[torch.Tensor, str], None],
    ) -> SamplingStage | None:  # fmt: skip
        """The trajectory that refines the main one's latents (super-resolution), or None."""
        return None

    @abstractmethod
    def decode(self, reporter: Reporter, latents: torch.Tensor, stage: str = "decode") -> torch.Tensor:
        """Final latents -> frames [T, H, W, 3] uint8."""

    def guided(self) -> bool:
        """Whether any stage runs an unconditional pass (the negative prompt is encoded only then)."""
        return True


def build_scheduler(pipeline: PipelineConfig) -> FlowScheduler:
    """The main trajectory's scheduler from the pipeline settings: the one that runs and the one recorded."""
    from telefuser_cli.schedulers import make_scheduler  # torch: only when timesteps are needed

    try:
        return make_scheduler(
            pipeline.sample_solver.value, pipeline.num_inference_steps, pipeline.sigma_shift,
            pipeline.timesteps,
        )  # fmt: skip
    except ValueError as error:
        raise UserError(f"pipeline.sample_solver / num_inference_steps / timesteps: {error}") from None
