"""Text from the network, shown with its control characters made visible.

A console line is whatever reached nc (anyone may connect to ``nc -l`` first), and a step's error
carries what a probe answered: their escape sequences must not reach the terminal that shows a film
(``tcplab replay``/``watch``, story.md in a pager, the CLI's progress lines). :func:`visible` writes
every control character as Python writes it in a string literal: ESC ``\\x1b``, BEL ``\\x07``, CR
``\\r``, LF ``\\n``, DEL ``\\x7f``, a C1 control such as CSI ``\\x9b``; also the Unicode controls that
reorder or hide text (bidirectional overrides and isolates, line/paragraph separators) as
``\\u202e``. A tab stays a tab (it moves the cursor, nothing else). The trace itself keeps the text
as it came: only what is shown is changed.

:func:`guard` wraps a rich renderable so that any text segment still holding a control character is
made visible too, after layout (a field nobody thought of is then misaligned, never obeyed).
"""

from __future__ import annotations

from typing import Iterable

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.segment import Segment

_NAMED = {0x0A: "\\n", 0x0D: "\\r"}
_UNICODE = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029, 0xFEFF)


def _escaped(codes: Iterable[int]) -> dict[int, str]:
    return {c: _NAMED.get(c, f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in codes}


#: str.translate's table: every C0 control but the tab, DEL, every C1 control, the Unicode ones.
TABLE = _escaped([c for c in range(0x20) if c != 0x09] + list(range(0x7F, 0xA0)) + list(_UNICODE))


def visible(text: str) -> str:
    """``text`` with its control characters written out (see the module's doc)."""
    return text.translate(TABLE)


class _Guard:
    def __init__(self, renderable: RenderableType):
        self.renderable = renderable

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for seg in console.render(self.renderable, options):
            if seg.control or not seg.text:  # rich's own cursor moves, never text from a trace
                yield seg
            else:
                yield Segment(visible(seg.text) if "\n" not in seg.text else
                              "\n".join(visible(part) for part in seg.text.split("\n")), seg.style)


def guard(renderable: RenderableType) -> RenderableType:
    """``renderable`` drawn with every control character in its text made visible (newlines kept)."""
    return _Guard(renderable)
