"""How the views of a run pace time: one long-gap rule, and slow motion's shortest gap.

The long-gap rule: a quiet stretch longer than ``LONG_GAP_S`` is shown ``LONG_GAP_S`` long, and the view
says how long it really was.

ladder.svg draws such a stretch that long with a break mark, ``tcplab replay`` plays it in that many
seconds (``--max-gap`` sets another limit, 0 keeps every gap) and film.html's scrubber gives it that
much of its length (the page reads the constant from its data). The stretch to cut is TIME_WAIT's 60 s.

Why 3 s: it is the seed storyline's delay, the slowest the lab films. Shorter limits (the ladder had
1.5 s, the scrubber 2 s) cut the very delay a 3 s film is made to show: seed-3s's ladder had nine break
marks across its slanted segments. With 3 s only the quiet stretches longer than one delay are cut.

Slow motion (``tcplab replay --slow``, film.html's ``s``) shows every moment at least ``SLOW_MIN_S``
long, so a state that lived microseconds can be seen.
"""

from __future__ import annotations

LONG_GAP_S = 3.0
SLOW_MIN_S = 1.0


def is_cut(gap: float, limit: float = LONG_GAP_S) -> bool:
    """Whether a quiet stretch of ``gap`` seconds is shortened (never, when ``limit`` is 0)."""
    return bool(limit) and gap > limit


def shown(gap: float, limit: float = LONG_GAP_S) -> float:
    """How long a quiet stretch of ``gap`` seconds is shown: itself, or ``limit`` when it is longer."""
    return limit if is_cut(gap, limit) else gap
