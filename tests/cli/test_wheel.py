"""The installed wheel finds its configuration and recipes from any directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_wheel_installs_and_dumps_a_recipe_from_elsewhere(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist)],
                   cwd=REPO, check=True, capture_output=True)  # fmt: skip
    wheel = next(dist.glob("telefuser-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert (
        "telefuser_cli/assets/tiny_wan21/diffusion_pytorch_model.safetensors" in names
    )  # the trained tiny model
    assert "telefuser_cli/_conf/config.yaml" in names and "telefuser_cli/_conf/recipe/tiny.yaml" in names
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.check_output(
        [venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
    ).strip())  # fmt: skip
    # Dependencies come from the test environment's site-packages (no network); the package itself from the wheel.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet",
                    "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True)  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([venv / "bin" / "telefuser", "dump-config", "recipe=wan21_1.3b"], cwd=elsewhere,
                         env=env, capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    document = json.loads(out.stdout)
    assert document["choices"]["recipe"] == "wan21_1.3b"
    assert document["layer1_model_definition"]["name"] == "wan21_t2v_1.3b"
    where = subprocess.check_output([venv / "bin" / "python", "-c", "import telefuser_cli; print(telefuser_cli.__file__)"],
                                    cwd=elsewhere, env=env, text=True)  # fmt: skip
    assert where.startswith(str(site)), where
