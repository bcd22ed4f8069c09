"""`telefuser inspect DIR`: what a weights directory holds, read from file headers and config files only.

Two families are told apart by their layout. Wan: the DiT's `diffusion_pytorch_model*.safetensors` at the
root (Wan2.2 A14B: in `high_noise_model/` and `low_noise_model/`), or a diffusers WanPipeline folder.
HunyuanVideo 1.5: `transformer/<version>/` folders (config.json + safetensors) beside `vae/`,
`text_encoder/llm`, `text_encoder/byt5-small`, `vision_encoder/siglip` and `upsampler/<version>/`.
No tensor data is read: safetensors headers, `.pth` files through mmap, and config.json.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
from pathlib import Path
from typing import Any

from telefuser_cli.errors import UserError
from telefuser_cli.io.files import human_bytes
from telefuser_cli.loading.checkpoint import read_shapes
from telefuser_cli.loading.fp8 import detect_quant, read_dtypes
from telefuser_cli.loading.umt5_arch import infer_umt5_config
from telefuser_cli.loading.wan import dit_architecture, dit_shapes, is_diffusers_layout, locate
from telefuser_cli.loading.wan_vae_arch import infer_vae_config

DIT_PATTERNS = {
    "dit": "diffusion_pytorch_model*.safetensors",
    "dit_high": "high_noise_model/diffusion_pytorch_model*.safetensors",
    "dit_low": "low_noise_model/diffusion_pytorch_model*.safetensors",
}
OTHER_PATTERNS = {
    "text_encoder": "models_t5_umt5-xxl-enc-bf16.pth",
    "vae": "Wan2.1_VAE.pth",
    "vae22": "Wan2.2_VAE.pth",
    "clip": "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth",
}
HUNYUAN15_WEIGHTS = "diffusion_pytorch_model*.safetensors"
FAMILY_NAMES = {"wan21": "Wan2.1", "wan22": "Wan2.2", "hunyuan15": "HunyuanVideo 1.5"}
TASK_NAMES = {
    "t2v": "text-to-video",
    "i2v": "image-to-video",
    "flf2v": "first-and-last-frame-to-video",
    "ti2v": "text-and-image-to-video",
    "sr": "super-resolution",
}
NOT_RECOGNISED = (
    "{root} holds no weights telefuser recognises: a Wan folder has diffusion_pytorch_model*.safetensors "
    "(or high_noise_model/ and low_noise_model/, or a diffusers transformer/ with model_index.json), a "
    "HunyuanVideo 1.5 folder has transformer/<version>/config.json"
)


def _exists(root: Path, pattern: str) -> bool:
    return bool(glob.glob(str(root / pattern)))


def _numel(shape) -> int:
    return math.prod(shape)


def _bytes(path: Path) -> int:
    """Size on disk of a file, or of every file below a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(child.stat().st_size for child in path.rglob("*") if child.is_file())


def _precision(files: list[Path]) -> str:
    """fp8, bf16, fp16 or fp32: the dtype most *.weight tensors are stored in (headers only)."""
    try:
        return detect_quant(read_dtypes(files))
    except ValueError:
        return "?"


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: unreadable config.json ({error})") from None


# ---------------------------------------------------------------- Wan


def _diffusers_pipeline(root: Path) -> str | None:
    """The pipeline class a diffusers folder names in model_index.json (WanPipeline, ...), if it is one."""
    if not is_diffusers_layout(root):
        return None
    return str((_read_json(root / "model_index.json") or {}).get("_class_name", ""))


def _is_wan(root: Path) -> bool:
    pipeline = _diffusers_pipeline(root)
    if pipeline is not None:
        return pipeline.startswith("Wan")
    return any(_exists(root, pattern) for pattern in DIT_PATTERNS.values())


def _describe_dit(root: Path, name: str, pattern: str) -> dict[str, Any]:
    files = locate(root, name, pattern)
    config = dit_architecture(files)
    return {
        "files": [str(f) for f in files.files],
        "layout": "diffusers" if files.diffusers else "official",
        "quant": detect_quant(read_dtypes(files.files)),
        "parameters": sum(_numel(shape) for shape in dit_shapes(files).values()),
        "bytes": sum(f.stat().st_size for f in files.files),
        "config": dataclasses.asdict(config),
    }


def _with_files(config: dict[str, Any], files: tuple[Path, ...]) -> dict[str, Any]:
    """A component's architecture plus its precision and size on disk."""
    return {**config, "quant": _precision(list(files)), "bytes": sum(f.stat().st_size for f in files)}


def _wan_report(root: Path) -> dict[str, Any]:
    report: dict[str, Any] = {"root": str(root)}
    experts = [n for n in ("dit_high", "dit_low") if _exists(root, DIT_PATTERNS[n])]
    for name in experts or ["dit"]:
        report[name] = _describe_dit(root, name, DIT_PATTERNS[name])
    report["moe"] = bool(experts)
    dit = report[(experts or ["dit"])[0]]["config"]
    report["task"] = dit["model_type"]
    # Wan2.2: the A14B experts, and TI2V-5B with its 48-channel latents (the Wan2.2 VAE).
    report["family"] = "wan22" if experts or dit["out_dim"] == 48 else "wan21"
    if _exists(root, OTHER_PATTERNS["text_encoder"]) or (root / "text_encoder").is_dir():
        files = locate(root, "text_encoder", OTHER_PATTERNS["text_encoder"])
        # A diffusers folder holds transformers' UMT5 layout: its precision and size only.
        config = {} if files.diffusers else dataclasses.asdict(infer_umt5_config(read_shapes(files.files)))
        report["text_encoder"] = _with_files(config, files.files)
    if is_diffusers_layout(root) and (root / "vae").is_dir():
        report["vae"] = _with_files({}, locate(root, "vae", OTHER_PATTERNS["vae"]).files)
    elif _exists(root, OTHER_PATTERNS["vae"]):
        files = locate(root, "vae", OTHER_PATTERNS["vae"])
        report["vae"] = _with_files(
            dataclasses.asdict(infer_vae_config(read_shapes(files.files))), files.files
        )
    elif _exists(root, OTHER_PATTERNS["vae22"]):
        report["vae"] = _with_files({"file": OTHER_PATTERNS["vae22"]}, (root / OTHER_PATTERNS["vae22"],))
    if _exists(root, OTHER_PATTERNS["clip"]):
        report["clip"] = _with_files({"file": OTHER_PATTERNS["clip"]}, (root / OTHER_PATTERNS["clip"],))
    return report


# ---------------------------------------------------------------- HunyuanVideo 1.5


def _is_hunyuan15(root: Path) -> bool:
    return any((root / "transformer").glob("*/config.json"))


def _weights(folder: Path) -> list[Path]:
    return sorted(folder.glob(HUNYUAN15_WEIGHTS)) or sorted(folder.glob("*.safetensors"))


def _hunyuan15_transformer(folder: Path) -> dict[str, Any]:
    from telefuser_cli.loading.hunyuan15_arch import infer_dit_config

    files = _weights(folder)
    config_json = _read_json(folder / "config.json") or {}
    entry: dict[str, Any] = {
        "task": config_json.get("ideal_task"),
        "resolution": config_json.get("ideal_resolution"),
    }
    if not files:
        return {**entry, "missing": f"no {HUNYUAN15_WEIGHTS} in {folder}"}
    shapes = read_shapes(files)
    try:
        config = infer_dit_config(shapes, config_json)
    except ValueError as error:
        raise UserError(f"{folder}: {error}") from None
    return {
        **entry,
        "step_distilled": config.use_meanflow,  # `time_r_in`: the DiT also takes a second timestep
        "super_resolution": config.patch_in_channels == 3 * config.out_channels + 2,
        "quant": _precision(files),
        "parameters": sum(_numel(shape) for shape in shapes.values()),
        "bytes": sum(f.stat().st_size for f in files),
        "config": dataclasses.asdict(config),
    }


def _hunyuan15_folder_model(folder: Path) -> dict[str, Any]:
    """A transformers folder (text encoder, ByT5, SigLIP): its class and sizes from config.json."""
    config = _read_json(folder / "config.json") or {}
    text = config.get("text_config", config)  # Qwen2.5-VL nests the language model's config
    entry = {
        "architecture": (config.get("architectures") or [config.get("model_type")])[0],
        "layers": text.get("num_hidden_layers", text.get("num_layers")),
        "hidden_size": text.get("hidden_size", text.get("d_model")),
        "bytes": _bytes(folder),
    }
    files = sorted(folder.glob("*.safetensors"))
    if files:
        entry["quant"] = _precision(files)
    return entry


def _hunyuan15_report(root: Path) -> dict[str, Any]:
    from telefuser_cli.loading.hunyuan15 import GLYPH_CKPT, GLYPH_DIR, infer_upsampler_config
    from telefuser_cli.loading.hunyuan15_arch import infer_vae_config as infer_hunyuan15_vae

    report: dict[str, Any] = {"root": str(root), "family": "hunyuan15", "layout": "official"}
    transformers = {}
    for folder in sorted(p.parent for p in (root / "transformer").glob("*/config.json")):
        transformers[f"transformer/{folder.name}"] = _hunyuan15_transformer(folder)
    report["transformers"] = transformers
    report["tasks"] = sorted({t["task"] for t in transformers.values() if t.get("task")})
    vae = _weights(root / "vae")
    if vae:
        try:
            config = infer_hunyuan15_vae(read_shapes(vae), _read_json(root / "vae" / "config.json"))
        except ValueError as error:
            raise UserError(f"{root / 'vae'}: {error}") from None
        report["vae"] = _with_files(dataclasses.asdict(config), tuple(vae))
    upsamplers = {}
    for folder in sorted(p.parent for p in (root / "upsampler").glob(f"*/{HUNYUAN15_WEIGHTS}")):
        files = _weights(folder)
        try:
            config = infer_upsampler_config(read_shapes(files), _read_json(folder / "config.json"))
        except ValueError as error:
            raise UserError(f"{folder}: not an upsampler checkpoint ({error})") from None
        model_class = type(config).__name__.replace(
            "Config", "Upsampler"
        )  # SRTo720pConfig -> SRTo720pUpsampler
        upsamplers[f"upsampler/{folder.name}"] = _with_files({"class": model_class}, tuple(files))
    report["upsamplers"] = upsamplers
    folders = {
        "text_encoder": "text_encoder/llm",
        "glyph_encoder": "text_encoder/byt5-small",
        "vision_encoder": "vision_encoder/siglip/image_encoder",
    }
    for name, sub in folders.items():
        if (root / sub / "config.json").is_file():
            report[name] = {"path": sub, **_hunyuan15_folder_model(root / sub)}
    glyph = root / GLYPH_DIR / GLYPH_CKPT
    if glyph.is_file() and "glyph_encoder" in report:
        report["glyph_encoder"]["glyph_checkpoint"] = _with_files({"path": str(glyph)}, (glyph,))
    return report


# ---------------------------------------------------------------- both


def inspect_directory(root: Path) -> dict[str, Any]:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"{root} is not a directory")
    try:
        if _is_hunyuan15(root):
            return _hunyuan15_report(root)
        if _is_wan(root):
            return _wan_report(root)
    except ValueError as error:
        raise UserError(f"{root}: {error}") from None
    pipeline = _diffusers_pipeline(root)
    if pipeline:
        raise UserError(
            f"{root} is a diffusers {pipeline} folder; telefuser reads Wan ones, and HunyuanVideo 1.5 "
            "in the official layout (tencent/HunyuanVideo-1.5)"
        )
    raise UserError(NOT_RECOGNISED.format(root=root))


def entry_fits(report: dict[str, Any], entry: dict[str, Any]) -> bool:
    """Whether a model entry (its `model` settings as plain values) loads this directory as model.root:
    the same family and task, its DiT files present, and fp8 weights only under an fp8 entry."""
    if entry["family"] != report["family"]:
        return False
    root = Path(report["root"])
    if report["family"] == "hunyuan15":
        found = report["transformers"].get(str(entry.get("dit")))
        return bool(found) and "missing" not in found and found["task"] in (None, entry["task"])
    names = ["dit_high", "dit_low"] if report["moe"] else ["dit"]
    if entry["moe"] != report["moe"] or entry["task"] != report["task"]:
        return False
    if (entry["quant"] == "fp8") != (report[names[0]]["quant"] == "fp8"):
        return False
    layout_diffusers = report[names[0]]["layout"] == "diffusers"
    return layout_diffusers or all(entry.get(n) and _exists(root, entry[n]) for n in names)


def _count(number: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if number >= size:
            return f"{number / size:.1f} {unit} parameters"
    return f"{number} parameters"


def _facts(*parts: str | None) -> str:
    return "; ".join(part for part in parts if part)


def _wan_lines(report: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for name in ("dit", "dit_high", "dit_low"):
        if name in report:
            dit, c = report[name], report[name]["config"]
            arch = f"{c['num_layers']} layers, dim {c['dim']}, {c['num_heads']} heads, {c['in_dim']} -> {c['out_dim']} channels"
            layout = f"{dit['layout']} layout"
            rows.append(
                (
                    name,
                    _facts(arch, _count(dit["parameters"]), dit["quant"], human_bytes(dit["bytes"]), layout),
                )
            )
    if "text_encoder" in report:
        t = report["text_encoder"]
        arch = (
            f"UMT5, {t['num_layers']} layers, dim {t['dim']}, {t['num_heads']} heads"
            if "dim" in t
            else "UMT5"
        )
        rows.append(("text_encoder", _facts(arch, t["quant"], human_bytes(t["bytes"]))))
    if "vae" in report:
        v = report["vae"]
        arch = (
            f"latent {v['z_dim']} channels, base width {v['dim']}" if "z_dim" in v else v.get("file")
        )  # diffusers: no architecture
        rows.append(("vae", _facts(arch, v["quant"], human_bytes(v["bytes"]))))
    if "clip" in report:
        rows.append(("clip", _facts(report["clip"]["quant"], human_bytes(report["clip"]["bytes"]))))
    return rows


def _hunyuan15_lines(report: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for path, t in report["transformers"].items():
        if "missing" in t:
            rows.append((path, t["missing"]))
            continue
        c = t["config"]
        what = (
            "super-resolution" if t["super_resolution"] else TASK_NAMES.get(t["task"] or "", "task unknown")
        )
        what += " (step-distilled)" if t["step_distilled"] else ""
        arch = (
            f"{c['mm_double_blocks_depth']} double blocks, hidden {c['hidden_size']}, {c['heads_num']} heads"
        )
        rows.append(
            (
                path,
                _facts(
                    what, t["resolution"], arch, _count(t["parameters"]), t["quant"], human_bytes(t["bytes"])
                ),
            )
        )
    if "vae" in report:
        v = report["vae"]
        rows.append(
            ("vae", _facts(f"latent {v['latent_channels']} channels", v["quant"], human_bytes(v["bytes"])))
        )
    for path, u in report["upsamplers"].items():
        rows.append((path, _facts(u["class"], u["quant"], human_bytes(u["bytes"]))))
    for name in ("text_encoder", "glyph_encoder", "vision_encoder"):
        if name in report:
            m = report[name]
            arch = f"{m['architecture']}, {m['layers']} layers, hidden {m['hidden_size']}"
            glyph = m.get("glyph_checkpoint", {})  # the ByT5 weights live in Glyph-SDXL-v2/checkpoints
            size = m["bytes"] + glyph.get("bytes", 0)
            rows.append((m["path"], _facts(arch, m.get("quant") or glyph.get("quant"), human_bytes(size))))
    return rows


def summary(report: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    """A headline (family and task) and one (component, facts) row per component, for a person."""
    family = FAMILY_NAMES[report["family"]]
    if report["family"] == "hunyuan15":
        tasks = ", ".join(TASK_NAMES.get(task, task) for task in report["tasks"] if task != "sr")
        return f"{family}: {tasks or 'task unknown'}", _hunyuan15_lines(report)
    moe = ", mixture of experts" if report["moe"] else ""
    return f"{family}: {TASK_NAMES.get(report['task'], report['task'])}{moe}", _wan_lines(report)
