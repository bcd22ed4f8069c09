"""Which model roots are tiny fixtures (written on first use) and which are never touched."""

from __future__ import annotations

from types import SimpleNamespace

from telefuser_cli.families.tiny import fixture_kind, makers, prepare_root
from telefuser_cli.paths import cache_dir


def test_only_a_cache_folder_named_after_a_maker_is_written(tmp_path):
    elsewhere = tmp_path / "tiny_wan21"  # a maker's name, but not in telefuser's cache
    assert prepare_root(SimpleNamespace(root=str(elsewhere))) == elsewhere and not elsewhere.exists()
    unknown = cache_dir() / "my_weights"  # in the cache, but no maker's name
    assert prepare_root(SimpleNamespace(root=str(unknown))) == unknown and not unknown.exists()
    assert fixture_kind(elsewhere) is None and fixture_kind(unknown) is None

    fixture = cache_dir() / "tiny_wan21"
    assert fixture_kind(fixture) == "tiny_wan21"
    assert prepare_root(SimpleNamespace(root=str(fixture))) == fixture
    assert (fixture / makers()["tiny_wan21"].marker).is_file()


def test_every_family_registers_its_makers():
    assert set(makers()) == {"tiny_wan21", "tiny_wan21_i2v", "tiny_wan22_moe", "tiny_wan22_moe_i2v",
                             "tiny_wan21_flf2v", "tiny_wan22_ti2v", "tiny_hunyuan15", "tiny_hunyuan15_sr"}  # fmt: skip
