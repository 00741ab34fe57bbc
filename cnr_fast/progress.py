"""Progress lines on stderr, the one place a run reports what it is doing (`quiet` silences them)."""

from __future__ import annotations

import sys


def log(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)
