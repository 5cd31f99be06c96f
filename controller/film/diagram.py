"""The TCP state diagram of RFC 9293 (section 3.3.2, figure 5) as SVG, for film.html.

Eleven state boxes placed as in the RFC's figure (CLOSED drawn twice, at the top where connections
begin and at the bottom right where they end, as the figure does) and its twenty transitions, each
labelled with the RFC's event / action. Every box carries ``data-state`` (and the bottom CLOSED
``data-end="1"``), every edge ``data-from``/``data-to``, so the page colours them from the trace:
the server's state blue, the client's red, green where both are, the transition just taken bold.
"""

from __future__ import annotations

import math
from xml.sax.saxutils import escape

from controller.film.model import RFC_TRANSITIONS

BOX_W, BOX_H = 124, 34
WIDTH, HEIGHT = 720, 720
# centres, after the RFC's figure
POS = {
    "CLOSED": (360, 36), "LISTEN": (360, 150), "SYN_RECEIVED": (90, 270), "SYN_SENT": (630, 270),
    "ESTABLISHED": (360, 380), "FIN_WAIT1": (90, 490), "CLOSE_WAIT": (630, 490), "FIN_WAIT2": (90, 600),
    "CLOSING": (360, 600), "LAST_ACK": (630, 600), "TIME_WAIT": (360, 690), "CLOSED_END": (630, 690),
}
LABEL = {"SYN_RECEIVED": "SYN-RECEIVED", "SYN_SENT": "SYN-SENT", "FIN_WAIT1": "FIN-WAIT-1",
         "FIN_WAIT2": "FIN-WAIT-2", "CLOSE_WAIT": "CLOSE-WAIT", "LAST_ACK": "LAST-ACK",
         "TIME_WAIT": "TIME-WAIT", "CLOSED_END": "CLOSED"}
# label positions (x, y, text-anchor) where the midpoint would be crowded
_LABEL_AT = {
    ("CLOSED", "LISTEN"): (340, 98, "end"), ("LISTEN", "CLOSED"): (380, 98, "start"),
    ("CLOSED", "SYN_SENT"): (560, 80, "start"), ("SYN_SENT", "CLOSED"): (470, 118, "start"),
    ("LISTEN", "SYN_SENT"): (520, 196, "start"), ("LISTEN", "SYN_RECEIVED"): (215, 226, "end"),
    ("SYN_RECEIVED", "LISTEN"): (190, 190, "end"), ("SYN_SENT", "SYN_RECEIVED"): (360, 264, "middle"),
    ("SYN_RECEIVED", "FIN_WAIT1"): (84, 380, "end"), ("SYN_RECEIVED", "ESTABLISHED"): (200, 340, "end"),
    ("SYN_SENT", "ESTABLISHED"): (520, 340, "start"), ("ESTABLISHED", "FIN_WAIT1"): (200, 448, "end"),
    ("ESTABLISHED", "CLOSE_WAIT"): (520, 448, "start"), ("FIN_WAIT1", "FIN_WAIT2"): (84, 548, "end"),
    ("FIN_WAIT1", "CLOSING"): (240, 530, "start"), ("CLOSE_WAIT", "LAST_ACK"): (624, 548, "end"),
    ("FIN_WAIT2", "TIME_WAIT"): (200, 662, "end"), ("CLOSING", "TIME_WAIT"): (366, 648, "start"),
    ("LAST_ACK", "CLOSED"): (636, 648, "start"), ("TIME_WAIT", "CLOSED"): (495, 684, "middle"),
}


def _clip(cx: float, cy: float, dx: float, dy: float) -> tuple[float, float]:
    """The point where the ray from a box's centre along (dx, dy) leaves the box."""
    sx = (BOX_W / 2) / abs(dx) if dx else math.inf
    sy = (BOX_H / 2) / abs(dy) if dy else math.inf
    s = min(sx, sy)
    return cx + dx * s, cy + dy * s


def _edge_points(frm: str, to: str) -> tuple[float, float, float, float]:
    (x0, y0), (x1, y1) = POS[frm], POS[to]
    dx, dy = x1 - x0, y1 - y0
    n = math.hypot(dx, dy)
    ox, oy = (-dy / n * 7, dx / n * 7) if (to, frm) in _EDGES else (0.0, 0.0)  # two-way: side by side
    ax, ay = _clip(x0, y0, dx, dy)
    bx, by = _clip(x1, y1, -dx, -dy)
    return ax + ox, ay + oy, bx + ox, by + oy


def _edges() -> dict[tuple[str, str], str]:
    edges = {}
    for (frm, to), label in RFC_TRANSITIONS.items():
        if to == "CLOSED" and frm in ("LAST_ACK", "TIME_WAIT"):
            to = "CLOSED_END"
        edges[(frm, to)] = label
    return edges


_EDGES = _edges()


def render() -> str:
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" id="state-diagram" viewBox="0 0 {WIDTH} {HEIGHT}" '
           f'font-family="sans-serif" font-size="10" role="img" '
           f'aria-label="TCP state diagram (RFC 9293, figure 5)">',
           '<defs><marker id="arrow" markerWidth="8" markerHeight="8" refX="7" refY="4" orient="auto" '
           'markerUnits="userSpaceOnUse"><path d="M0,0 L8,4 L0,8 z" fill="context-stroke"/></marker></defs>']
    for (frm, to), label in _EDGES.items():
        x0, y0, x1, y1 = _edge_points(frm, to)
        data_to = "CLOSED" if to == "CLOSED_END" else to
        mx, my, anchor = _LABEL_AT.get((frm, data_to), ((x0 + x1) / 2, (y0 + y1) / 2, "middle"))
        out.append(f'<g class="edge" data-from="{frm}" data-to="{data_to}">'
                   f'<line x1="{x0:.1f}" y1="{y0:.1f}" x2="{x1:.1f}" y2="{y1:.1f}" marker-end="url(#arrow)"/>'
                   f'<text x="{mx:.1f}" y="{my:.1f}" text-anchor="{anchor}">{escape(label)}</text></g>')
    for state, (x, y) in POS.items():
        end = ' data-end="1"' if state == "CLOSED_END" else ""
        data = "CLOSED" if state == "CLOSED_END" else state
        out.append(f'<g class="state" data-state="{data}"{end}>'
                   f'<rect x="{x - BOX_W / 2:.0f}" y="{y - BOX_H / 2:.0f}" width="{BOX_W}" height="{BOX_H}" rx="6"/>'
                   f'<text x="{x}" y="{y + 4}" text-anchor="middle" font-size="13" font-weight="bold">'
                   f'{LABEL.get(state, state)}</text></g>')
    out.append("</svg>")
    return "\n".join(out)
