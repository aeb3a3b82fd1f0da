"""Tables as pandas DataFrames, written to CSV and Markdown in one way for every report.

The CSV files are read back by tools (the regression guard reads ``frontier.csv``) and the
committed reports were written by the ``csv`` module, so cells are rendered as it rendered them
(``str`` of the value, empty for a missing one, CRLF line ends) before pandas writes them: the
same run gives the same bytes as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pandas as pd

from dynlen.atomic import write_text_atomic


def frame(rows: Iterable[dict], columns: Sequence[str]) -> pd.DataFrame:
    """Rows (dicts) in a fixed column order; a column a row lacks is missing (None), not an error."""
    return pd.DataFrame([{c: row.get(c) for c in columns} for row in rows], columns=list(columns), dtype=object)


def _plain(value: object) -> str:
    return "" if value is None else str(value)


def write_csv(table: pd.DataFrame, path: Path, cell: Callable[[object], str] = _plain) -> Path:
    """CSV with the ``csv`` module's conventions: minimal quoting, CRLF line ends, ``cell``-rendered values."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rendered = table.map(cell) if len(table) else table.astype(str)
    write_text_atomic(path, rendered.to_csv(index=False, lineterminator="\r\n"))
    return path


def markdown(table: pd.DataFrame, cell: Callable[[object], str] = _plain) -> str:
    """A GitHub pipe table; cells are rendered by ``cell`` and never re-parsed as numbers."""
    rendered = table.map(cell) if len(table) else table.astype(str)
    return rendered.to_markdown(index=False, tablefmt="github", disable_numparse=True)
