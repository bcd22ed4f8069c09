"""What `telefuser list` shows: config entries per group, with where each comes from.

Reads YAML files only (no Hydra), so listing is instant.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from telefuser_cli.paths import config_dir, recipes_dir

GROUPS = ("model", "pipeline", "recipe", "launcher")
# Launchers that come from installed Hydra plugins rather than from files of ours.
PLUGIN_LAUNCHERS = {
    "basic": ("hydra-core", "jobs one after another in this process (default)"),
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "jobs in parallel on this machine"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "jobs via submitit on this machine"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "jobs on a SLURM cluster"),
}


@dataclass(frozen=True)
class Entry:
    name: str
    description: str
    source: str


def _description(path: Path) -> str:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        data = None
    if isinstance(data, dict) and data.get("description"):
        return str(data["description"])
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") and "@package" not in line:
            return line.lstrip("# ").strip()
    return ""


def _folder(group: str, root: Path) -> Path:
    if group == "recipe":
        return root / "recipe"
    if group == "launcher":
        return root / "hydra" / "launcher"
    return root / group


def _plugin_installed(module: str) -> bool:
    import importlib.util

    return module == "hydra-core" or importlib.util.find_spec(module) is not None


def catalog(group: str, user_dir: Path | None = None) -> list[Entry]:
    packaged = recipes_dir() if group == "recipe" else _folder(group, config_dir())
    entries: dict[str, Entry] = {}
    if group == "launcher":
        for name, (module, text) in PLUGIN_LAUNCHERS.items():
            if _plugin_installed(module):
                entries[name] = Entry(name, text, "plugin")
    for path in sorted(packaged.glob("*.yaml")):
        entries[path.stem] = Entry(path.stem, _description(path), "packaged")
    if user_dir is not None:
        for path in sorted(_folder(group, Path(user_dir)).glob("*.yaml")):
            source = f"{user_dir} (shadows packaged)" if path.stem in entries else str(user_dir)
            entries[path.stem] = Entry(path.stem, _description(path), source)
    return sorted(entries.values(), key=lambda entry: entry.name)
