"""Every Wan entry's defaults are the official ones: `dump-config model=NAME` against values written down
from the official configs and generate.py rules (each beside the file and setting it comes from).

Sources: Wan2.1 = github.com/Wan-Video/Wan2.1 (generate.py, wan/configs/); Wan2.2 = github.com/Wan-Video/
Wan2.2 generate.py and wan/configs/ (the same files as the `wan22` 2.2.11 wheel); the 4-step distilled
A14B = Wan2.2-Lightning's wan/configs/ (the base model's configs with its own inference settings).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from helpers import dump

from telefuser_cli.config.catalog import catalog

# wan/configs/shared_config.py (Wan2.1 and Wan2.2, the same text): wan_shared_cfg.sample_neg_prompt
SHARED_NEGATIVE = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
# Wan2.1 wan/configs/wan_i2v_14B.py: i2v_14B.sample_neg_prompt = "镜头晃动，" + i2v_14B.sample_neg_prompt
I2V_NEGATIVE = "镜头晃动，" + SHARED_NEGATIVE
# Wan2.1 wan/configs/__init__.py: flf2v_14B = deepcopy(i2v_14B); sample_neg_prompt = "镜头切换，" + its own
FLF2V_NEGATIVE = "镜头切换，" + I2V_NEGATIVE


@dataclass(frozen=True)
class Official:
    steps: int
    shift: float
    cfg: float | tuple[float, float]  # one scale, or (high noise, low noise) on a mixture of experts
    negative: str
    size: tuple[int, int]  # (width, height) at the default resolution
    # Wan2.1 generate.py: frame_num "81 for other tasks"; Wan2.2 shared_config.py: frame_num = 81
    frames: int = 81
    fps: int = 16  # shared_config.py: sample_fps = 16
    boundary: float | None = None  # A14B: the switch between experts, t >= boundary * 1000


OFFICIAL: dict[str, Official] = {
    # Wan2.1 generate.py _validate_args: sample_steps 50 (40 if "i2v" in task), sample_shift 5.0 (3.0 if
    # "i2v" and size in ["832*480", "480*832"]); --sample_guide_scale default 5.0. The 1.3B's only sizes
    # (wan/configs/__init__.py SUPPORTED_SIZES['t2v-1.3B']) are 480*832 / 832*480.
    "wan21_t2v_1.3b": Official(steps=50, shift=5.0, cfg=5.0, negative=SHARED_NEGATIVE, size=(832, 480)),
    # Wan2.1 generate.py: as above; --size default "1280*720" (in SUPPORTED_SIZES['t2v-14B']).
    "wan21_t2v_14b": Official(steps=50, shift=5.0, cfg=5.0, negative=SHARED_NEGATIVE, size=(1280, 720)),
    # Wan2.1 generate.py: i2v -> 40 steps; the 480P weights at 832*480 -> shift 3.0; wan_i2v_14B.py prefix.
    "wan21_i2v_14b_480p": Official(steps=40, shift=3.0, cfg=5.0, negative=I2V_NEGATIVE, size=(832, 480)),
    # Wan2.1 generate.py: i2v -> 40 steps; --size default "1280*720" -> shift 5.0; wan_i2v_14B.py prefix.
    "wan21_i2v_14b_720p": Official(steps=40, shift=5.0, cfg=5.0, negative=I2V_NEGATIVE, size=(1280, 720)),
    # Wan2.2 wan/configs/wan_t2v_A14B.py: sample_steps = 40, sample_shift = 12.0, boundary = 0.875,
    # sample_guide_scale = (3.0, 4.0)  # low noise, high noise. Wan2.2 generate.py: --size default "1280*720".
    "wan22_a14b_t2v": Official(
        steps=40, shift=12.0, cfg=(4.0, 3.0), negative=SHARED_NEGATIVE, size=(1280, 720), boundary=0.875
    ),
    # Wan2.2 wan/configs/wan_i2v_A14B.py: sample_steps = 40, sample_shift = 5.0, boundary = 0.900,
    # sample_guide_scale = (3.5, 3.5); no negative-prompt prefix in Wan2.2.
    "wan22_a14b_i2v": Official(
        steps=40, shift=5.0, cfg=(3.5, 3.5), negative=SHARED_NEGATIVE, size=(1280, 720), boundary=0.9
    ),
    # Wan2.2-Lightning wan/configs/wan_t2v_A14B.py: sample_steps = 4, sample_shift = 5.0, boundary = 0.875,
    # sample_guide_scale = (1.0, 1.0); its run_t2v.sh: --size "1280*720".
    "wan22_a14b_distill": Official(
        steps=4, shift=5.0, cfg=(1.0, 1.0), negative=SHARED_NEGATIVE, size=(1280, 720), boundary=0.875
    ),
    # Wan2.2-Lightning wan/configs/wan_i2v_A14B.py: sample_steps = 4, sample_shift = 5.0, boundary = 0.900,
    # sample_guide_scale = (1.0, 1.0).
    "wan22_a14b_distill_i2v": Official(
        steps=4, shift=5.0, cfg=(1.0, 1.0), negative=SHARED_NEGATIVE, size=(1280, 720), boundary=0.9
    ),
    # Wan2.2 wan/configs/wan_ti2v_5B.py: sample_steps = 50, sample_shift = 5.0, sample_guide_scale = 5.0,
    # frame_num = 121, sample_fps = 24; wan/configs/__init__.py SUPPORTED_SIZES['ti2v-5B'] = 704*1280, 1280*704.
    "wan22_ti2v_5b": Official(
        steps=50, shift=5.0, cfg=5.0, negative=SHARED_NEGATIVE, size=(1280, 704), frames=121, fps=24
    ),
}
# Wan2.1 FLF2V-14B-720P (entries named wan21_flf2v*): generate.py _validate_args: 50 steps (not an i2v
# task), sample_shift = 16 for "flf2v" at every size, --sample_guide_scale 5.0, --size default "1280*720".
FLF2V = Official(steps=50, shift=16.0, cfg=5.0, negative=FLF2V_NEGATIVE, size=(1280, 720))

ENTRIES = sorted(entry.name for entry in catalog("model") if entry.name.startswith(("wan21_", "wan22_")))


def official(name: str) -> Official | None:
    if name.startswith("wan21_flf2v"):
        return FLF2V
    return OFFICIAL.get(name)


def test_every_wan_entry_has_its_official_values_here():
    missing = [name for name in ENTRIES if official(name) is None]
    assert not missing, f"write down the official defaults of {missing} in OFFICIAL"
    assert {"wan21_i2v_14b_480p", "wan21_i2v_14b_720p", "wan22_a14b_t2v"} <= set(ENTRIES)


# The FLF2V entries present (checked by their prefix), or the official name while there is none yet.
FLF2V_ENTRIES = [name for name in ENTRIES if name.startswith("wan21_flf2v")] or ["wan21_flf2v_14b_720p"]


@pytest.mark.parametrize("name", [*OFFICIAL, *FLF2V_ENTRIES])
def test_dump_config_gives_the_official_defaults(name):
    if name not in ENTRIES:
        # The TI2V-5B and FLF2V entries come from other work: checked once their files exist.
        pytest.skip(f"no model entry {name} in conf/model/")
    want = official(name)
    document = dump(f"model={name}")
    pipeline, derived = document["layer2_inference_config"], document["derived"]
    got = {
        "steps": pipeline["num_inference_steps"],
        "shift": pipeline["sigma_shift"],
        "cfg": (
            (pipeline["cfg_scale_high"], pipeline["cfg_scale_low"])
            if document["layer1_model_definition"]["facts"].get("moe")
            else pipeline["cfg_scale"]
        ),
        "negative": pipeline["negative_prompt"],
        "size": (derived["width"], derived["height"]),
        "frames": pipeline["num_frames"],
        "fps": pipeline["fps"],
        "boundary": pipeline["boundary"] if want.boundary is not None else None,
    }
    assert got == want.__dict__, name
    # With no negative prompt of the user's, the one encoded is the official default, whole.
    assert derived["effective_negative_prompt"] == want.negative
