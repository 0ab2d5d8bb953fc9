"""Numbers and durations as people read them, in ``study_admin``'s output and the workers' progress lines."""

from __future__ import annotations

import math


def format_value(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.2f}"


def format_duration(seconds: float | None) -> str:
    """``-``, ``45s``, ``12m``, ``3h05m`` or ``2d04h``."""
    if seconds is None:
        return "-"
    seconds = max(round(seconds), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def describe_origin(origin: dict) -> str:
    """Where a warm-started trial's configuration comes from (``protocol.WARM_START``, decoded), in one line."""
    what = "confirmed IQM" if origin["confirmed"] else "value"
    return (f"from {printable(origin['study'])} trial {origin['trial']} ({printable(origin['env_id'])}, {what} "
            f"{format_value(origin['value'])})")  # fmt: skip


def printable(value: object) -> str:
    """Text read from the database as one line that cannot drive a terminal: control and other unprintable
    characters (a newline, an escape sequence) are written escaped, as ``repr`` writes them."""
    text = value if isinstance(value, str) else repr(value)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
