"""A real generation with the tiny model through the CLI, and the errors a user can cause."""

from __future__ import annotations

import json
import pickle
import shutil

import imageio.v2 as imageio
import pytest
import torch
from helpers import run_cli
from safetensors.torch import load_file

FAST = ["recipe=tiny", "pipeline.num_inference_steps=3", "pipeline.num_frames=5", "resolution=32x32"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def generate(out, *overrides):
    return run_cli("generate", *FAST, f"hydra.run.dir={out}", *overrides)


def test_tiny_generation_writes_video_config_and_latents(tmp_path, tiny_root):
    out = tmp_path / "run"
    result = generate(out, f"model.root={tiny_root}", "prompt=a red ball moving right", "seed=7",
                      "output.save_latents=true")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    reader = imageio.get_reader(out / "video.mp4")
    frames = [frame for frame in reader]
    assert len(frames) == 5 and frames[0].shape == (32, 32, 3)
    meta = reader.get_meta_data()
    assert meta["fps"] == 16.0
    document = json.loads((out / "config.json").read_text())
    assert document["run"]["video"] == "video.mp4"
    assert set(document["run"]["timings_s"]) >= {"encode text", "denoise", "decode"}
    assert document["run"]["peak_memory"]["host_rss_gib"] > 0
    latents = load_file(out / "latents.safetensors")["latents"]
    assert latents.dtype == torch.float32 and tuple(latents.shape) == (16, 2, 4, 4)
    assert not list(out.glob(".*partial*"))


def test_same_seed_gives_identical_latents_and_replay_reproduces(tmp_path, tiny_root):
    runs = []
    for name in ("a", "b"):
        result = generate(tmp_path / name, f"model.root={tiny_root}", "prompt=a cat", "seed=11",
                          "output.save_latents=true")  # fmt: skip
        assert result.exit_code == 0, result.stderr
        runs.append(load_file(tmp_path / name / "latents.safetensors")["latents"])
    # the same config twice in one process: the same kernels on the same data, so bit for bit
    assert torch.equal(runs[0], runs[1])
    result = run_cli("generate", "--from-config", str(tmp_path / "a" / "config.json"),
                     f"hydra.run.dir={tmp_path / 'replay'}")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert torch.equal(load_file(tmp_path / "replay" / "latents.safetensors")["latents"], runs[0])
    different = generate(tmp_path / "c", f"model.root={tiny_root}", "prompt=a cat", "seed=12",
                         "output.save_latents=true")  # fmt: skip
    assert different.exit_code == 0
    assert not torch.equal(load_file(tmp_path / "c" / "latents.safetensors")["latents"], runs[0])


def test_tiny_model_is_created_on_first_use(tmp_path):
    from telefuser_cli.paths import cache_dir

    result = generate(tmp_path / "run", "model=tiny_wan21_random", "prompt=a dog")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "run" / "video.mp4").is_file()
    assert (
        cache_dir() / "tiny_wan21" / "diffusion_pytorch_model.safetensors"
    ).is_file()  # named after its maker


def test_the_packaged_trained_model_needs_no_download_or_creation(tmp_path):
    result = generate(tmp_path / "run", "prompt=a red ball moving right")
    assert result.exit_code == 0, result.stderr
    root = json.loads((tmp_path / "run" / "config.json").read_text())["layer1_model_definition"]["root"]
    assert root.endswith("telefuser_cli/assets/tiny_wan21")


def _copy(tiny_root, tmp_path):
    root = tmp_path / "weights"
    shutil.copytree(tiny_root, root)
    return root


def _refused(tmp_path, root, message, *extra):
    out = tmp_path / "run"
    result = generate(out, f"model.root={root}", "prompt=x", *extra)
    text = " ".join(result.stderr.split())
    assert result.exit_code == 2, text
    assert message in text, text
    assert "Traceback" not in text
    assert not (out / "video.mp4").exists()
    return text


def test_missing_root(tmp_path):
    _refused(tmp_path, tmp_path / "nowhere", "does not exist; set model.root")


def test_empty_root(tmp_path):
    (tmp_path / "empty").mkdir()
    _refused(tmp_path, tmp_path / "empty", "is empty")


def test_missing_component_lists_what_was_expected(tmp_path, tiny_root):
    root = _copy(tiny_root, tmp_path)
    (root / "Wan2.1_VAE.pth").unlink()
    _refused(tmp_path, root, "expected the official file name 'Wan2.1_VAE.pth'")


def test_truncated_safetensors(tmp_path, tiny_root):
    root = _copy(tiny_root, tmp_path)
    path = root / "diffusion_pytorch_model.safetensors"
    path.write_bytes(path.read_bytes()[:5000])
    _refused(tmp_path, root, "not a readable safetensors file")


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize("legacy", [False, True])
def test_malicious_pickle_is_refused(tmp_path, tiny_root, capsys, legacy):
    root = _copy(tiny_root, tmp_path)
    path = root / "models_t5_umt5-xxl-enc-bf16.pth"
    if legacy:  # a plain pickle, as old checkpoints are
        with open(path, "wb") as handle:
            pickle.dump({"token_embedding.weight": _Evil()}, handle)
    else:
        torch.save({"token_embedding.weight": _Evil()}, path)
    _refused(tmp_path, root, "refused to load")
    assert "this must never run" not in capsys.readouterr().out


def test_weights_of_another_model(tmp_path, tiny_root):
    """An i2v DiT (36 input channels) under the t2v entry."""
    from safetensors.torch import save_file

    root = _copy(tiny_root, tmp_path)
    path = root / "diffusion_pytorch_model.safetensors"
    weights = load_file(path)
    weight = weights["patch_embedding.weight"]
    weights["patch_embedding.weight"] = torch.cat([weight, weight, weight[:, :4]], dim=1)
    save_file(weights, path)
    config = json.loads((root / "config.json").read_text())
    (root / "config.json").write_text(json.dumps({**config, "in_dim": 36, "model_type": "i2v"}))
    _refused(tmp_path, root, "holds a i2v DiT (in_dim 36), but model entry 'tiny_wan21' is t2v")


def test_wrong_shape_names_the_key(tmp_path, tiny_root):
    from safetensors.torch import save_file

    root = _copy(tiny_root, tmp_path)
    path = root / "diffusion_pytorch_model.safetensors"
    weights = load_file(path)
    del weights["blocks.1.ffn.2.bias"]
    save_file(weights, path)
    _refused(tmp_path, root, "blocks.1.ffn.2.bias")


def test_out_of_memory_in_decode_suggests_tiling(tmp_path, tiny_root, monkeypatch):
    from telefuser_cli.models.wan_vae import WanVAE

    def no_memory(self, z):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(WanVAE, "decode", no_memory)
    _refused(tmp_path, tiny_root, "pipeline.tiled=true")


def test_tiled_decode_runs(tmp_path, tiny_root):
    out = tmp_path / "run"
    result = generate(out, f"model.root={tiny_root}", "prompt=x", "pipeline.tiled=true",
                      "pipeline.tile_size=[3,3]", "pipeline.tile_stride=[2,2]")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert (out / "video.mp4").is_file()


def test_bf16_run_stays_close_to_float32(tmp_path, tiny_root):
    """Only the DiT and text encoder weights are bf16: noise, latents, timesteps and the scheduler stay
    float32, so a bf16 run lands near the float32 one."""
    latents = {}
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / dtype
        result = generate(
            out, f"model.root={tiny_root}", "prompt=x", "seed=2", "output.save_latents=true",
            f"pipeline.dit_config.torch_dtype={dtype}", f"pipeline.text_encoding_config.torch_dtype={dtype}",
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
        latents[dtype] = load_file(out / "latents.safetensors")["latents"]
    error = ((latents["bfloat16"] - latents["float32"]).abs().max() / latents["float32"].abs().max()).item()
    assert 0 < error < 5e-2, error


def test_frame_interpolation_to_the_target_fps(tmp_path, tiny_root):
    out = tmp_path / "run"
    result = generate(
        out, f"model.root={tiny_root}", "prompt=x", "pipeline.enable_vfi=true", "user.target_fps=32",
        "output.keep_intermediate=true",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    reader = imageio.get_reader(out / "video.mp4")
    assert reader.get_meta_data()["fps"] == 32.0
    assert len([frame for frame in reader]) == 10  # 5 frames at 16 fps -> 10 at 32 fps
    before = imageio.get_reader(out / "video_before_vfi.mp4")  # output.keep_intermediate
    assert len([frame for frame in before]) == 5 and before.get_meta_data()["fps"] == 16.0
    vfi = json.loads((out / "config.json").read_text())["run"]["vfi"]
    assert (vfi["base_fps"], vfi["target_fps"], vfi["source_frames"], vfi["output_frames"]) == (16, 32, 5, 10)
    assert vfi["model_path"].endswith("flownet.pkl")


def test_missing_interpolation_weights_fail_before_loading(tmp_path, tiny_root):
    root = _copy(tiny_root, tmp_path)
    (root / "flownet.pkl").unlink()
    _refused(tmp_path, root, "interpolation weights", "pipeline.enable_vfi=true", "user.target_fps=32")


def test_target_fps_without_interpolation_is_refused(tmp_path, tiny_root):
    _refused(tmp_path, tiny_root, "set pipeline.enable_vfi=true", "user.target_fps=32")
