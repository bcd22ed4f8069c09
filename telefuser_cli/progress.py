"""Progress of one run: a rich bar per stage, and the time each stage took."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from telefuser_cli import terminal


class StepRateColumn(TextColumn):
    """Iterations per second (or seconds per iteration when slower than one per second)."""

    def __init__(self) -> None:
        super().__init__("")

    def render(self, task):  # type: ignore[override]
        speed = task.finished_speed or task.speed
        if not speed:
            return ""
        return f"{speed:.2f} it/s" if speed >= 1 else f"{1 / speed:.1f} s/it"


STAGE_NOTE = "in stage: "


def stage_of(error: BaseException) -> str | None:
    """The stage an exception escaped from (innermost), as `Reporter.stage` noted it on the way out."""
    notes = [note for note in getattr(error, "__notes__", []) if note.startswith(STAGE_NOTE)]
    return notes[0].removeprefix(STAGE_NOTE) if notes else None


class Reporter:
    """`with reporter.stage("denoise", total=50) as advance: ... advance()`; timings in seconds."""

    def __init__(self, console: Console | None = None, enabled: bool = True) -> None:
        self.console = console or terminal.console
        self.timings: dict[str, float] = {}
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            StepRateColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
            disable=not enabled,  # other ranks of a distributed run stay quiet
        )

    def __enter__(self) -> Reporter:
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    @contextlib.contextmanager
    def stage(self, name: str, total: int | None = None) -> Iterator[Callable[[], None]]:
        """A bar for one stage; a stage that fails or is interrupted stops its bar and says so."""
        task = self._progress.add_task(name, total=total or 1)
        start = time.perf_counter()
        try:
            yield lambda: self._progress.advance(task)
        except BaseException as error:
            ending = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
            error.add_note(f"{STAGE_NOTE}{name}")  # names the stage in the out-of-memory message
            self._progress.update(task, description=f"{name} [red]({ending})[/]")
            self._progress.stop_task(task)
            raise
        self.timings[self._unique(name)] = round(time.perf_counter() - start, 3)
        self._progress.update(task, completed=total or 1)

    def _unique(self, name: str) -> str:
        """Two stages of one name (two `load vae`) keep both timings: the second is `load vae (2)`."""
        count, unique = 1, name
        while unique in self.timings:
            count += 1
            unique = f"{name} ({count})"
        return unique
