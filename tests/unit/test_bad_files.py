"""Files that are not what they should be end in one UserError naming the file and what is wrong.

Paths (a file where a folder belongs, symlink loops), weights files that are no checkpoint at all (text, an
HTML page, a Git LFS pointer, truncated archives, plain pickles), tensors of the wrong dtype or rank for
every loader that shares ``loading.checkpoint``, and LoRA files.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from telefuser_cli.errors import UserError
from telefuser_cli.families.hunyuan15.tiny import T2V_VERSION, TINY_DIT, TINY_VAE
from telefuser_cli.families.wan.tiny import CLIP_FILE, DIT_FILE, T5_FILE, VAE_FILE, write_tiny
from telefuser_cli.io.path_kind import describe_path, directory_problem, file_problem
from telefuser_cli.loading import hunyuan15 as hy_loading
from telefuser_cli.loading import wan
from telefuser_cli.loading.checkpoint import read_shapes, read_state_dict, resolve_files
from telefuser_cli.loading.clip_arch import load_clip_vision
from telefuser_cli.loading.lora import load_lora, merge_lora
from telefuser_cli.models.hunyuan15_dit import Hunyuan15DiT
from telefuser_cli.models.hunyuan15_vae import Hunyuan15VAE

CPU = torch.device("cpu")


# ------------------------------------------------------------------------------------------------ paths


def test_describe_path_names_each_kind(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    (tmp_path / "link_to_file").symlink_to(tmp_path / "file")
    (tmp_path / "broken").symlink_to(tmp_path / "gone")
    (tmp_path / "loop_a").symlink_to(tmp_path / "loop_b")
    (tmp_path / "loop_b").symlink_to(tmp_path / "loop_a")
    os.mkfifo(tmp_path / "fifo")
    assert describe_path(tmp_path / "file") == "is a regular file"
    assert describe_path(tmp_path / "dir") == "is a directory"
    assert describe_path(tmp_path / "link_to_file") == "is a regular file"
    assert describe_path(tmp_path / "broken") == f"is a broken symlink (to {tmp_path / 'gone'})"
    assert describe_path(tmp_path / "loop_a") == "is a symlink loop"
    assert describe_path(tmp_path / "loop_a" / "inside") == "is a symlink loop"
    assert describe_path(tmp_path / "missing") == "does not exist"
    assert describe_path(tmp_path / "file" / "inside") == "does not exist (a folder on its way is a file)"
    assert describe_path(tmp_path / "fifo") == "is a named pipe (FIFO)"
    assert describe_path(str(tmp_path / "file")) == "is a regular file"  # str paths too


def test_file_and_directory_problems_say_what_was_expected(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert file_problem(tmp_path / "file") is None
    assert directory_problem(tmp_path) is None
    assert file_problem(tmp_path) == "is a directory, not a file"
    assert directory_problem(tmp_path / "file") == "is a regular file, not a directory"
    assert file_problem(tmp_path / "loop") == "is a symlink loop"
    assert directory_problem(tmp_path / "nope") == "does not exist"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_paths(tmp_path):
    path = tmp_path / "secret"
    path.write_text("x")
    path.chmod(0)
    assert describe_path(path) == "is not readable (permission denied)"


def test_path_kind_does_not_import_torch():
    code = "import sys, telefuser_cli.io.path_kind; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_model_root_that_is_a_file_or_a_loop(tmp_path):
    (tmp_path / "weights.safetensors").write_text("x")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(
        UserError, match="weights.safetensors is a regular file, not a directory; set model.root"
    ):
        resolve_files(tmp_path / "weights.safetensors", DIT_FILE, "dit")
    with pytest.raises(UserError, match="loop is a symlink loop; set model.root"):
        resolve_files(tmp_path / "loop", DIT_FILE, "dit")
    with pytest.raises(UserError, match="nowhere does not exist; set model.root"):
        resolve_files(tmp_path / "nowhere", DIT_FILE, "dit")


def test_component_file_that_is_a_directory_or_a_broken_link(tmp_path):
    (tmp_path / DIT_FILE).mkdir()
    with pytest.raises(UserError, match=f"dit: .*{DIT_FILE} is a directory, not a file"):
        resolve_files(tmp_path, DIT_FILE, "dit")
    (tmp_path / DIT_FILE).rmdir()
    (tmp_path / DIT_FILE).symlink_to(tmp_path / "elsewhere.safetensors")
    with pytest.raises(UserError, match="is a broken symlink"):
        resolve_files(tmp_path, DIT_FILE, "dit")


# ------------------------------------------------------------------------------- files that are no checkpoint


def _torch_zip(path: Path) -> bytes:
    torch.save({"a": torch.zeros(4)}, path)
    return path.read_bytes()


def _not_torch_zip(path: Path) -> bytes:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "hello")
    return path.read_bytes()


NOT_CHECKPOINTS = {
    "text": (
        lambda p: b"lr: 0.0001\nrank: 16\n",
        "is not a safetensors or PyTorch checkpoint (it looks like text",
    ),
    "empty": (lambda p: b"", "is empty (0 bytes)"),
    "binary": (
        lambda p: bytes(range(7, 80)),
        "is not a safetensors or PyTorch checkpoint (it starts with the bytes",
    ),
    "lfs": (
        lambda p: b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n",
        "it is a Git LFS pointer, not the weights",
    ),
    "html": (lambda p: b"<!DOCTYPE html><html><body>Not found</body></html>", "it is an HTML page"),
    "truncated zip": (
        lambda p: _torch_zip(p)[:300],
        "is a zip archive but not a readable PyTorch checkpoint",
    ),
    "other zip": (_not_torch_zip, "is a zip archive but not a readable PyTorch checkpoint"),
    "plain pickle": (lambda p: pickle.dumps({"a": [1, 2]}, protocol=4), "refused to load: a Python pickle"),
}


@pytest.mark.parametrize("name", list(NOT_CHECKPOINTS))
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_files_that_are_no_checkpoint(tmp_path, name, suffix):
    make, message = NOT_CHECKPOINTS[name]
    path = tmp_path / f"model{suffix}"
    path.write_bytes(make(tmp_path / "scratch"))
    for read in (read_state_dict, read_shapes):
        with pytest.raises(UserError) as info:
            read([path])
        assert str(path) in str(info.value) and message in str(info.value)
        assert "\n" not in str(info.value)


class _RunsCode:
    """Unpickling this would run code: it makes a folder."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def test_pickle_that_needs_code_names_the_global_and_runs_nothing(tmp_path):
    path = tmp_path / "model.pth"
    torch.save({"a": _RunsCode(tmp_path / "ran")}, path)
    with pytest.raises(
        UserError, match=r"refused to load: its pickle refers to os\.makedirs, which would run code"
    ):
        read_state_dict([path])
    assert not (tmp_path / "ran").exists()


def test_dictionary_entries_that_are_not_tensors(tmp_path):
    torch.save({"a": torch.zeros(1), "step": 3}, tmp_path / "model.pth")
    with pytest.raises(UserError, match="expected a dictionary of tensors, but entry 'step' is of type int"):
        read_state_dict([tmp_path / "model.pth"])
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(UserError, match="expected a dictionary of tensors, but the file holds a list"):
        read_state_dict([tmp_path / "list.pth"])


def test_format_comes_from_the_content_not_the_name(tmp_path):
    """A safetensors file named .pth and a torch.save file named .safetensors both load (safely)."""
    save_file({"a": torch.ones(2)}, str(tmp_path / "st.pth"))
    torch.save({"b": torch.ones(3)}, tmp_path / "zip.safetensors")
    torch.save({"c": torch.ones(1)}, tmp_path / "legacy.bin", _use_new_zipfile_serialization=False)
    assert read_state_dict([tmp_path / "st.pth"])["a"].tolist() == [1.0, 1.0]
    assert read_shapes([tmp_path / "zip.safetensors"]) == {"b": torch.Size([3])}
    assert read_state_dict([tmp_path / "legacy.bin"])["c"].tolist() == [1.0]


def test_truncated_pickle(tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save({"a": torch.zeros(64)}, path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(UserError, match="is a pickle but not a readable PyTorch checkpoint"):
        read_state_dict([path])


# ---------------------------------------------------------------- wrong dtypes and ranks, per loader


@pytest.fixture(scope="module")
def wan_root(tmp_path_factory) -> Path:
    return write_tiny("tiny_wan21_i2v", tmp_path_factory.mktemp("bad") / "tiny_wan21_i2v")


@pytest.fixture(scope="module")
def hunyuan_root(tmp_path_factory) -> Path:
    """Only the HunyuanVideo 1.5 DiT and VAE (default init): what the loaders read here."""
    root = tmp_path_factory.mktemp("hy")
    for module, folder in (
        (Hunyuan15DiT(TINY_DIT), f"transformer/{T2V_VERSION}"),
        (Hunyuan15VAE(TINY_VAE), "vae"),
    ):
        (root / folder).mkdir(parents=True)
        weights = {k: v.contiguous() for k, v in module.state_dict().items()}
        save_file(weights, str(root / folder / "diffusion_pytorch_model.safetensors"))
    # the tiny DiT's head dim is not the released one: its RoPE split comes from config.json, as for real weights
    config = {"rope_dim_list": list(TINY_DIT.rope_dim_list)}
    (root / "transformer" / T2V_VERSION / "config.json").write_text(json.dumps(config))
    return root


def _changed(source: Path, target_dir: Path, key: str, value) -> Path:
    """A copy of a weights file with ``key`` replaced by ``value(old tensor)``, in the same format."""
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / source.name
    if source.suffix == ".safetensors":
        weights = load_file(str(source))
        weights[key] = value(weights[key]).contiguous()
        save_file(weights, str(target))
    else:
        weights = torch.load(source, weights_only=True)
        weights[key] = value(weights[key])
        torch.save(weights, target)
    return target


def _load_wan(component: str, path: Path):
    files = wan.ComponentFiles(component, (path,), diffusers=False)
    if component == "dit":
        return wan.load_dit(files, dtype=torch.float32, device=CPU, attn_backend="TORCH_SDPA",
                            expected_task="i2v", model_name="tiny", expected_quant="fp32")  # fmt: skip
    if component == "text_encoder":
        return wan.load_text_encoder(files, dtype=torch.float32, device=CPU)
    if component == "vae":
        return wan.load_vae(files, dtype=torch.float32, device=CPU)
    return load_clip_vision([path], dtype=torch.float32, device=CPU)


WAN_CASES = {  # component: (file, a weight the architecture is not read from, one it is read from)
    "dit": (DIT_FILE, "blocks.0.self_attn.q.weight", "head.head.weight"),
    "text_encoder": (T5_FILE, "blocks.1.ffn.fc2.weight", "blocks.0.attn.q.weight"),
    "vae": (VAE_FILE, "decoder.head.2.weight", "conv2.weight"),
    "clip": (CLIP_FILE, "visual.transformer.1.attn.proj.weight", "visual.head"),
}
BAD_DTYPES = {
    torch.int8: "is stored as int8, but .* needs floating-point values there \\(an integer-quantized checkpoint",
    torch.int32: "is stored as int32, but .* needs floating-point values there",
    torch.bool: "is stored as bool, but .* needs floating-point values there",
    torch.complex64: "is stored as complex64, but .* needs floating-point values there",
}


@pytest.mark.parametrize("component", list(WAN_CASES))
@pytest.mark.parametrize("dtype", list(BAD_DTYPES), ids=str)
def test_wan_weights_of_a_wrong_dtype(wan_root, tmp_path, component, dtype):
    name, key, _ = WAN_CASES[component]
    path = _changed(wan_root / name, tmp_path, key, lambda t: t.to(dtype))
    with pytest.raises(UserError, match=f"{path}: {key} {BAD_DTYPES[dtype]}"):
        _load_wan(component, path)


@pytest.mark.parametrize("component", list(WAN_CASES))
def test_wan_weights_of_a_wrong_rank(wan_root, tmp_path, component):
    """A scalar where the architecture reader takes a width, and a wrong shape elsewhere."""
    name, plain_key, arch_key = WAN_CASES[component]
    path = _changed(wan_root / name, tmp_path / "arch", arch_key, lambda t: t.reshape(-1)[0].clone())
    key = arch_key.removeprefix("visual.")  # the CLIP reader names keys inside the visual tower
    with pytest.raises(UserError, match=f"{path}.*{key} has shape \\(\\) \\(0 dimensions\\)"):
        _load_wan(component, path)
    path = _changed(wan_root / name, tmp_path / "plain", plain_key, lambda t: t[:-1].clone())
    found = tuple(torch.load(path, weights_only=True)[plain_key].shape) if path.suffix == ".pth" else None
    found = found or tuple(load_file(str(path))[plain_key].shape)
    with pytest.raises(UserError, match=f"{path}.*{plain_key}.*{re.escape(str(found))}"):
        _load_wan(component, path)


def test_integer_only_dit_names_the_dtype(wan_root, tmp_path):
    weights = {k: v.to(torch.int8) for k, v in load_file(str(wan_root / DIT_FILE)).items()}
    save_file(weights, str(tmp_path / DIT_FILE))
    with pytest.raises(
        UserError, match="no floating-point \\*.weight tensors .* stored as int8; integer-quantized"
    ):
        _load_wan("dit", tmp_path / DIT_FILE)


HUNYUAN_CASES = {  # loader: (folder, a plain weight, a weight the architecture is read from)
    "dit": (
        f"transformer/{T2V_VERSION}",
        "double_blocks.1.img_attn_proj.weight",
        "final_layer.linear.weight",
    ),
    "vae": ("vae", "decoder.conv_out.conv.bias", "decoder.conv_in.conv.weight"),
}


def _load_hunyuan(loader: str, root: Path):
    if loader == "dit":
        return hy_loading.load_dit(root, T2V_VERSION, torch.float32, CPU)
    return hy_loading.load_vae(root, torch.float32, CPU)


def _hunyuan_copy(src: Path, dst: Path, loader: str, key: str, value) -> Path:
    folder = HUNYUAN_CASES[loader][0]
    shutil.copytree(src, dst)
    _changed(src / folder / "diffusion_pytorch_model.safetensors", dst / folder, key, value)
    return dst


@pytest.mark.parametrize("loader", list(HUNYUAN_CASES))
def test_hunyuan_weights_of_a_wrong_dtype_or_rank(hunyuan_root, tmp_path, loader):
    folder, plain_key, arch_key = HUNYUAN_CASES[loader]
    root = _hunyuan_copy(hunyuan_root, tmp_path / "int", loader, plain_key, lambda t: t.to(torch.int16))
    with pytest.raises(UserError, match=f"{folder}: {plain_key} is stored as int16, but .* floating-point"):
        _load_hunyuan(loader, root)
    root = _hunyuan_copy(hunyuan_root, tmp_path / "rank", loader, arch_key, lambda t: t.reshape(-1))
    with pytest.raises(UserError, match=f"{arch_key} has shape \\(\\d+,\\) \\(1 dimensions\\)"):
        _load_hunyuan(loader, root)


# ------------------------------------------------------------------------------------------------ LoRA


def test_lora_files_that_are_not_loras(tmp_path):
    (tmp_path / "notes.txt").write_text("trigger word: watercolor\n")
    with pytest.raises(UserError, match="notes.txt is not a safetensors or PyTorch checkpoint"):
        load_lora(tmp_path / "notes.txt")
    with pytest.raises(UserError, match=f"LoRA file {tmp_path} is a directory, not a file"):
        load_lora(tmp_path)


def test_lora_through_the_dit_loader_names_its_entry(wan_root, tmp_path):
    (tmp_path / "notes.txt").write_text("trigger word: watercolor\n")
    files = wan.ComponentFiles("dit", (wan_root / DIT_FILE,), diffusers=False)
    with pytest.raises(UserError, match="LoRA \\(lora_configs\\[0\\]\\): .*notes.txt is not a safetensors"):
        wan.load_dit(files, dtype=torch.float32, device=CPU, attn_backend="TORCH_SDPA", expected_task="i2v",
                     model_name="tiny", expected_quant="fp32", loras=[(str(tmp_path / "notes.txt"), 1.0)])  # fmt: skip


def test_lora_tensors_must_be_floating_point():
    weights = {"blocks.0.ffn.0.weight": torch.ones(4, 3)}
    lora = {
        "blocks.0.ffn.0.lora_down.weight": torch.ones(2, 3, dtype=torch.int8),
        "blocks.0.ffn.0.lora_up.weight": torch.ones(4, 2),
    }
    with pytest.raises(
        ValueError, match="lora_down.weight is stored as int8; LoRA matrices must be floating"
    ):
        merge_lora(weights, lora)
    lora["blocks.0.ffn.0.lora_down.weight"] = torch.ones(2, 3)
    lora["blocks.0.ffn.0.alpha"] = torch.tensor(4)  # an integer alpha is a fine number
    merged = merge_lora(weights, lora)
    torch.testing.assert_close(merged["blocks.0.ffn.0.weight"], torch.ones(4, 3) + 2 * 2)  # alpha/rank * 2
    lora["blocks.0.ffn.0.alpha"] = torch.tensor(True)
    with pytest.raises(ValueError, match="alpha is stored as bool; LoRA alphas must be real numbers"):
        merge_lora(weights, lora)
