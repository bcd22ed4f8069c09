"""Loading the Wan components from an official or a diffusers directory.

Architecture comes from the weights (and the official `config.json` beside the DiT), never from the
model entry; the entry's facts (task) are checked against what the weights say.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from telefuser_cli.errors import UserError
from telefuser_cli.loading.checkpoint import (
    build_module,
    dtype_name,
    read_shapes,
    read_state_dict,
    resolve_files,
)
from telefuser_cli.loading.fp8 import detect_quant, read_dtypes
from telefuser_cli.loading.lora import load_lora, lora_patches, merge_lora
from telefuser_cli.loading.quantize import AUTO, FP8, dequantize_keys, fp8_converter
from telefuser_cli.loading.tokenizer import load_tokenizer
from telefuser_cli.loading.umt5_arch import hf_to_official_umt5, infer_umt5_config
from telefuser_cli.loading.wan_dit_arch import diffusers_to_official_dit, infer_dit_config
from telefuser_cli.loading.wan_vae_arch import diffusers_to_official_vae, infer_vae_config, vae_class
from telefuser_cli.models.umt5 import UMT5Encoder
from telefuser_cli.models.wan_dit import WanDiT, WanDiTConfig
from telefuser_cli.models.wan_vae import WanVAE, WanVAEConfig
from telefuser_cli.ops.fp8_linear import DEQUANTIZE, SCALED_MM, scaled_mm_problem, weights_summary

# Sub-folders of a diffusers pipeline directory (WanPipeline.save_pretrained).
DIFFUSERS_FOLDERS = {
    "dit": "transformer",
    "text_encoder": "text_encoder",
    "vae": "vae",
    "tokenizer": "tokenizer",
}


@dataclass(frozen=True)
class ComponentFiles:
    """Where one component's weights are, and whether they use diffusers' key names."""

    name: str
    files: tuple[Path, ...]
    diffusers: bool

    @property
    def source(self) -> str:
        return (
            str(self.files[0])
            if len(self.files) == 1
            else f"{self.files[0].parent}/ ({len(self.files)} shards)"
        )


def is_diffusers_layout(root: Path) -> bool:
    return (root / "transformer").is_dir() and (root / "model_index.json").is_file()


def locate(root: Path, component: str, pattern: str) -> ComponentFiles:
    """The files of `component` (dit, text_encoder, vae) under root, in either directory layout."""
    root = Path(root)
    if is_diffusers_layout(root) and component in DIFFUSERS_FOLDERS:
        folder = DIFFUSERS_FOLDERS[component]
        files = resolve_files(root, f"{folder}/*.safetensors", component)
        return ComponentFiles(component, tuple(files), diffusers=True)
    return ComponentFiles(component, tuple(resolve_files(root, pattern, component)), diffusers=False)


def tokenizer_dir(root: Path, pattern: str) -> Path:
    root = Path(root)
    if is_diffusers_layout(root):
        return root / DIFFUSERS_FOLDERS["tokenizer"]
    return root / pattern


def dit_config_json(files: ComponentFiles) -> dict | None:
    path = files.files[0].parent / "config.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: unreadable config.json ({error})") from None


def _check_quant(files: ComponentFiles, expected_quant: str, model_name: str) -> str:
    """The weights' precision (fp8 / bf16 / fp16 / fp32) against the model entry's `quant` fact."""
    try:
        found = detect_quant(read_dtypes(files.files))
    except ValueError as error:
        raise UserError(f"{files.source}: {error}") from None
    fp8_expected, fp8_found = expected_quant == "fp8", found == "fp8"
    if fp8_expected != fp8_found:
        raise UserError(
            f"{files.source} holds {found} weights, but model entry '{model_name}' says model.quant="
            f"{expected_quant}; choose the model entry that matches these weights"
        )
    return found


def load_dit(
    files: ComponentFiles,
    *,
    dtype: torch.dtype,
    device: torch.device,
    attn_backend: str,
    expected_task: str,
    model_name: str,
    expected_quant: str = "bf16",
    loras: Sequence[tuple[str, float]] = (),
    weights: str = AUTO,
    fp8_compute: torch.device | None = None,
) -> WanDiT:
    """The DiT, built on meta, its linear weights held as ``weights`` says (``loading.quantize``: AUTO keeps an
    fp8 file fp8-resident, DEQUANTIZE_MODE converts it to ``dtype``, FP8 also quantizes a bf16/fp32 file).

    LoRAs (path, strength) merge in float32; on fp8 weights the layers they change are dequantized, merged
    and quantized again (per output channel). ``fp8_compute``: the device on which the fp8-resident layers
    multiply with fp8 matmuls (``torch._scaled_mm``); None: they dequantize. UserError naming the option when
    that device cannot, or the weights are not fp8-resident.
    """
    quant = _check_quant(files, expected_quant, model_name)
    fp8_resident = weights == FP8 or (weights == AUTO and quant == "fp8")
    if fp8_compute is not None:
        option = f"pipeline.{files.name}_config.fp8_compute=true"
        if not fp8_resident:
            raise UserError(
                f"{option} needs fp8-resident weights, but weights={weights} holds these {quant} weights in "
                f"{dtype_name(dtype)}; set pipeline.{files.name}_config.weights=fp8"
            )
        problem = scaled_mm_problem(fp8_compute)
        if problem is not None:
            raise UserError(f"{option}: {problem}; set it to false (fp8 weights then dequantize per layer)")
    state_dict = read_state_dict(files.files)
    if files.diffusers:
        state_dict = diffusers_to_official_dit(state_dict)
    changed: set[str] = set()
    for index, (path, strength) in enumerate(loras):
        try:
            lora = load_lora(path)
        except UserError as error:  # the message names the file already
            raise UserError(f"LoRA (lora_configs[{index}]): {error}") from None
        try:
            targets = {f"{m}.weight" for m in lora_patches(lora, state_dict.keys())}
            if quant == "fp8":  # the merge needs plain values: only the layers it changes are dequantized
                state_dict = dequantize_keys(
                    state_dict, targets & {k for k in state_dict if k.endswith(".weight")}
                )
            state_dict = merge_lora(state_dict, lora, strength)
        except (ValueError, OSError) as error:
            raise UserError(f"LoRA {path} (lora_configs[{index}]): {error}") from None
        changed |= targets
    convert = fp8_converter(
        mode=weights, dtype=dtype, keep=WanDiT.keep_fp32,
        quantize=changed if quant == "fp8" and fp8_resident else (),
        compute=DEQUANTIZE if fp8_compute is None else SCALED_MM,
    )  # fmt: skip
    shapes = {key: tensor.shape for key, tensor in state_dict.items()}
    try:
        config = infer_dit_config(shapes, dit_config_json(files))
    except ValueError as error:
        raise UserError(f"{files.source}: {error}") from None
    if config.model_type != expected_task:
        raise UserError(
            f"{files.source} holds a {config.model_type} DiT (in_dim {config.in_dim}), but model entry "
            f"'{model_name}' is {expected_task}; choose the model entry that matches these weights"
        )
    return build_module(
        lambda: WanDiT(config, attn_backend=attn_backend),
        state_dict,
        dtype=dtype,
        device=device,
        source=files.source,
        keep_fp32=WanDiT.keep_fp32,
        convert=convert,
    )


def _official_weights(files: ComponentFiles, from_diffusers: Callable[[dict], dict], infer: Callable):
    """The component's tensors in the official layout and the architecture read from their shapes."""
    state_dict = read_state_dict(files.files)
    try:  # a diffusers folder's names mapped to the official ones (a layout the map does not know: refused)
        if files.diffusers:
            state_dict = from_diffusers(state_dict)
        return state_dict, infer({key: tensor.shape for key, tensor in state_dict.items()})
    except ValueError as error:
        raise UserError(f"{files.source}: {error}") from None


# UMT5 layers kept out of fp8: the attention projections. On a 2-layer slice of UMT5-XXL (random weights)
# fp8 everywhere moved the output 1.9e-2 (relative, max), fp8 feed-forward only 6.7e-3, bf16 alone 8.2e-3;
# the feed-forward holds 65% of the layers' weights.
UMT5_KEEP = (".attn.",)


def load_text_encoder(
    files: ComponentFiles, *, dtype: torch.dtype, device: torch.device, weights: str = AUTO,
    record: dict | None = None,
) -> UMT5Encoder:  # fmt: skip
    """The UMT5 encoder; ``weights`` as for :func:`load_dit` (FP8: its feed-forward linears quantized per
    output channel; attention, embeddings and norms stay in ``dtype``, see ``UMT5_KEEP``).

    record: where the run record's ``text_encoder`` entry (how the weights are held) is written, when given.
    """
    state_dict, config = _official_weights(files, hf_to_official_umt5, infer_umt5_config)
    encoder = build_module(
        lambda: UMT5Encoder(config), state_dict, dtype=dtype, device=device, source=files.source,
        convert=fp8_converter(mode=weights, dtype=dtype, keep=UMT5_KEEP),
    )  # fmt: skip
    if record is not None:
        record["text_encoder"] = {"weights": weights, **weights_summary(encoder)}
    return encoder


def load_vae(files: ComponentFiles, *, dtype: torch.dtype, device: torch.device) -> WanVAE:
    """The VAE, its architecture and latent mean/std in ``vae.config`` (read off the weights): a
    ``WanVAE`` for a Wan2.1 checkpoint, a ``Wan22VAE`` (its subclass, same interface) for a Wan2.2 one."""
    state_dict, config = _official_weights(files, diffusers_to_official_vae, infer_vae_config)
    model_class = vae_class(config)
    return build_module(
        lambda: model_class(config), state_dict, dtype=dtype, device=device, source=files.source
    )


def vae_architecture(files: ComponentFiles) -> WanVAEConfig:
    """The VAE's config (geometry, latent statistics) from the key shapes, without reading tensor data."""
    shapes = read_shapes(files.files)
    if files.diffusers:
        meta = {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}
        shapes = {key: tensor.shape for key, tensor in diffusers_to_official_vae(meta).items()}
    try:
        return infer_vae_config(shapes)
    except ValueError as error:
        raise UserError(f"{files.source}: {error}") from None


def dit_shapes(files: ComponentFiles) -> dict[str, torch.Size]:
    """Official-layout key -> shape, from the file headers only (no tensor data is read)."""
    shapes = read_shapes(files.files)
    if files.diffusers:
        meta = {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}
        shapes = {key: tensor.shape for key, tensor in diffusers_to_official_dit(meta).items()}
    return shapes


def dit_architecture(files: ComponentFiles) -> WanDiTConfig:
    """The DiT's architecture without loading it (cheap checks before any work, `telefuser inspect`)."""
    try:
        return infer_dit_config(dit_shapes(files), dit_config_json(files))
    except ValueError as error:
        raise UserError(f"{files.source}: {error}") from None


def load_wan_tokenizer(path: Path):
    try:
        return load_tokenizer(path)
    except (FileNotFoundError, ValueError) as error:
        raise UserError(str(error)) from None
