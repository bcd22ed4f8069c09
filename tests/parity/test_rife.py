"""RIFE IFNet parity against ccvfi's IFNet (RIFE v4.26 heavy) on the same random weights, float32, CPU;
the interpolation plan, padding, the ``module.`` prefix and the refusal of unsafe pickles."""

from __future__ import annotations

import importlib.util
import math
import pathlib
import sys
from fractions import Fraction
from pathlib import Path
from types import ModuleType, SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from telefuser_cli.errors import UserError
from telefuser_cli.loading.rife_arch import (
    TINY_RIFE,
    infer_rife_config,
    load_rife,
    strip_module_prefix,
    tiny_rife_state_dict,
    write_tiny_rife,
)
from telefuser_cli.models.rife import IFNet, RIFEConfig, size_multiple
from telefuser_cli.pipelines.vfi import interpolate, interpolation_plan, network_calls, output_frame_count

pytestmark = pytest.mark.numeric

TOL = 1e-5  # float32 round-off (measured ~1e-7 relative)


def _load_reference() -> ModuleType:
    """ccvfi's ``arch/ifnet_arch.py`` (with its ``warplayer.py``), loaded as files.

    ``import ccvfi`` also imports its model wrappers and downloader (cv2, torchvision, tenacity), which
    the architecture does not use; only the registry decorator and an enum are stubbed.
    """
    spec = importlib.util.find_spec("ccvfi")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("ccvfi is not installed (pip install --no-deps ccvfi)")
    root = Path(spec.submodule_search_locations[0])
    registry = SimpleNamespace(register=lambda name=None: lambda obj: obj)
    stubs = {
        "ccvfi": ModuleType("ccvfi"),
        "ccvfi.arch": SimpleNamespace(ARCH_REGISTRY=registry),
        "ccvfi.arch.arch_utils": ModuleType("ccvfi.arch.arch_utils"),
        "ccvfi.type": SimpleNamespace(ArchType=SimpleNamespace(IFNET="IFNET")),
    }
    with mock.patch.dict(sys.modules, stubs):
        for name, rel in (
            ("ccvfi.arch.arch_utils.warplayer", "arch/arch_utils/warplayer.py"),
            ("ccvfi.arch.ifnet_arch", "arch/ifnet_arch.py"),
        ):
            file_spec = importlib.util.spec_from_file_location(name, root / rel)
            module = importlib.util.module_from_spec(file_spec)
            sys.modules[name] = module
            file_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ref_arch() -> ModuleType:
    return _load_reference()


def randomize_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Default-like init with non-trivial betas and biases."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("beta"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            else:
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) / math.sqrt(p[0].numel()))
    return model.eval()


def errors(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    diff = (a - b).abs().max().item()
    return diff, diff / b.abs().max().item()


def reference_pair(ref_arch: ModuleType, cfg: RIFEConfig, seed: int = 0):
    ours = randomize_(IFNet(cfg), seed)
    ref = ref_arch.IFNet()
    if cfg.block_widths != RIFEConfig().block_widths:
        # ccvfi's IFNet hard-codes the released widths; its IFBlock takes the width as an argument.
        for i, (cin, c) in enumerate(zip(cfg.block_inputs, cfg.block_widths, strict=True)):
            setattr(ref, f"block{i}", ref_arch.IFBlock(cin, c=c))
    ref.load_state_dict(ours.state_dict(), strict=True)
    return ours, ref.eval()


def images(b: int, h: int, w: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # Smooth images (upsampled noise) so that warping by the predicted flows matters.
    x = F.interpolate(torch.rand(2 * b, 3, h // 8, w // 8, generator=g), size=(h, w), mode="bicubic")
    return x.clamp(0, 1).chunk(2)


def test_key_layout_is_the_released_one(ref_arch):
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in IFNet().state_dict().items()}
        ref = {k: tuple(v.shape) for k, v in ref_arch.IFNet().state_dict().items()}
    assert ours == ref
    assert infer_rife_config(ours) == RIFEConfig()


@pytest.mark.parametrize(
    ("widths", "size", "scale"),
    [((192, 128, 96, 64, 32), 64, 1.0), ((16, 16, 8, 8, 8), 128, 0.5), ((16, 16, 8, 8, 8), 64, 2.0)],
)
def test_parity_with_ccvfi(ref_arch, widths, size, scale):
    ours, ref = reference_pair(ref_arch, RIFEConfig(block_widths=widths))
    img0, img1 = images(2, size, size)
    t = torch.tensor([0.3, 0.7])
    scale_list = ours.scale_list(scale)
    with torch.no_grad():
        got = ours(img0, img1, t, scale_list)
        want = ref(torch.cat((img0, img1), 1), t.view(2, 1, 1, 1).expand(2, 1, size, size), scale_list)
    abs_err, rel_err = errors(got, want)
    print(f"widths={widths} {size}x{size} scale={scale}: max abs {abs_err:.2e}, rel {rel_err:.2e}")
    assert rel_err < TOL
    # Not a trivial blend: the flows moved pixels.
    assert (got - (img0 + img1) / 2).abs().max() > 1e-2


def test_float_timestep_and_endpoints(ref_arch):
    """t = 0 / 1 match the reference; with random weights neither reproduces the neighbour (that is a
    property of trained weights), which is why the pipeline copies source frames instead."""
    ours, ref = reference_pair(ref_arch, RIFEConfig(block_widths=(16, 16, 8, 8, 8)), seed=3)
    img0, img1 = images(1, 64, 64, seed=4)
    with torch.no_grad():
        for t, neighbour in ((0.0, img0), (1.0, img1)):
            got = ours(img0, img1, t)
            want = ref(torch.cat((img0, img1), 1), t)
            assert errors(got, want)[1] < TOL
            print(f"t={t}: ours vs neighbour {errors(got, neighbour)[0]:.3f}, "
                  f"reference vs neighbour {errors(want, neighbour)[0]:.3f}")  # fmt: skip


def test_meta_build_and_assign_load(tmp_path):
    sd = tiny_rife_state_dict(seed=0)
    with torch.device("meta"):
        model = IFNet(infer_rife_config({k: v.shape for k, v in sd.items()}))
    model.load_state_dict(sd, strict=True, assign=True)
    img0, img1 = images(1, 64, 64)
    with torch.no_grad():
        out = model(img0, img1, 0.5)
    assert out.shape == (1, 3, 64, 64) and out.dtype == torch.float32
    assert 0 <= out.min() and out.max() <= 1
    # The tiny flows are small: the result stays close to the blend (the demo's "cross-fade").
    assert (out - (img0 + img1) / 2).abs().max() < 0.25


def test_bf16_run_close_to_float32():
    model = IFNet(TINY_RIFE).eval()
    model.load_state_dict(tiny_rife_state_dict(seed=0))
    img0, img1 = images(1, 64, 64)
    with torch.no_grad():
        want = model(img0, img1, 0.5)
        got = model.to(torch.bfloat16)(img0, img1, 0.5)
    assert got.dtype == torch.float32
    print(f"bf16 vs float32: max abs {errors(got, want)[0]:.2e}")
    assert errors(got, want)[0] < 2e-2


def test_size_checks():
    model = IFNet(TINY_RIFE)
    assert size_multiple(model.scale_list()) == 64
    assert size_multiple(model.scale_list(0.5)) == 128
    x = torch.zeros(1, 3, 32, 64)
    with pytest.raises(ValueError, match="multiples of 64"):
        model(x, x, 0.5)
    with pytest.raises(ValueError, match="block_widths"):
        RIFEConfig(block_widths=(15,))
    with pytest.raises(ValueError, match="scales"):
        RIFEConfig(block_widths=(16, 16), scales=(1.0,))


# --- the plan -----------------------------------------------------------------------------------------


def test_plan_16_to_32():
    plan = interpolation_plan(5, 16, 32)
    assert plan == [(0, 0, 0.0), (0, 1, 0.5), (1, 1, 0.0), (1, 2, 0.5), (2, 2, 0.0),
                    (2, 3, 0.5), (3, 3, 0.0), (3, 4, 0.5), (4, 4, 0.0), (4, 4, 0.0)]  # fmt: skip
    assert len(interpolation_plan(81, 16, 32)) == 162  # 162 / 32 s == 81 / 16 s
    assert network_calls(plan) == 4


def test_plan_16_to_24():
    plan = interpolation_plan(5, 16, 24)
    assert [(i, j) for i, j, _ in plan] == [(0, 0), (0, 1), (1, 2), (2, 2), (2, 3), (3, 4), (4, 4), (4, 4)]
    assert [Fraction(t).limit_denominator(10) for _, _, t in plan] == [0, Fraction(2, 3), Fraction(1, 3), 0,
                                                                        Fraction(2, 3), Fraction(1, 3), 0, 0]  # fmt: skip
    assert len(interpolation_plan(81, 16, 24)) == 122  # ceil(81 * 1.5)


def test_plan_16_to_30():
    plan = interpolation_plan(81, 16, 30)
    assert len(plan) == output_frame_count(81, 16, 30) == 152  # ceil(81 * 30 / 16) = ceil(151.875)
    for k, (i, j, t) in enumerate(plan):
        position = Fraction(k * 16, 30)
        if position >= 80:
            assert (i, j, t) == (80, 80, 0.0)
        else:
            assert i == math.floor(position) and abs(t - float(position - i)) < 1e-12
            assert j == (i if t == 0 else i + 1)
    assert plan[15] == (8, 8, 0.0)  # 15 / 30 s is source frame 8


def test_plan_errors():
    assert interpolation_plan(3, 16, 16) == [(0, 0, 0.0), (1, 1, 0.0), (2, 2, 0.0)]
    with pytest.raises(ValueError, match="target_fps=8"):
        interpolation_plan(5, 16, 8)
    with pytest.raises(ValueError, match="num_frames=0"):
        interpolation_plan(0, 16, 32)


# --- the video path -----------------------------------------------------------------------------------


def _video(f: int, h: int, w: int) -> np.ndarray:
    g = torch.Generator().manual_seed(7)
    x = F.interpolate(torch.rand(f, 3, 4, 4, generator=g), size=(h, w), mode="bilinear")
    return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def test_interpolate_pads_crops_and_copies():
    model = IFNet(TINY_RIFE).eval()
    model.load_state_dict(tiny_rife_state_dict(seed=0))
    frames = _video(5, 36, 52)
    calls = []
    out = interpolate(
        model, frames, 16, 24, torch.device("cpu"), chunk_size=2, advance=lambda: calls.append(1)
    )
    plan = interpolation_plan(5, 16, 24)
    assert isinstance(out, np.ndarray) and out.shape == (8, 36, 52, 3) and out.dtype == np.uint8
    assert len(calls) == math.ceil(network_calls(plan) / 2) == 2
    for k, (i, _j, t) in enumerate(plan):
        if t == 0:
            assert np.array_equal(out[k], frames[i])
    # One interpolated frame by hand: zero-pad to 64 x 64, run, crop.
    k, (i, j, t) = 1, plan[1]
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    x = F.pad(x, (0, 12, 0, 28))
    with torch.no_grad():
        mid = model(x[i : i + 1], x[j : j + 1], t)[0, :, :36, :52]
    want = (mid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.abs(out[k].astype(int) - want.astype(int)).max() <= 1
    # A tensor in, a tensor out.
    assert torch.equal(
        interpolate(model, torch.from_numpy(frames), 16, 24, torch.device("cpu")), torch.from_numpy(out)
    )


def test_interpolate_rejects_float_frames():
    with pytest.raises(ValueError, match="uint8"):
        interpolate(IFNet(TINY_RIFE), np.zeros((2, 8, 8, 3), np.float32), 16, 32, torch.device("cpu"))


# --- files --------------------------------------------------------------------------------------------


def test_tiny_file_has_module_prefix_and_loads(tmp_path):
    path = write_tiny_rife(tmp_path / "flownet.pkl", seed=0)
    raw = torch.load(path, weights_only=True)
    assert raw and all(k.startswith("module.") for k in raw)
    assert torch.equal(raw["module.encode.cnn0.weight"], tiny_rife_state_dict(seed=0)["encode.cnn0.weight"])
    model = load_rife(path, device=torch.device("cpu"))
    assert model.config == TINY_RIFE
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    # Without the prefix it loads the same.
    torch.save(strip_module_prefix(raw), tmp_path / "plain.pkl")
    plain = load_rife(tmp_path / "plain.pkl", device=torch.device("cpu"), dtype=torch.bfloat16)
    assert plain.encode.cnn0.weight.dtype == torch.bfloat16


def test_layout_errors_name_the_key():
    sd = tiny_rife_state_dict(seed=0)
    mixed = {
        "module.encode.cnn0.weight": sd["encode.cnn0.weight"],
        "block0.conv0.0.0.weight": sd["encode.cnn0.weight"],
    }
    with pytest.raises(ValueError, match="'block0.conv0.0.0.weight'"):
        strip_module_prefix(mixed)
    shapes = {k: v.shape for k, v in sd.items()}
    with pytest.raises(ValueError, match="'teacher.block0.weight'"):
        infer_rife_config({**shapes, "teacher.block0.weight": torch.Size([1])})
    with pytest.raises(ValueError, match="'encode.cnn0.weight'"):
        infer_rife_config({k: v for k, v in shapes.items() if k != "encode.cnn0.weight"})
    with pytest.raises(ValueError, match="block0.convblock.1.beta"):
        infer_rife_config({k: v for k, v in shapes.items() if k != "block0.convblock.1.beta"})
    with pytest.raises(ValueError, match="'block1.conv0.1.0.weight'"):
        infer_rife_config({k: v for k, v in shapes.items() if not k.startswith("block1.conv0.1")})


class _Payload:
    """Unpickling this would run code: it creates a file."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (pathlib.Path.touch, (self.target,))


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "flownet.pkl"
    torch.save({"module.encode.cnn0.weight": torch.zeros(1), "x": _Payload(marker)}, path)
    with pytest.raises(Exception) as info:  # noqa: PT011 - torch's own error type varies by version
        torch.load(path, weights_only=True)
    assert "weights_only" in str(info.value) or "Unsupported" in str(info.value)
    with pytest.raises(UserError, match="refused to load"):
        load_rife(path, device=torch.device("cpu"))
    assert not marker.exists()
