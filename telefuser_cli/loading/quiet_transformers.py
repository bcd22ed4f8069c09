"""transformers loads quietly: no tqdm bar, no "LOAD REPORT" table on every run; what matters is checked here.

`from_pretrained` prints a progress bar and a table of keys it did not use (`lm_head.weight` of
Qwen2.5-VL is always unused: the official encoder keeps only the language model). We silence both
and look at the loading info ourselves: a missing or mismatched key is an error naming the folder;
an unexpected key is logged at debug level unless the caller says it is not expected.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from telefuser_cli.errors import UserError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' logging at error level and its progress bars off, restored afterwards."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_pretrained(
    cls: Any, path: Path, what: str, *, expected_unused: tuple[str, ...] = (), **kwargs: Any
) -> Any:
    """`cls.from_pretrained(path, local_files_only=True, **kwargs)`, quietly, with its keys checked.

    Missing or shape-mismatched weights are an error; unused checkpoint keys are logged (as a warning
    unless they start with one of `expected_unused`).
    """
    with quiet_transformers():
        model, info = cls.from_pretrained(
            str(path), local_files_only=True, output_loading_info=True, **kwargs
        )
    missing = list(info.get("missing_keys") or [])
    mismatched = [str(entry[0]) for entry in info.get("mismatched_keys") or []]
    if missing or mismatched:
        keys = missing + mismatched
        shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
        kind = "missing" if missing else "of another shape"
        raise UserError(f"{what}: {path} has weights {kind} for this architecture: {shown}")
    unused = sorted(info.get("unexpected_keys") or [])
    surprising = [key for key in unused if not key.startswith(expected_unused)]
    if surprising:
        log.warning("%s: %d unused weights in %s (e.g. %s)", what, len(surprising), path, surprising[0])
    elif unused:
        log.debug("%s: %d expected unused weights in %s", what, len(unused), path)
    return model
