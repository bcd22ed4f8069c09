"""The shipped tiny trained Wan2.1 model (telefuser_cli/assets/tiny_wan21): it loads through the same code
as real weights, and what it generates shows the prompt's colour and direction, more often with guidance.

The model was trained by tools/train_tiny.py on the synthetic world of tools/synthetic.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_cli

import telefuser_cli
from telefuser_cli.families.wan.inputs import encode_text, initial_noise
from telefuser_cli.families.wan.pipeline import WanDenoiser
from telefuser_cli.io.strip import strip_image, write_frame_strip
from telefuser_cli.io.video import to_uint8_frames
from telefuser_cli.loading import wan as wan_loading
from telefuser_cli.pipelines.sampling import sample
from telefuser_cli.schedulers import make_scheduler
from tools.synthetic import ClipSpec, analyse_clip, make_clip

pytestmark = pytest.mark.numeric

ASSETS = Path(telefuser_cli.__file__).parent / "assets" / "tiny_wan21"
SIZE, FRAMES, STEPS, SHIFT, CFG = 32, 9, 8, 5.0, 4.0
PROMPTS = [
    ClipSpec("red", "ball", "right"),
    ClipSpec("blue", "square", "left"),
    ClipSpec("green", "triangle", "up"),
    ClipSpec("yellow", "ball", "down"),
]
SEEDS = [1, 2]
CPU = torch.device("cpu")
needs_assets = pytest.mark.skipif(
    not (ASSETS / "diffusion_pytorch_model.safetensors").is_file(),
    reason=f"no trained tiny model in {ASSETS}: make it with `python -m tools.train_tiny --out {ASSETS}`",
)


@pytest.fixture(scope="module")
def model():
    tokenizer = wan_loading.load_wan_tokenizer(ASSETS / "google/umt5-xxl")
    t5 = wan_loading.load_text_encoder(
        wan_loading.locate(ASSETS, "text_encoder", "models_t5_umt5-xxl-enc-bf16.pth"),
        dtype=torch.float32,
        device=CPU,
    )
    dit = wan_loading.load_dit(
        wan_loading.locate(ASSETS, "dit", "diffusion_pytorch_model.safetensors"), dtype=torch.float32, device=CPU,
        attn_backend="TORCH_SDPA", expected_task="t2v", model_name="tiny_wan21",
    )  # fmt: skip
    vae = wan_loading.load_vae(
        wan_loading.locate(ASSETS, "vae", "Wan2.1_VAE.pth"), dtype=torch.float32, device=CPU
    )
    return tokenizer, t5, dit, vae


def generate(model, prompt: str, seed: int, cfg: float) -> torch.Tensor:
    """One video [3, F, H, W] with the pipeline's own functions; the negative prompt is "" (the dropped caption)."""
    tokenizer, t5, dit, vae = model
    context, null = (f[None] for f in encode_text(t5, tokenizer, [prompt, ""], CPU))
    latents = initial_noise((1, 16, (FRAMES - 1) // 4 + 1, SIZE // 8, SIZE // 8), seed, "cpu", CPU)
    scheduler = make_scheduler("unipc", STEPS, SHIFT)
    denoiser = WanDenoiser(dit, cfg, True, None, CPU)
    latents = sample(latents, scheduler, [denoiser], context, null if cfg != 1.0 else None)
    return vae.decode(latents)[0]


def rates(model, cfg: float) -> dict[str, float]:
    found = [
        (spec, analyse_clip(generate(model, spec.caption, seed, cfg))) for spec in PROMPTS for seed in SEEDS
    ]
    return {
        "colour": float(np.mean([a.colour == s.colour for s, a in found])),
        "direction": float(np.mean([a.direction == s.direction for s, a in found])),
        "both": float(np.mean([a.colour == s.colour and a.direction == s.direction for s, a in found])),
    }


@needs_assets
def test_assets_are_small_and_in_the_official_layout():
    names = {"diffusion_pytorch_model.safetensors", "config.json", "models_t5_umt5-xxl-enc-bf16.pth",
             "Wan2.1_VAE.pth", "google/umt5-xxl/tokenizer.json"}  # fmt: skip
    assert all((ASSETS / name).is_file() for name in names), sorted(p.name for p in ASSETS.rglob("*"))
    total = sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file())
    assert total < 15 * 2**20, f"{total / 2**20:.1f} MiB"


def test_synthetic_clips_are_read_back_exactly():
    rng = np.random.default_rng(0)
    for _ in range(24):
        frames, caption = make_clip(rng, num_frames=FRAMES, height=SIZE, width=SIZE)
        spec, found = ClipSpec.parse(caption), analyse_clip(frames)
        assert (found.colour, found.direction) == (spec.colour, spec.direction), caption
    first, _ = make_clip(5)
    again, _ = make_clip(5)
    assert torch.equal(first, again)


@needs_assets
def test_guided_videos_match_the_prompt_and_guidance_matters(model):
    guided, unguided = rates(model, CFG), rates(model, 1.0)
    print(
        f"\nmatch rates over {len(PROMPTS)} prompts x {len(SEEDS)} seeds: cfg {CFG}: {guided}; cfg 1: {unguided}"
    )
    # Chance is 1/4 for colour and direction, 1/16 for both.
    assert guided["colour"] >= 0.75 and guided["direction"] >= 0.6 and guided["both"] >= 0.5, guided
    assert unguided["both"] < guided["both"], (unguided, guided)


@needs_assets
def test_cli_generates_with_the_packaged_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    result = run_cli("generate", "recipe=tiny", f"model.root={ASSETS}", "prompt=a red ball moving right", "seed=7",
                     "resolution=32x32", f"pipeline.num_frames={FRAMES}", f"pipeline.cfg_scale={CFG}",
                     "pipeline.negative_prompt=", f"hydra.run.dir={out}")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    import imageio.v2 as imageio

    frames = np.stack([frame for frame in imageio.get_reader(out / "video.mp4")])  # len() is inf
    assert frames.shape == (FRAMES, SIZE, SIZE, 3)
    assert analyse_clip(frames).colour is not None  # an object is there (h264 blurs tiny frames a little)
    strip = write_frame_strip(frames, tmp_path / "strip.png", max_frames=4)
    from PIL import Image

    assert Image.open(strip).size == (4 * (SIZE * 4 + 2) - 2, SIZE * 4)


def test_strip_picks_evenly_spaced_frames():
    frames = np.zeros((9, 4, 5, 3), dtype=np.uint8)
    frames[:, 0, 0, 0] = np.arange(9) * 10
    image = strip_image(frames, max_frames=3, gap=1)
    assert image.shape == (4, 3 * 5 + 2, 3)
    assert [image[0, i * 6, 0] for i in range(3)] == [0, 40, 80]
    assert (image[:, 5] == 255).all()
    with pytest.raises(ValueError, match="uint8"):
        strip_image(frames.astype(np.float32))
    assert to_uint8_frames(torch.zeros(3, 2, 4, 4)).shape == (2, 4, 4, 3)
