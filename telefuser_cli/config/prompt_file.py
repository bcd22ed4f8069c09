"""`user.prompt_file=FILE`: one prompt per line, each taken literally.

A prompt file is UTF-8 text; blank lines and lines whose first non-blank character is `#` are skipped;
every other line is one prompt, exactly as written (commas, quotes, `=`, any script), minus its line
ending and surrounding whitespace. A job names its prompt by line number (`user.prompt_line`, 1-based, as
an editor shows it), so a sweep over a file is a sweep over an integer key, which Hydra can never split
or misread; the text itself is read here, once per job, and recorded as `user.prompt`.
"""

from __future__ import annotations

from pathlib import Path

from telefuser_cli.errors import UserError

KEY = "user.prompt_file"
LINE_KEY = "user.prompt_line"


def read_prompts(path: str | Path) -> dict[int, str]:
    """{line number: prompt} of a prompt file, in file order; a UserError when there is none to read."""
    path = Path(path).expanduser()
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise UserError(f"{KEY}={path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{KEY}={path}: a folder, not a prompt file (one prompt per line)") from None
    except UnicodeDecodeError as error:
        line = text_line_of(path.read_bytes(), error.start)
        raise UserError(f"{KEY}={path}: line {line} is not UTF-8 text; save the file as UTF-8") from None
    except OSError as error:
        raise UserError(f"{KEY}={path}: cannot be read ({error.strerror or error})") from None
    text = text.removeprefix("\ufeff")  # a byte-order mark some editors write is not part of line 1
    prompts = {}
    for number, line in enumerate(text.splitlines(), start=1):
        prompt = line.strip()
        if prompt and not prompt.startswith("#"):
            prompts[number] = prompt
    if not prompts:
        raise UserError(
            f"{KEY}={path}: holds no prompt (one prompt per line; blank lines and # comments are skipped)"
        )
    return prompts


def text_line_of(data: bytes, offset: int) -> int:
    """The 1-based line that byte `offset` of `data` is on."""
    return data.count(b"\n", 0, offset) + 1


def prompt_of(path: str | Path, line: int | None) -> tuple[int, str]:
    """(line, prompt) of one job: the prompt on `line`, or the file's only prompt when `line` is None."""
    prompts = read_prompts(path)
    if line is None:
        if len(prompts) > 1:
            raise UserError(
                f"{KEY}={path} holds {len(prompts)} prompts: run them all with -m (one job per prompt), "
                f"or choose one with {LINE_KEY}=N"
            )
        return next(iter(prompts.items()))
    if line not in prompts:
        lines = ", ".join(str(number) for number in list(prompts)[:10])
        more = ", ..." if len(prompts) > 10 else ""
        raise UserError(
            f"{LINE_KEY}={line}: no prompt on that line of {path} (prompts are on lines {lines}{more})"
        )
    return line, prompts[line]


def prompt_file_overrides(overrides: list[str], multirun: bool) -> list[str]:
    """The command's overrides with `user.prompt_file` made one literal absolute path and, under -m, a
    sweep over its prompt lines (`user.prompt_line=3,5,8`) unless the lines were chosen already.

    The file is read here, before any job is composed, so a missing or empty file is one message.
    """
    from telefuser_cli.config.overrides import override_key, quote, unwrap_quotes

    keys = [override_key(override) for override in overrides]
    if KEY not in keys:
        if LINE_KEY in keys:
            raise UserError(f"{LINE_KEY} chooses a line of {KEY}: give {KEY}=FILE too")
        return list(overrides)
    if "user.prompt" in keys:
        raise UserError(
            f"user.prompt and {KEY} both given: give the prompt on the command line or in the file"
        )
    result = []
    for override, key in zip(overrides, keys, strict=True):
        if key == KEY:
            value = unwrap_quotes(override.split("=", 1)[1])
            path = Path(value).expanduser().absolute()  # jobs read the same file wherever they run
            prompts = read_prompts(path)
            override = f"{KEY}={quote(str(path))}"
        result.append(override)
        if key == KEY and multirun and LINE_KEY not in keys:
            # right after the file: the prompt is the sweep's outer loop, as where it was typed
            result.append(f"{LINE_KEY}={','.join(str(line) for line in prompts)}")
    return result
