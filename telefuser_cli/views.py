"""What `telefuser list` and `telefuser keys` print: readable in an 80-column terminal as in a wide one.

Names are what a user types, so they are never cut: the name column is as wide as the longest name,
and what does not fit beside it (the description, where the weights are) goes on lines below the name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich import box
from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from telefuser_cli.config.catalog import PACKAGED, PLUGIN, Entry, Facts, display_path

# The narrowest last column (description, weights folder) worth having; below it, it goes under the name.
MIN_WIDE = 24
NOTE_INDENT = 2
# Columns of each group after the name: (header, the Facts field shown).
_FACT_COLUMNS = {
    "model": ["task", "size", "steps", "cfg", "shift", "weights"],
    "recipe": ["task", "size", "steps", "cfg", "shift", "weights"],
    "pipeline": ["steps", "cfg", "shift", "frames", "fps"],
    "launcher": [],
}
# Columns left out first, in this order, where the table would not fit (a recipe's task is its model's);
# the source then goes under the name.
_OPTIONAL = {
    "model": ["source"],
    "pipeline": ["source"],
    "recipe": ["source", "task"],
    "launcher": ["source"],
}
# How each group is chosen on the command line, shown in its title.
USAGE = {
    "model": "model=NAME",
    "pipeline": "pipeline=NAME",
    "recipe": "recipe=NAME",
    "launcher": "-m hydra/launcher=NAME",
}


@dataclass
class Row:
    name: str
    cells: dict[str, str]  # column -> text
    description: str
    whole: list[str] = field(default_factory=list)  # lines under the name holding names: never folded
    notes: list[Text] = field(default_factory=list)  # lines under the name that may wrap (where, why not)


def _source(entry: Entry) -> str:
    if entry.source in (PACKAGED, PLUGIN):
        return "Hydra plugin" if entry.source == PLUGIN else "packaged"
    return "--config-dir, shadows packaged" if "shadows" in entry.source else "--config-dir"


def _notes(group: str, facts: Facts | None) -> tuple[list[str], list[Text]]:
    whole, notes = [], []
    if facts is None:
        return whole, notes
    if facts.broken:
        first_line = facts.broken.splitlines()[0]  # Hydra goes on to list every entry of the group
        return whole, [Text(f"does not compose: {first_line}", style="red")]
    if group == "recipe":
        whole.append(f"uses {facts.model}")
        if facts.pipeline != facts.model_pipeline:
            whole.append(f"with {facts.pipeline}")
    if facts.super_resolution:
        notes.append(Text(f"then super-resolution to {facts.super_resolution}", style="dim"))
    if not facts.supported:
        notes.append(Text(f"not available in this version (task {facts.task})", style="red"))
    elif facts.refused:
        notes.append(Text(f"refused as it is: {facts.refused}", style="red"))
    return whole, notes


def group_rows(group: str, entries: list[Entry], facts: dict[str, Facts]) -> list[Row]:
    rows = []
    for entry in entries:
        fact = facts.get(entry.name)
        cells = {column: getattr(fact, column) if fact else "" for column in _FACT_COLUMNS[group]}
        cells["source"] = _source(entry)
        cells["root"] = display_path(fact.root) if fact and fact.root else ""
        whole, notes = _notes(group, fact)
        rows.append(Row(entry.name, cells, entry.description, whole, notes))
    return rows


def _name_width(rows: list[Row]) -> int:
    lines = [len("name")] + [len(row.name) for row in rows]
    lines += [NOTE_INDENT + len(line) for row in rows for line in row.whole]
    return max(lines)


def _layout(group: str, rows: list[Row], width: int) -> tuple[list[str], int, int]:
    """The columns shown, the gap between columns, and the width of the last, wrapping column (the
    weights folder of a model, the description of the others; 0 where it does not fit beside them)."""
    columns = list(_FACT_COLUMNS[group])
    # The source is worth showing only where it differs (a --config-dir entry, a plugin launcher).
    if len({row.cells["source"] for row in rows}) > 1:
        columns.append("source")
    optional = [column for column in _OPTIONAL[group] if column in columns]
    name_width = _name_width(rows)
    while True:
        widths = [max([len(column)] + [len(row.cells[column]) for row in rows]) for column in columns]
        # Two spaces between columns where they fit, one where they do not. A column takes its text,
        # then `gap` (padding and separator) before the next one.
        for gap in (2, 1):
            room = width - name_width - sum(widths) - gap * len(widths)
            if room >= 0:
                wide = room - gap - (gap - 1)  # the last column carries its padding but no separator
                return columns, gap, wide if wide >= MIN_WIDE else 0
        if not optional:
            return columns, 1, 0  # narrower than any layout: Rich folds what does not fit
        dropped = optional.pop(0)
        columns.remove(dropped)


def _name_cell(row: Row, notes: list[Text]) -> Group:
    """The name, and under it the notes, indented and folded to the name column's width."""
    lines = [Text(row.name, style="bold cyan")]
    lines += [Padding(Text(line, style="dim"), (0, 0, 0, NOTE_INDENT)) for line in row.whole]
    lines += [Padding(note, (0, 0, 0, NOTE_INDENT)) for note in notes]
    return Group(*lines)


def group_table(group: str, rows: list[Row], width: int) -> Table:
    """The table of one group for a terminal `width` columns wide."""
    columns, gap, wide_width = _layout(group, rows, width)
    with_wide = wide_width > 0
    name_width = _name_width(rows)
    table = Table(
        title=f"{group}s ({USAGE[group]})",
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, gap - 1, 0, 0),
        header_style="bold",
    )
    table.add_column("name", min_width=name_width, max_width=name_width, overflow="fold")
    for column in columns:
        table.add_column(column, no_wrap=True)
    # A model's weights folder matters more than its description (which repeats its name).
    wide = "root" if group == "model" else "description"
    if with_wide:
        table.add_column(wide, width=wide_width, overflow="fold")
    source_below = len({row.cells["source"] for row in rows}) > 1 and "source" not in columns
    for row in rows:
        notes = list(row.notes)
        if source_below and row.cells["source"] != "packaged":
            notes.append(Text(row.cells["source"], style="yellow"))
        if group == "model" and not with_wide and row.cells["root"]:
            notes.insert(0, Text(f"root: {row.cells['root']}", style="dim"))
        if (wide == "root" or not with_wide) and row.description:
            notes.insert(0, Text(row.description))
        cells: list[RenderableType] = [_name_cell(row, notes), *(Text(row.cells[c]) for c in columns)]
        if with_wide:
            cells.append(Text(row.cells["root"] if wide == "root" else row.description))
        table.add_row(*cells)
    return table


def key_lines(keys: list) -> Group:
    """`telefuser keys`: `key = default (type)` on one line; allowed values and description indented below."""
    lines: list[RenderableType] = []
    for key in keys:
        line = Text(key.path, style="bold cyan")
        if key.default:
            line.append(f" = {key.default}")
        line.append(f"  ({key.type})", style="green")
        lines.append(line)
        below = []
        if key.choices:
            below.append(Text("one of " + ", ".join(key.choices), style="green"))
        description = key.description
        if key.fact:
            description = f"{description} Bound to the weights: choose another model=NAME.".strip()
        if description:
            below.append(Text(description, style="dim"))
        lines += [Padding(text, (0, 0, 0, 4)) for text in below]
    return Group(*lines)
