"""What people coming from other tools type, and the telefuser override they meant.

Users of the official Wan `generate.py`, of diffusers and of Hydra's own command line bring their habits:
`steps=30`, `--prompt "a cat"`, `--size 832*480`, `--cfg job`, or a prompt whose shell quotes were lost
(`prompt=a red ball` arrives as three words). Hydra would answer with a lexer error or a misleading
"To append to your config use +steps=30". Each is recognised here and answered, in one line, with the
override that does it and the layer it belongs to. Names of layer 2 are suggested, never accepted: the
pipeline layer is the recipe's and is changed by its full name on purpose.

Torch-free and Hydra-free: these messages come before anything is composed.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

from telefuser_cli.config.keys import SECTIONS, schema_key_types
from telefuser_cli.config.overrides import LITERAL_KEYS, SHORTHANDS, override_key, unquote

LAYERS = {"model": "layer 1", "pipeline": "layer 2", "user": "layer 3"}
# The groups of conf/config.yaml's defaults list (model=NAME, recipe=NAME); hydra/* are Hydra's.
GROUPS = ("model", "pipeline", "user", "recipe")
# When names tie, the key a person may change per run wins.
_PREFERENCE = ("user", "pipeline", "output", "launcher", "model")


def similarity(typed: str, name: str) -> float:
    """Whole-string similarity, or the share of typed words found in the name (num_step ~ num_inference_steps)."""
    whole = difflib.SequenceMatcher(None, typed, name).ratio()
    words = [w for w in typed.split("_") if w]
    name_words = name.split("_")
    found = sum(any(difflib.SequenceMatcher(None, w, n).ratio() >= 0.8 for n in name_words) for w in words)
    return max(whole, found / len(words) if words else 0.0)


def did_you_mean(typed: str, names: list[str]) -> str | None:
    # ties (every typed word found in several names) go to the name closest as a whole: tinyy -> tiny
    scored = sorted(
        (
            (similarity(typed, name), difflib.SequenceMatcher(None, typed, name).ratio(), name)
            for name in names
        ),
        reverse=True,
    )
    return scored[0][2] if scored and scored[0][0] >= 0.6 else None


@functools.cache
def schema_leaves() -> tuple[str, ...]:
    """Every leaf key of the schema (`pipeline.dit_config.compile`), in _PREFERENCE order of sections."""
    keys = schema_key_types()
    return tuple(key for section in _PREFERENCE for key in keys if key.split(".", 1)[0] == section)


# ---------------------------------------------------------------- what other tools call our keys


def _size(value: str | None) -> str | None:
    """Wan's `832*480` (and `832X480`) is our `832x480`."""
    return re.sub(r"(?<=\d)\s*[*xX×]\s*(?=\d)", "x", value) if value else value


def _offload(value: str | None) -> str:
    off = value is not None and value.strip().lower() in ("false", "0", "no", "off")
    return "NO_CPU_OFFLOAD" if off else "MODEL_CPU_OFFLOAD"


def _entries_for_task(value: str | None) -> list[str]:
    """The packaged model entries named by the words of an official task name (`t2v-A14B` ->
    wan22_a14b_t2v), read from the entries' names, never from a table of ours."""
    from telefuser_cli.config.catalog import catalog

    words = set(re.split(r"[-_\s]+", (value or "").strip().lower())) - {""}
    names = [entry.name for entry in catalog("model")]
    return [name for name in names if words and words <= set(name.split("_"))]


def _task(value: str | None) -> str:
    fits = _entries_for_task(value)
    return fits[0] if len(fits) == 1 else "NAME"


def _task_note(value: str | None) -> str:
    fits = _entries_for_task(value)
    if len(fits) == 1:
        return "the task comes with the weights"
    where = f"one of {', '.join(fits)}" if fits else "telefuser list models"
    return f"the task comes with the weights: {where}"


@dataclass(frozen=True)
class Habit:
    """What another tool's name is here: a shorthand, a group, or a dotted key, and how its value reads."""

    key: str
    convert: Callable[[str | None], str | None] = lambda value: value
    note: str | Callable[[str | None], str] = ""  # shown after the suggestion; by default its layer


_STEPS = Habit("pipeline.num_inference_steps")
_CFG = Habit("pipeline.cfg_scale")
_SHIFT = Habit("pipeline.sigma_shift")
_FRAMES = Habit("pipeline.num_frames")
_SOLVER = Habit("pipeline.sample_solver")
_NEGATIVE = Habit("negative_prompt")
_IMAGE = Habit("image")
_END_IMAGE = Habit("end_image")
_ROOT = Habit("model.root")
_RUN_DIR = Habit(
    "hydra.run.dir",
    lambda value: value if value and not value.lower().endswith(".mp4") else "DIR",  # Wan's --save_file
    "the run's folder: the video is written there as video.mp4",
)
_OFFLOAD = Habit("pipeline.dit_config.offload_config.offload_type", _offload)
_PARALLEL = "pipeline.dit_config.parallel_config"

# The official Wan generate.py's arguments, diffusers' call arguments and common spellings that no leaf of
# the schema is named like; everything else is matched against the leaves' own names (num_frames, fps).
HABITS = {
    **dict.fromkeys(("steps", "sample_steps", "num_steps", "infer_steps", "inference_steps"), _STEPS),
    **dict.fromkeys(("cfg", "guidance", "guidance_scale", "guide_scale", "sample_guide_scale"), _CFG),
    "guidance_scale_2": Habit("pipeline.cfg_scale_low"),
    **dict.fromkeys(("shift", "sample_shift", "flow_shift", "timestep_shift"), _SHIFT),
    **dict.fromkeys(("frames", "frame_num", "video_length", "num_video_frames"), _FRAMES),
    **dict.fromkeys(("solver", "sampler", "scheduler"), _SOLVER),
    **dict.fromkeys(("frame_rate", "save_fps"), Habit("pipeline.fps")),
    "boundary_ratio": Habit("pipeline.boundary"),
    **dict.fromkeys(("negative", "neg", "neg_prompt", "n_prompt"), _NEGATIVE),
    **dict.fromkeys(("text", "positive_prompt", "caption"), Habit("prompt")),
    **dict.fromkeys(("base_seed", "random_seed", "manual_seed"), Habit("seed")),
    "size": Habit("resolution", _size),
    "height": Habit("resolution", lambda value: f"WIDTHx{value or 'HEIGHT'}"),
    "width": Habit("resolution", lambda value: f"{value or 'WIDTH'}xHEIGHT"),
    **dict.fromkeys(("img", "first_frame", "first_image", "image_path"), _IMAGE),
    **dict.fromkeys(("last_frame", "last_image", "end_frame"), _END_IMAGE),
    **dict.fromkeys(("ckpt_dir", "checkpoint_dir", "model_dir", "model_path", "weights"), _ROOT),
    "pretrained_model_name_or_path": _ROOT,
    "task": Habit("model", _task, _task_note),
    **dict.fromkeys(("offload_model", "offload", "cpu_offload", "enable_model_cpu_offload"), _OFFLOAD),
    "t5_cpu": Habit("pipeline.text_encoding_config.device_type", lambda value: "cpu"),
    "t5_fsdp": Habit("pipeline.text_encoding_config.parallel_config.enable_fsdp", lambda value: "true"),
    "dit_fsdp": Habit(f"{_PARALLEL}.enable_fsdp", lambda value: "true"),
    "ulysses_size": Habit(f"{_PARALLEL}.sp_ulysses_degree"),
    "ring_size": Habit(f"{_PARALLEL}.sp_ring_degree"),
    **dict.fromkeys(
        ("attention", "attn", "attention_backend"), Habit("pipeline.dit_config.attention_config.attn_impl")
    ),
    **dict.fromkeys(("dtype", "precision"), Habit("pipeline.dit_config.torch_dtype")),
    **dict.fromkeys(
        ("lora", "lora_path"), Habit("pipeline.dit_config.lora_configs", lambda value: f"[{{path:{value}}}]")
    ),
    **dict.fromkeys(("nproc", "num_gpus", "gpus", "world_size"), Habit("launcher.nproc_per_node")),
    **dict.fromkeys(("output", "output_dir", "outdir", "save_dir", "save_file", "out", "o"), _RUN_DIR),
}
# Options of the official generate.py that take no value.
_SWITCHES = {"t5_cpu", "t5_fsdp", "dit_fsdp", "offload", "cpu_offload", "enable_model_cpu_offload"}


@dataclass(frozen=True)
class Suggestion:
    key: str
    value: str | None
    note: str

    def __str__(self) -> str:
        text = self.key if self.value is None else f"{self.key}={shell_word(self.value)}"
        return f"{text} ({self.note})" if self.note else text


def shell_word(text: str) -> str:
    """`text` as the shell should see it typed: bare when it is safe, else in double quotes."""
    if re.fullmatch(r"[\w.,:/@%+=\-]+", text):
        return text
    return '"' + re.sub(r'(["\\$`])', r"\\\1", text) + '"'


def _note(key: str) -> str:
    """The layer of `key` (a shorthand names its full key too)."""
    if key in SHORTHANDS:
        return f"{SHORTHANDS[key]}, {LAYERS['user']}"
    return LAYERS.get(key.split(".")[0], "") if "." in key else ""


def _shorthand(key: str) -> str:
    """The shorthand of a full key, if it has one."""
    return next((short for short, full in SHORTHANDS.items() if full == key), key)


def _best_leaf(name: str) -> str | None:
    """The leaf key whose own name is closest to `name` (a whole-name match beats a match by words)."""
    leaves = schema_leaves()
    scores = [(similarity(name, leaf.rsplit(".", 1)[1]), leaf.rsplit(".", 1)[1] == name) for leaf in leaves]
    best = max(range(len(leaves)), key=lambda index: scores[index])
    return leaves[best] if scores[best][0] >= 0.75 else None


def suggest(name: str, value: str | None = None, fuzzy: bool = True) -> Suggestion | None:
    """The override someone who typed `name` (with `value`) most likely meant, or None.

    Exact names first (shorthands, groups, keys, HABITS), then, if `fuzzy`, the closest leaf name."""
    typed = name.strip().lower().replace("-", "_")
    if typed in SHORTHANDS or typed in GROUPS or typed in schema_leaves():
        key, habit = _shorthand(typed), Habit(typed)
    elif typed in HABITS:
        habit = HABITS[typed]
        key = habit.key
    else:
        leaf = next((leaf for leaf in schema_leaves() if leaf.rsplit(".", 1)[1] == typed), None)
        if leaf is None and fuzzy:
            leaf = _best_leaf(typed)
        if leaf is None:
            return None
        key, habit = _shorthand(leaf), Habit(leaf)
    note = habit.note(value) if callable(habit.note) else habit.note
    return Suggestion(key, habit.convert(value), note or _note(key))


# ---------------------------------------------------------------- options, and words without a key


def _hydra_option(flag: str) -> str:
    return f"{flag} is Hydra's own option"


def _dump_config(flag: str) -> str:
    return f"{_hydra_option(flag)}: use `telefuser dump-config ...` (same overrides) to see the composed configuration"


def _listing(flag: str) -> str:
    return f"{_hydra_option(flag)}: use `telefuser list` for models, pipelines and recipes, `telefuser keys` for every key"


def _config_dir(flag: str) -> str:
    return f"{_hydra_option(flag)}: use --config-dir DIR: your files there shadow the packaged ones"


HYDRA_FLAGS: dict[str, Callable[[str], str]] = {
    **dict.fromkeys(("--cfg", "-c", "--resolve"), _dump_config),
    **dict.fromkeys(("--info", "--hydra-help"), _listing),
    **dict.fromkeys(
        ("-p", "--package"),
        lambda flag: (
            f"{_hydra_option(flag)}: use `telefuser keys SECTION` "
            f"({', '.join(SECTIONS)}) or `telefuser dump-config ...`"
        ),
    ),
    **dict.fromkeys(
        ("-cn", "--config-name"),
        lambda flag: (
            f"{_hydra_option(flag)}: choose entries with "
            "recipe=NAME, model=NAME or pipeline=NAME, or shadow files with --config-dir DIR"
        ),
    ),
    **dict.fromkeys(("-cp", "--config-path", "-cd"), _config_dir),
    **dict.fromkeys(
        ("-sc", "--shell-completion"),
        lambda flag: f"{_hydra_option(flag)}: use `telefuser --install-completion`",
    ),
    "--experimental-rerun": lambda flag: f"{_hydra_option(flag)}: use --from-config RUN_DIR to replay a run",
    "-h": lambda flag: "unknown option '-h'; use --help",
    "--version": lambda flag: "--version belongs before the command: `telefuser --version`",
}
# This CLI's own options, to catch `--dry_run` (each command reads those it has before this code runs;
# dump-config's --output is left out: for generate it is another tool's option, hydra.run.dir here).
OPTIONS = ("--dry-run", "--from-config", "--config-dir", "--multirun", "--resume", "--format")


def _bare(item: str) -> bool:
    """A word that is no override and no option: Hydra would refuse it ("missing EQUAL")."""
    return "=" not in item and not item.startswith(("~", "+", "-"))


def _words_from(items: list[str], start: int) -> list[str]:
    end = start
    while end < len(items) and _bare(items[end]):
        end += 1
    return items[start:end]


def _option_value(items: list[str], index: int, name: str, key: str) -> str | None:
    """The value typed after the option at items[index] (`--seed 3`, `--seed=3`), if any."""
    _, equals, inline = items[index].partition("=")
    if equals:
        return inline
    if name in _SWITCHES or index + 1 == len(items):
        return None
    following = items[index + 1]
    if re.fullmatch(r"-\d[\d.]*", following):  # `--seed -1`
        return following
    words = _words_from(items, index + 1)
    if SHORTHANDS.get(key, key) in LITERAL_KEYS:
        return " ".join(words) or None  # `--prompt a red ball`: a prompt that lost its quotes as well
    return words[0] if words else None


def _option_message(items: list[str], index: int) -> str:
    """An option at items[index]: Hydra's, one of ours misspelt, or another tool's."""
    flag = items[index].partition("=")[0]
    if flag in HYDRA_FLAGS:
        return HYDRA_FLAGS[flag](flag)
    if flag in OPTIONS:
        return f"{flag} is not an option of this command (see its --help)"
    squashed = flag.replace("_", "").replace("-", "")
    for option in OPTIONS:
        if squashed == option.replace("-", ""):
            return f"unknown option '{flag}'; did you mean {option}?"
    name = flag.lstrip("-").replace("-", "_")
    found = suggest(name)
    if found is None:
        return (
            f"unknown option '{flag}': telefuser takes key=value overrides (`telefuser keys` lists every key)"
        )
    found = suggest(name, _option_value(items, index, name, found.key))
    return f"unknown option '{flag}': telefuser takes overrides; write {found}"


def _lost_quotes_message(override: str, words: list[str]) -> str:
    """A prompt the shell split into words: `prompt=a red ball` arrives as `prompt=a`, `red`, `ball`."""
    key = override_key(override) or ""
    text = " ".join([unquote(override.split("=", 1)[1]), *words])
    what = "the negative prompt" if "negative" in key else "the prompt"
    return f"did you forget quotes around {what}? {_shorthand(key)}={shell_word(text)}"


def _bare_message(items: list[str], index: int) -> str:
    word = items[index]
    following = items[index + 1] if index + 1 < len(items) and _bare(items[index + 1]) else None
    found = suggest(word, following, fuzzy=False)
    if found is not None:
        return f"'{word}' is not an override: write {found}"
    return (
        f"'{word}' is not an override: write key=value, such as prompt=\"a cat\" seed=3 "
        "(`telefuser keys` lists every key)"
    )


def argv_message(overrides: list[str]) -> str | None:
    """The first option or keyless word among the (expanded) overrides, explained; None if there is none."""
    for index, item in enumerate(overrides):
        if item.startswith("-"):
            return _option_message(overrides, index)
        if not _bare(item):
            continue
        previous = overrides[index - 1] if index else ""
        if override_key(previous) in LITERAL_KEYS:
            return _lost_quotes_message(previous, _words_from(overrides, index))
        return _bare_message(overrides, index)
    return None
