"""Query results on the console: the aligned text tables of ``moodlake sql``, ``moodlake models``,
``moodlake datasets list`` and the demo. Nothing but the standard library, so that any command (and
any companion outside the package, such as the demo) prints rows without importing the CLI."""
from __future__ import annotations

import sys


def print_rows(df, limit: int, out=sys.stdout) -> int:
    """Print a DataFrame as an aligned text table; binary cells as <N bytes>. Returns rows shown."""
    return print_table(df.columns, [tuple(r) for r in df.limit(limit + 1).collect()], limit, out)


def print_table(cols: list[str], rows: list, limit: int, out=sys.stdout) -> int:
    """Print rows (sequences in ``cols`` order, ``limit + 1`` of them to say there are more) as
    :func:`print_rows` does."""

    def cell(v) -> str:
        if v is None:
            return "NULL"
        if isinstance(v, (bytes, bytearray)):
            return f"<{len(v)} bytes>"
        s = str(v)
        return s if len(s) <= 80 else s[:77] + "..."

    table = [[cell(v) for v in r] for r in rows[:limit]]
    widths = [max([len(c)] + [len(t[i]) for t in table]) for i, c in enumerate(cols)]
    print(" | ".join(c.ljust(w) for c, w in zip(cols, widths)), file=out)
    print("-+-".join("-" * w for w in widths), file=out)
    for t in table:
        print(" | ".join(v.ljust(w) for v, w in zip(t, widths)), file=out)
    more = " (more rows not shown; --limit)" if len(rows) > limit else ""
    print(f"({len(table)} row{'s' if len(table) != 1 else ''}){more}", file=out)
    return len(table)
