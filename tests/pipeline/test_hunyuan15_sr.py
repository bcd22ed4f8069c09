"""HunyuanVideo 1.5 SR stage: its specification (sizes, lq noising, the conditioning cut-off, the upsampler
layouts) and a tiny end-to-end run (base t2v -> upsample -> SR DiT -> decode) from ``tiny_hunyuan15_sr``."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from telefuser_cli.families.hunyuan15 import sr
from telefuser_cli.families.hunyuan15.decode import decode
from telefuser_cli.families.hunyuan15.latents import initial_noise, latent_shape, t2v_condition
from telefuser_cli.families.hunyuan15.pipeline import Hunyuan15Denoiser
from telefuser_cli.families.hunyuan15.text import TextConditioning, encode_prompts, find_crop_start
from telefuser_cli.families.hunyuan15.tiny import SR_VERSION, T2V_VERSION, write_tiny_hunyuan15
from telefuser_cli.loading import hunyuan15 as loading
from telefuser_cli.models.hunyuan15_upsampler import (
    SRTo720pConfig,
    SRTo720pUpsampler,
    SRTo1080pConfig,
    SRTo1080pUpsampler,
)
from telefuser_cli.pipelines.sampling import sample
from telefuser_cli.runtime.transforms import Placed
from telefuser_cli.schedulers import make_scheduler

pytestmark = pytest.mark.numeric

DEV = torch.device("cpu")
SR_STEPS, SR_SHIFT = 6, 2.0  # the official SR pipeline's defaults (pipeline.sr_steps, pipeline.sr_shift)


def super_resolve(dit, upsampler, lq, size, text, seed, base_condition=None, image_embeds=None):
    """The SR stage as the driver runs it: :func:`sr.prepare`, then the one sampling loop (CFG 1)."""
    start, condition = sr.prepare(dit, upsampler, lq, size, seed, base_condition=base_condition)
    denoiser = Hunyuan15Denoiser(Placed(dit), 1.0, condition, image_embeds)
    return sample(start, make_scheduler("euler", SR_STEPS, SR_SHIFT), [denoiser], text, None)


def test_target_sizes_follow_the_official_buckets():
    assert sr.sr_target_size(480, 848, "480p", "720p") == (720, 1280)
    assert sr.sr_target_size(848, 480, "480p", "720p") == (1280, 720)
    assert sr.sr_target_size(640, 640, "480p", "720p") == (960, 960)
    with pytest.raises(ValueError, match="850x480 is not a 480p bucket"):
        sr.sr_target_size(480, 850, "480p", "720p")
    with pytest.raises(ValueError, match="'360p'"):
        sr.sr_target_size(480, 848, "360p", "720p")


def test_lq_noising_and_condition_layout():
    g = torch.Generator().manual_seed(0)
    lq, noise = torch.randn(1, 4, 2, 3, 3, generator=g), torch.randn(1, 4, 2, 3, 3, generator=g)
    noised = sr.noise_lq(lq, noise, 0.7)
    torch.testing.assert_close(noised, 0.3 * lq + 0.7 * noise, rtol=0, atol=1e-6)
    assert torch.equal(sr.noise_lq(lq, noise, 0.0), lq)
    cond = sr.sr_condition(t2v_condition(lq), noised)
    assert cond.shape == (1, 10, 2, 3, 3)  # [cond 4, mask 1, lq 4, ones 1]
    assert torch.equal(cond[:, :5], torch.zeros_like(cond[:, :5]))
    assert torch.equal(cond[:, 5:9], noised) and torch.equal(cond[:, 9], torch.ones_like(cond[:, 9]))
    dropped = sr.drop_lq(cond)
    assert torch.equal(dropped, torch.zeros_like(cond))  # t2v: everything zero once lq is dropped
    assert torch.equal(cond[:, 5:9], noised)  # the original is untouched


def test_resize_is_per_frame_bilinear():
    x = torch.randn(2, 3, 4, 5, 6, generator=torch.Generator().manual_seed(1))
    out = sr.resize_latents(x, (8, 9))
    ref = torch.nn.functional.interpolate(x[:, :, 2], size=(8, 9), mode="bilinear", align_corners=False)
    assert out.shape == (2, 3, 4, 8, 9) and torch.equal(out[:, :, 2], ref)


class _SpyDiT(torch.nn.Module):
    """Records, per call, the timestep and whether the lq channels were present; predicts zero flow.

    Its prepared context is the arguments :meth:`prepare_context` got, as the denoiser passes them."""

    def __init__(self, channels: int):
        super().__init__()
        self.config = type("Cfg", (), {"use_meanflow": False, "patch_in_channels": 3 * channels + 2,
                                       "out_channels": channels})()  # fmt: skip
        self.calls: list[tuple[float, bool]] = []
        self.c = channels

    def prepare_context(self, text, text_mask, glyph=None, glyph_mask=None, image_embeds=None):
        return SimpleNamespace(text=text, image_embeds=image_embeds)

    def forward(self, x, t, context, timestep_r=None):
        self.calls.append((float(t[0]), bool(x[:, 2 * self.c + 1 :].abs().sum() > 0)))
        return torch.zeros_like(x[:, : self.c])


def test_condition_cut_off_below_1000_times_strength():
    dit = _SpyDiT(4)
    up = SRTo720pUpsampler(SRTo720pConfig(in_channels=4, out_channels=4, hidden_channels=4, num_blocks=1))
    text = TextConditioning(torch.zeros(1, 3, 8), torch.ones(1, 3), None, None)
    lq = torch.randn(1, 4, 2, 2, 3, generator=torch.Generator().manual_seed(2))
    out = super_resolve(dit, up, lq, (3, 4), text, seed=0)
    assert out.shape == (1, 4, 2, 3, 4)
    expected_t = make_scheduler(
        "euler", SR_STEPS, SR_SHIFT
    ).timesteps.tolist()  # 1000, 909.1, 800, 666.7, 500, 285.7
    assert [t for t, _ in dit.calls] == pytest.approx(expected_t)
    assert [has_lq for _, has_lq in dit.calls] == [t >= 700.0 for t in expected_t] == [True] * 3 + [False] * 3


def test_initial_latents_are_the_official_bfloat16_draw():
    """A zero-flow DiT leaves the initial latents as they are: the seed's noise drawn in bfloat16 on a CPU
    generator (the official SR ``prepare_latents``, target_dtype bfloat16), then kept in float32."""
    up = SRTo720pUpsampler(SRTo720pConfig(in_channels=4, out_channels=4, hidden_channels=4, num_blocks=1))
    text = TextConditioning(torch.zeros(1, 3, 8), torch.ones(1, 3), None, None)
    lq = torch.randn(1, 4, 2, 2, 3, generator=torch.Generator().manual_seed(2))
    out = super_resolve(_SpyDiT(4), up, lq, (3, 4), text, seed=5)
    generator = torch.Generator(device="cpu").manual_seed(5)
    official = torch.randn((1, 4, 2, 3, 4), generator=generator, device="cpu", dtype=torch.bfloat16)
    assert out.dtype == torch.float32 and torch.equal(out, official.float())


class _InputSpy(_SpyDiT):
    """Also keeps every call's input channels and image tokens."""

    def forward(self, x, t, context, timestep_r=None):
        self.inputs = getattr(self, "inputs", []) + [(x.clone(), context.image_embeds)]
        return super().forward(x, t, context, timestep_r)


def test_image_to_video_condition_reaches_every_step():
    """i2v: the image's cond latents and mask (at the SR size) stay in channels C..2C for every step, also
    after the lq channels are dropped, and its SigLIP tokens go with every call (official SR pipeline)."""
    c = 4
    dit = _InputSpy(c)
    up = SRTo720pUpsampler(SRTo720pConfig(in_channels=c, out_channels=c, hidden_channels=4, num_blocks=1))
    text = TextConditioning(torch.zeros(1, 3, 8), torch.ones(1, 3), None, None)
    g = torch.Generator().manual_seed(3)
    lq = torch.randn(1, c, 2, 2, 3, generator=g)
    image_cond = torch.zeros(1, c + 1, 2, 3, 4)
    image_cond[:, :c, 0] = torch.randn(1, c, 3, 4, generator=g)
    image_cond[:, c, 0] = 1.0
    tokens = torch.randn(1, 5, 7, generator=g)
    super_resolve(dit, up, lq, (3, 4), text, seed=0, base_condition=image_cond, image_embeds=tokens)
    assert len(dit.inputs) == 6
    for x, embeds in dit.inputs:
        assert torch.equal(x[:, c : 2 * c + 1], image_cond) and embeds is tokens
    with pytest.raises(ValueError, match="cond latents and mask at the SR size"):
        sr.prepare(dit, up, lq, (3, 4), seed=0, base_condition=image_cond[..., :2, :])


def test_upsampler_layouts_round_trip_through_config_inference():
    for cfg, cls in (
        (SRTo720pConfig(in_channels=4, out_channels=4, hidden_channels=8, num_blocks=2), SRTo720pUpsampler),
        (SRTo1080pConfig(z_channels=4, out_channels=4, block_out_channels=(8, 16), num_res_blocks=1),
         SRTo1080pUpsampler),
    ):  # fmt: skip
        model = cls(cfg)
        sd = model.state_dict()
        assert loading.infer_upsampler_config(sd, None) == cfg
        x = torch.randn(1, 4, 3, 4, 5)
        assert model(x).shape == (1, 4, 3, 4, 5)
    assert "up.1.block.0.nin_shortcut.weight" in sd and "up.0.block.0.nin_shortcut.weight" not in sd


@torch.no_grad()
def test_tiny_end_to_end(tmp_path):
    root = write_tiny_hunyuan15(tmp_path / "tiny_hunyuan15_sr", seed=1, sr=True)
    assert loading.dit_facts(root, SR_VERSION).super_resolution
    assert not loading.dit_facts(root, T2V_VERSION).super_resolution
    llm, tok = loading.load_text_encoder(root, torch.float32, DEV)
    crop = find_crop_start(tok)
    byt5, btok = loading.load_byt5(root, torch.float32, DEV)
    base = loading.load_dit(root, T2V_VERSION, torch.float32, DEV)
    sr_dit = loading.load_dit(root, SR_VERSION, torch.float32, DEV)
    up = loading.load_upsampler(root, SR_VERSION, DEV)
    vae = loading.load_vae(root, torch.float32, DEV)
    positive = encode_prompts(llm, tok, byt5, btok, ['a sign saying "hi"'], DEV, crop, max_length=32)
    negative = encode_prompts(llm, tok, byt5, btok, [""], DEV, crop, max_length=32)

    noise = initial_noise(latent_shape(1, 5, 32, 48, channels=4), 0, DEV)
    denoiser = Hunyuan15Denoiser(Placed(base), 6.0, t2v_condition(noise))
    lq = sample(noise, make_scheduler("euler", 2, 5.0), [denoiser], positive, negative)
    out = super_resolve(sr_dit, up, lq, (3, 4), positive, seed=0)
    assert out.shape == (1, 4, 2, 3, 4) and out.dtype == torch.float32 and torch.isfinite(out).all()
    again = super_resolve(sr_dit, up, lq, (3, 4), positive, seed=0)
    assert torch.equal(out, again)  # seeded: reproducible
    video = decode(vae, out, tile=(2, 2), stride=(1, 1), tile_frames=16)
    assert video.shape == (1, 3, 5, 48, 64) and video.abs().max() <= 1.0
    pre_sr = decode(vae, lq)
    assert pre_sr.shape == (1, 3, 5, 32, 48)
    with pytest.raises(ValueError, match="is this the SR transformer"):
        sr.prepare(base, up, lq, (3, 4), seed=0)
