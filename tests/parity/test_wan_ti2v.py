"""Wan2.2 TI2V-5B through the CLI against diffusers on the same tiny weights (float32, CPU): text-to-video
with ``WanPipeline(expand_timesteps=True)``, image-to-video with ``WanImageToVideoPipeline(expand_timesteps=
True)``, both with ``AutoencoderKLWan`` in its Wan2.2 configuration (official keys mapped by
``tests/wan22_vae_keys.py``: diffusers has no converter for this VAE). Plus the official sizing rule.

diffusers keeps the image latent out of its scheduler's state (it mixes frame 0 in only for the model input
and at the end) where the official code resets frame 0 after each step; the solver works element by
element, so the final latents agree either way.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.numeric

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import test_wan_pipeline as wan_parity  # noqa: E402  (tiny diffusers pipeline pieces, grid, CLI helper)
from diffusers import WanImageToVideoPipeline  # noqa: E402
from wan22_vae_keys import diffusers_wan22_vae  # noqa: E402

from telefuser_cli.families.tiny import write_tiny  # noqa: E402
from telefuser_cli.families.wan.ti2v import cover_crop, first_frame, ti2v_size  # noqa: E402
from telefuser_cli.families.wan.tiny import TINY_VAE22, VAE22_FILE  # noqa: E402
from telefuser_cli.loading import wan as wan_loading  # noqa: E402
from telefuser_cli.loading.checkpoint import read_state_dict  # noqa: E402

PROMPT, NEGATIVE = wan_parity.PROMPT, wan_parity.NEGATIVE
FRAMES, STEPS, SHIFT, CFG = 5, 4, 5.0, 5.0
TOL = 1e-4  # the Wan parity tolerance (max abs error / max abs reference), as the other Wan pipelines


@pytest.fixture(scope="module")
def ti2v_root(tmp_path_factory):
    return write_tiny("tiny_wan22_ti2v", tmp_path_factory.mktemp("ti2v") / "tiny_wan22_ti2v", seed=4)


def _diffusers_parts(root):
    """diffusers' transformer (48 channels, from the DiT's shards) and its Wan2.2 VAE on the same weights."""
    dit = read_state_dict(sorted(root.glob("diffusion_pytorch_model-*.safetensors")))
    transformer = wan_parity.diffusers_transformer(None, state_dict=dit)
    vae = diffusers_wan22_vae(TINY_VAE22, read_state_dict([root / VAE22_FILE]))
    return transformer, vae


def _noise(width, height, seed):
    shape = (1, 48, (FRAMES - 1) // 4 + 1, height // 16, width // 16)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _common(root, seed, width, height):
    return (
        "recipe=tiny_ti2v", f"model.root={root}", f"prompt={PROMPT}", f"pipeline.negative_prompt={NEGATIVE}",
        f"seed={seed}", f"pipeline.num_inference_steps={STEPS}", f"pipeline.sigma_shift={SHIFT}",
        f"pipeline.cfg_scale={CFG}", f"pipeline.num_frames={FRAMES}", f"resolution={width}x{height}",
    )  # fmt: skip


def test_text_to_video_matches_diffusers(tmp_path, ti2v_root, monkeypatch):
    monkeypatch.chdir(tmp_path)
    width, height, seed = 64, 32, 3
    ours, _ = wan_parity._ours(tmp_path, *_common(ti2v_root, seed, width, height))
    transformer, vae = _diffusers_parts(ti2v_root)
    scheduler = wan_parity.OfficialGridUniPC.from_config(
        wan_parity.diffusers_pipeline(ti2v_root, transformer=transformer, vae=vae).scheduler.config
    )
    pipe = wan_parity.diffusers_pipeline(
        ti2v_root, scheduler=scheduler, transformer=transformer, vae=vae, expand_timesteps=True
    )
    noise = _noise(width, height, seed)
    with torch.no_grad():
        reference = pipe(
            prompt=PROMPT, negative_prompt=NEGATIVE, height=height, width=width, num_frames=FRAMES,
            num_inference_steps=STEPS, guidance_scale=CFG, latents=noise.clone(), output_type="latent",
            max_sequence_length=512,
        ).frames  # fmt: skip
    error = wan_parity.relative_error(ours, reference)
    print(f"TI2V t2v final latents: max relative error {error:.2e}")
    assert error < TOL
    assert wan_parity.relative_error(noise, reference) > 1e-2  # the run moved the latents: the test has teeth


def _image(path, width, height):
    y, x = np.mgrid[0:height, 0:width]
    Image.fromarray(np.stack([x * 3, y * 5, (x + y) % 255], -1).astype(np.uint8)).save(path)
    return path


def test_image_to_video_matches_diffusers_and_pins_the_first_frame(tmp_path, ti2v_root, monkeypatch):
    """The image is already at the output size (96x64: the official rule keeps it), so the official
    cover-resize and diffusers' resize both leave it unchanged."""
    monkeypatch.chdir(tmp_path)
    width, height, seed = 96, 64, 11
    image = _image(tmp_path / "first.png", width, height)
    ours, document = wan_parity._ours(
        tmp_path, *_common(ti2v_root, seed, width, height), f"user.input_image={image}"
    )
    assert document["run"]["size_written"] == [width, height]

    # the first latent frame is the image's VAE latent, exactly (never sampled, reset after every step)
    vae_files = wan_loading.locate(ti2v_root, "vae", VAE22_FILE)
    ours_vae = wan_loading.load_vae(vae_files, dtype=torch.float32, device=torch.device("cpu"))
    pinned = first_frame(image, width * height, ours_vae, (1, 2, 2))
    assert torch.equal(ours[:, :, :1], pinned.latent)
    assert not torch.equal(ours[:, :, 1:2], pinned.latent)

    transformer, vae = _diffusers_parts(ti2v_root)
    base = wan_parity.diffusers_pipeline(ti2v_root, transformer=transformer, vae=vae)
    scheduler = wan_parity.OfficialGridUniPC.from_config(base.scheduler.config)
    pipe = WanImageToVideoPipeline(
        tokenizer=base.tokenizer, text_encoder=base.text_encoder, vae=vae, scheduler=scheduler,
        transformer=transformer, expand_timesteps=True,
    )  # fmt: skip
    with torch.no_grad():
        reference = pipe(
            image=Image.open(image), prompt=PROMPT, negative_prompt=NEGATIVE, height=height, width=width,
            num_frames=FRAMES, num_inference_steps=STEPS, guidance_scale=CFG,
            latents=_noise(width, height, seed), output_type="latent", max_sequence_length=512,
        ).frames  # fmt: skip
    error = wan_parity.relative_error(ours, reference)
    frame0 = wan_parity.relative_error(ours[:, :, :1], reference[:, :, :1])
    print(f"TI2V i2v final latents: max relative error {error:.2e} (image frame {frame0:.2e})")
    assert error < TOL


# (image width, height, pixel budget) -> (width, height) from the official ``best_output_size`` (Wan2.2
# ``wan/utils/utils.py``, wheel wan22==2.2.11) with its 32-pixel steps, run on these inputs.
OFFICIAL_SIZES = {
    (1920, 1080, 704 * 1280): (1248, 704),
    (1080, 1920, 704 * 1280): (704, 1248),
    (1024, 1024, 704 * 1280): (960, 928),
    (800, 600, 704 * 1280): (1088, 800),
    (90, 50, 64 * 64): (64, 64),
    (1280, 704, 1280 * 704): (1280, 704),
    (3000, 1000, 704 * 1280): (1632, 544),
    (640, 480, 832 * 480): (704, 544),
    (500, 1000, 480 * 832): (448, 864),
    (1000, 1001, 64 * 64): (64, 64),
}


@pytest.mark.parametrize("case", sorted(OFFICIAL_SIZES))
def test_output_size_is_the_official_rule(case):
    width, height, budget = case
    assert ti2v_size(width, height, budget, 32, 32) == OFFICIAL_SIZES[case]


def test_cover_crop_keeps_an_image_of_the_size_and_centres_a_larger_one():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    same = cover_crop(rgb, 96, 64)
    assert torch.equal(same, torch.from_numpy(rgb).permute(2, 0, 1).float().div(255).sub(0.5).div(0.5))
    # twice as wide as needed at the right height: no scaling, the middle half is cut out
    wide = rng.integers(0, 256, (64, 192, 3), dtype=np.uint8)
    assert torch.equal(cover_crop(wide, 96, 64), cover_crop(wide[:, 48:144].copy(), 96, 64))
    # smaller than the output: scaled up until it covers it, then cropped
    assert cover_crop(rgb[:32, :40].copy(), 96, 64).shape == (3, 64, 96)
