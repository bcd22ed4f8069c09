"""Folder names of a sweep's jobs, from the values swept: `007_seed=3,resolution=480p`.

A swept key is one whose value on the command line is a sweep (a comma list, `range(...)`, `choice(...)`,
`glob(...)`), not every override of the job. The name is the job's index, zero-padded to three digits so
that folders sort in run order, then `key=value` for each swept key in command-line order (`user.` keys
by their short name). Anything but letters, digits and `._+-=,` becomes `-`, and the part after the
index is cut to MAX_LABEL characters; the index alone keeps names unique.

The CLI tells each job which keys are swept through Hydra's own `hydra.job.config.override_dirname.exclude_keys`
(the overrides that are not swept), and conf/config.yaml names the job folder with the `telefuser_job_dir`
resolver, which calls `job_dir_name`: the CLI computes the same names before the sweep starts (--resume).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from telefuser_cli.config.overrides import override_key, unquote, unwrap_quotes

MAX_LABEL = 80
EXCLUDE_KEYS = "hydra.job.config.override_dirname.exclude_keys"
_UNSAFE = re.compile(r"[^A-Za-z0-9._+\-=,]+")


def swept_keys(overrides: list[str]) -> list[str]:
    """The keys whose command-line value is a sweep, in command-line order."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return list(dict.fromkeys(o.get_key_element() for o in parsed if o.is_sweep_override()))


def short_key(key: str) -> str:
    """How a folder name and the sweep table show a key: `user.seed` as `seed`."""
    return key.removeprefix("user.")


def swept_values(job_overrides: Iterable[str], swept: Iterable[str]) -> dict[str, str]:
    """{swept key: its value in this job}, from the job's own override list, as typed."""
    swept = list(swept)
    values = {}
    for override in job_overrides:
        key = override_key(override)
        if key in swept:
            value = override.split("=", 1)[1]
            values[key] = unquote(value) if value[:1] == "'" and value[-1:] == "'" else unwrap_quotes(value)
    return {key: values[key] for key in swept if key in values}


def sanitise(text: str) -> str:
    """`text` safe as one path component on any filesystem: no separators, spaces or odd characters."""
    return _UNSAFE.sub("-", text).strip("-.")


def job_dir_name(num: int, job_overrides: Iterable[str], swept: Iterable[str]) -> str:
    """The folder of the job numbered `num` (0-based, as Hydra numbers them)."""
    values = swept_values(job_overrides, swept)
    label = sanitise(",".join(f"{short_key(key)}={value}" for key, value in values.items()))[:MAX_LABEL]
    return f"{int(num):03d}_{label}" if label else f"{int(num):03d}"


def exclude_keys_override(overrides: list[str]) -> str:
    """The Hydra override naming the overrides that are not swept (they stay out of folder names)."""
    from telefuser_cli.config.overrides import quote

    swept = set(swept_keys(overrides))
    kept = [key for key in dict.fromkeys(override_key(o) or o for o in overrides) if key not in swept]
    return f"{EXCLUDE_KEYS}=[{','.join(quote(key) for key in kept)}]"


def resolve_job_dir(num: int, task_overrides: Iterable[str], exclude: Iterable[str]) -> str:
    """The `telefuser_job_dir` resolver: the job's folder, from what Hydra knows inside the job."""
    excluded = set(exclude)
    keys = [override_key(o) for o in task_overrides]
    return job_dir_name(num, task_overrides, [key for key in keys if key and key not in excluded])
