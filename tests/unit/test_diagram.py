"""The RFC 9293 state diagram of film.html (controller/film/diagram.py)."""

import xml.etree.ElementTree as ET

from controller.film import diagram
from controller.film.model import RFC_TRANSITIONS, STATES

SVG = "{http://www.w3.org/2000/svg}"


def test_every_state_and_every_transition_of_the_rfc_figure_is_drawn():
    root = ET.fromstring(diagram.render())
    boxes = [g.get("data-state") for g in root.iter(f"{SVG}g") if g.get("class") == "state"]
    assert sorted(set(boxes)) == sorted(STATES) and boxes.count("CLOSED") == 2  # top and bottom, as in the RFC
    edges = {(g.get("data-from"), g.get("data-to")): g.find(f"{SVG}text").text
             for g in root.iter(f"{SVG}g") if g.get("class") == "edge"}
    assert edges == RFC_TRANSITIONS


def test_edges_start_and_end_on_the_boxes_borders_inside_the_picture():
    root = ET.fromstring(diagram.render())
    for g in root.iter(f"{SVG}g"):
        if g.get("class") != "edge":
            continue
        line = g.find(f"{SVG}line")
        xs = [float(line.get(a)) for a in ("x1", "x2")]
        ys = [float(line.get(a)) for a in ("y1", "y2")]
        assert all(0 <= x <= diagram.WIDTH for x in xs) and all(0 <= y <= diagram.HEIGHT for y in ys)
        assert (xs[0], ys[0]) != (xs[1], ys[1])
