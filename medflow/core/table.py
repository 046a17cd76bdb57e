"""Plain-text tables for the console (``medflow predict``, summaries)."""

from __future__ import annotations

from collections.abc import Sequence


def text_table(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, the first row as header underlined with dashes."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# What a spreadsheet takes for the start of a formula (OWASP "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def formula_like(text: str) -> bool:
    """A cell a spreadsheet would run as a formula (numbers such as -1 are not)."""
    return text.startswith(_FORMULA_START) and not _is_number(text)


def has_control_characters(text: str) -> bool:
    """Line breaks, tabs or other control characters (unusable in a class name)."""
    return any(ord(ch) < 32 or ord(ch) == 127 for ch in text)


def spreadsheet_safe(text: str) -> str:
    """``text`` as a CSV cell that opens as text in a spreadsheet: a formula-like value gets
    a leading apostrophe, which spreadsheets hide and medflow's readers never see in its own
    columns (it is applied to free text, e.g. reviewer comments)."""
    return "'" + text if formula_like(text) else text
