"""UMT5 encoder, converters, tokenizer and prompt cleaning.

Parity reference: transformers' ``UMT5EncoderModel`` built from an explicit tiny config (no hub), loaded
with our official-layout weights through ``official_to_hf_umt5``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

from telefuser_cli.loading.tokenizer import clean_prompt, load_tokenizer, tokenize, write_tiny_tokenizer
from telefuser_cli.loading.umt5_arch import hf_to_official_umt5, infer_umt5_config, official_to_hf_umt5
from telefuser_cli.models.umt5 import UMT5Config, UMT5Encoder, relative_position_buckets

pytestmark = pytest.mark.numeric

TINY = UMT5Config(vocab_size=300, dim=32, dim_attn=32, dim_ffn=64, num_heads=4, num_layers=2, num_buckets=32)
# Long enough to reach the log-spaced buckets and the max_distance (128) clamp.
LENGTHS = (160, 97, 5)


def _random_official_sd(cfg: UMT5Config, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random weights in the official layout, scaled so every part matters (norm weights away from 1,
    relative-position bias of order 1)."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for key, param in UMT5Encoder(cfg).state_dict().items():
        shape = param.shape
        if key.endswith("norm1.weight") or key.endswith("norm2.weight") or key == "norm.weight":
            value = 1.0 + 0.2 * torch.randn(shape, generator=gen)
        elif "pos_embedding" in key or key == "token_embedding.weight":
            value = torch.randn(shape, generator=gen)
        else:
            value = torch.randn(shape, generator=gen) * shape[1] ** -0.5
        sd[key] = value
    return sd


def _hf_model(cfg: UMT5Config, attn: str) -> transformers.UMT5EncoderModel:
    hf_cfg = transformers.UMT5Config(
        vocab_size=cfg.vocab_size,
        d_model=cfg.dim,
        d_kv=cfg.head_dim,
        d_ff=cfg.dim_ffn,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        relative_attention_num_buckets=cfg.num_buckets,
        relative_attention_max_distance=cfg.max_distance,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        layer_norm_epsilon=cfg.eps,
        attn_implementation=attn,
    )
    assert hf_cfg.is_gated_act and hf_cfg.dense_act_fn == "gelu_new"
    assert hf_cfg.relative_attention_max_distance == 128
    return transformers.UMT5EncoderModel(hf_cfg).eval()


def _inputs(cfg: UMT5Config, lengths=LENGTHS, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    total = max(lengths)
    ids = torch.randint(3, cfg.vocab_size, (len(lengths), total), generator=gen)
    mask = torch.zeros(len(lengths), total, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
        ids[b, n - 1] = 1  # eos
        ids[b, n:] = 0  # pad
    return ids, mask


def _rel(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(max abs error, max abs error / max |reference|)."""
    err = (a - b).abs().max().item()
    return err, err / b.abs().max().item()


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_parity_with_transformers_fp32(attn: str) -> None:
    torch.manual_seed(0)
    sd = _random_official_sd(TINY)
    ours = UMT5Encoder(TINY).eval()
    ours.load_state_dict(sd, strict=True)
    ref = _hf_model(TINY, attn)
    ref.load_state_dict(official_to_hf_umt5(sd), strict=True)
    ids, mask = _inputs(TINY)
    with torch.no_grad():
        got = ours(ids, mask)
        want = ref(input_ids=ids, attention_mask=mask).last_hidden_state
    assert got.shape == want.shape == (len(LENGTHS), max(LENGTHS), TINY.dim)
    assert got.dtype == torch.float32
    valid = mask.bool()
    abs_err, rel_err = _rel(got[valid], want[valid])
    pad_abs, pad_rel = _rel(got[~valid], want[~valid])
    print(
        f"\n[{attn}] valid: max abs {abs_err:.3e} rel {rel_err:.3e}; padded: max abs {pad_abs:.3e} rel {pad_rel:.3e}"
    )
    assert rel_err < 1e-4
    # Both implementations mask padded positions only as keys, so padded rows agree as well.
    assert pad_rel < 1e-4
    # Trimming to the true length (as the official pipeline does) must not depend on the padding: the
    # shortest prompt run alone equals its rows in the batch.
    n = LENGTHS[-1]
    with torch.no_grad():
        alone = ours(ids[-1:, :n], mask[-1:, :n])
    assert _rel(alone[0], got[-1, :n])[1] < 1e-5


def test_relative_buckets_match_transformers() -> None:
    attn = _hf_model(TINY, "eager").encoder.block[0].layer[0].SelfAttention
    n = 401  # distances up to 400, well past max_distance=128
    ours = relative_position_buckets(n, TINY.num_buckets, TINY.max_distance)
    pos = torch.arange(n)
    assert torch.equal(ours, attn._relative_position_bucket(pos[None, :] - pos[:, None]))
    assert ours.min() == 0 and ours.max() == TINY.num_buckets - 1


def test_meta_construction_and_assign_load() -> None:
    sd = _random_official_sd(TINY, seed=3)
    with torch.device("meta"):
        model = UMT5Encoder(TINY)
    assert list(model.buffers()) == []
    assert set(model.state_dict()) == set(sd)
    model.load_state_dict(sd, strict=True, assign=True)
    assert all(p.device.type == "cpu" for p in model.parameters())
    eager = UMT5Encoder(TINY)
    eager.load_state_dict(sd, strict=True)
    ids, mask = _inputs(TINY, lengths=(12, 7))
    with torch.no_grad():
        assert torch.equal(model(ids, mask), eager(ids, mask))
        out_bf16 = model.to(torch.bfloat16)(ids, mask)
    assert out_bf16.dtype == torch.bfloat16 and torch.isfinite(out_bf16).all()


def test_state_dict_keys_are_official_layout() -> None:
    keys = set(UMT5Encoder(TINY).state_dict())
    for i in range(TINY.num_layers):
        for suffix in (
            "norm1",
            "attn.q",
            "attn.k",
            "attn.v",
            "attn.o",
            "norm2",
            "ffn.gate.0",
            "ffn.fc1",
            "ffn.fc2",
            "pos_embedding.embedding",
        ):
            assert f"blocks.{i}.{suffix}.weight" in keys
    assert {"token_embedding.weight", "norm.weight"} <= keys
    assert len(keys) == 2 + 10 * TINY.num_layers


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="dim_attn=30 is not divisible by num_heads=4"):
        UMT5Config(vocab_size=10, dim=8, dim_attn=30, dim_ffn=8, num_heads=4, num_layers=1)
    with pytest.raises(ValueError, match="num_layers"):
        UMT5Config(vocab_size=10, dim=8, dim_attn=8, dim_ffn=8, num_heads=4, num_layers=0)
    with pytest.raises(ValueError, match="num_buckets"):
        UMT5Config(vocab_size=10, dim=8, dim_attn=8, dim_ffn=8, num_heads=4, num_layers=1, num_buckets=7)
    with pytest.raises(ValueError, match="must both be"):
        UMT5Encoder(TINY)(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 4))


def test_infer_config() -> None:
    sd = _random_official_sd(TINY)
    shapes = {k: v.shape for k, v in sd.items()}
    assert infer_umt5_config(shapes) == TINY
    assert infer_umt5_config(sd) == TINY  # tensors work too
    with pytest.raises(ValueError, match="hf_to_official_umt5"):
        infer_umt5_config({k: v.shape for k, v in official_to_hf_umt5(sd).items()})
    with pytest.raises(ValueError, match="missing blocks.1.attn.k.weight"):
        infer_umt5_config({k: v for k, v in shapes.items() if k != "blocks.1.attn.k.weight"})
    bad = dict(shapes, **{"blocks.1.ffn.fc2.weight": torch.Size([32, 65])})
    with pytest.raises(ValueError, match="shape mismatches"):
        infer_umt5_config(bad)
    with pytest.raises(ValueError, match="shared_pos"):
        infer_umt5_config(dict(shapes, **{"pos_embedding.embedding.weight": torch.Size([32, 4])}))


def test_converters_round_trip() -> None:
    sd = _random_official_sd(TINY)
    hf = official_to_hf_umt5(sd)
    assert hf["shared.weight"] is hf["encoder.embed_tokens.weight"] is sd["token_embedding.weight"]
    back = hf_to_official_umt5(hf)
    assert back.keys() == sd.keys() and all(back[k] is sd[k] for k in sd)
    # A transformers model's own state dict, and a file holding only one of the tied embedding names.
    hf_sd = _hf_model(TINY, "eager").state_dict()
    assert set(hf) == set(hf_sd)
    official = hf_to_official_umt5(hf_sd)
    UMT5Encoder(TINY).load_state_dict(official, strict=True)
    for drop in ("shared.weight", "encoder.embed_tokens.weight"):
        one = {k: v for k, v in hf_sd.items() if k != drop}
        assert torch.equal(hf_to_official_umt5(one)["token_embedding.weight"], hf_sd["shared.weight"])
    with pytest.raises(ValueError, match="lm_head.weight"):
        hf_to_official_umt5(dict(hf_sd, **{"lm_head.weight": torch.zeros(1)}))
    with pytest.raises(ValueError, match="blocks.0.extra.weight"):
        official_to_hf_umt5(dict(sd, **{"blocks.0.extra.weight": torch.zeros(1)}))


# --- prompt cleaning and tokenizer -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Tom &amp; Jerry &lt;3", "Tom & Jerry <3"),
        ("double &amp;amp; escaped &amp;quot;x&amp;quot;", 'double & escaped "x"'),
        ("caf\u00c3\u00a9 na\u00c3\u00afve", "café naïve"),  # UTF-8 read as latin-1 (mojibake)
        ("  a\t\tb \n\n c\u3000d\u00a0e  ", "a b c d e"),
        ("一只猫坐在草地上。色调艳丽", "一只猫坐在草地上。色调艳丽"),
        # ftfy's default fix_character_width turns fullwidth forms into ASCII, as in the official code.
        ("猫，ＡＢＣ１２", "猫,ABC12"),
        ("", ""),
    ],
)
def test_clean_prompt(raw: str, clean: str) -> None:
    assert clean_prompt(raw) == clean


WORDS = ["a", "cat", "dog", "sits", "on", "the", "mat", ",", ".", "猫"]


def test_tiny_tokenizer_round_trip(tmp_path: Path) -> None:
    write_tiny_tokenizer(tmp_path / "tok", WORDS)
    tok = load_tokenizer(tmp_path / "tok")
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    ids, mask = tokenize(tok, ["a cat sits on the mat.", "  dog , &amp; zebra 猫 "], max_length=10)
    assert ids.dtype == mask.dtype == torch.long and ids.shape == mask.shape == (2, 10)
    # word i of WORDS has id 3 + i; `&amp;` is cleaned to `&`; `&` and `zebra` are unknown -> <unk>=2.
    assert ids[0].tolist() == [3, 4, 6, 7, 8, 9, 11, 1, 0, 0]
    assert ids[1].tolist() == [5, 10, 2, 2, 12, 1, 0, 0, 0, 0]
    assert mask.tolist() == [[1] * 8 + [0] * 2, [1] * 6 + [0] * 4]
    # Truncation keeps max_length tokens with EOS last, as the official call does.
    ids, mask = tokenize(tok, ["a " * 20], max_length=6)
    assert ids.tolist() == [[3, 3, 3, 3, 3, 1]] and mask.tolist() == [[1] * 6]
    # Official default length.
    ids, mask = tokenize(tok, ["cat"])
    assert ids.shape == (1, 512) and mask.sum().item() == 2


def test_tiny_tokenizer_is_deterministic(tmp_path: Path) -> None:
    write_tiny_tokenizer(tmp_path / "a", WORDS)
    code = "import sys; from pathlib import Path; from telefuser_cli.loading.tokenizer import write_tiny_tokenizer;"
    code += f" write_tiny_tokenizer(Path(sys.argv[1]), {WORDS!r})"
    env = dict(os.environ, PYTHONHASHSEED="12345")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "b")], check=True, env=env)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    with pytest.raises(ValueError, match="duplicates"):
        write_tiny_tokenizer(tmp_path / "c", ["a", "a"])
    with pytest.raises(ValueError, match="clash"):
        write_tiny_tokenizer(tmp_path / "c", ["</s>"])


def test_load_tokenizer_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere.*tokenizer.json"):
        load_tokenizer(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty.*spiece.model"):
        load_tokenizer(tmp_path / "empty")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tokenizer.json").write_text("{ not json")
    with pytest.raises(ValueError, match="broken"):
        load_tokenizer(broken)
