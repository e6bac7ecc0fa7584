"""The example workflows look finished when opened: no node hides another, groups hold whole nodes,
and the whole graph stays readable at fit-to-view.

Node rectangles follow the ComfyUI frontend (LiteGraph): ``pos`` is the top-left corner of the body,
the title bar sits above it, and a node whose stored ``size`` is smaller than its widgets need is
enlarged on load (which is how a node grows over its neighbour), so sizes are checked against an
estimate of what the frontend computes.
"""

import json
from itertools import combinations

import pytest

from workflow_format import VHS_UI_KEYS, workflow_files

TITLE_HEIGHT = 30  # LiteGraph.NODE_TITLE_HEIGHT
SLOT_HEIGHT = 20  # one row of input/output sockets
WIDGET_HEIGHT = 24  # one widget with its margin
# Nodes that grow by a video preview once a clip is chosen (16:9 assumed: the common case).
VIDEO_PREVIEW = {"VHS_LoadVideo", "VHS_VideoCombine"}
# Widgets the frontend adds that widgets_values does not list.
EXTRA_WIDGETS = {"VHS_LoadVideo": 1}  # its upload button
GROUP_TITLE_HEIGHT = 34  # the bar a group's title is drawn in (font_size 24 plus padding)
# Fit-to-view of a 1600x900 window leaves a canvas of about 1530x840; below a zoom of about 0.6
# the frontend draws nodes without their text (LiteGraph.Canvas.MinFontSizeForLOD), so the graph
# must fit about 1530/0.6 by 840/0.6 graph pixels.
MAX_WIDTH, MAX_HEIGHT = 2400, 1300

WORKFLOWS = {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in workflow_files()}


def rect(node: dict) -> tuple[float, float, float, float]:
    """``(left, top, right, bottom)`` of a node on the canvas, title bar included."""
    (x, y), (w, h) = node["pos"], node["size"]
    return x, y - TITLE_HEIGHT, x + w, y + h


def overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def widget_count(node: dict) -> int:
    values = node.get("widgets_values") or []
    if isinstance(values, dict):  # VideoHelperSuite keeps named values, with its UI state among them
        values = [key for key in values if key not in VHS_UI_KEYS]
    return len(values) + EXTRA_WIDGETS.get(node["type"], 0)


def min_height(node: dict) -> float:
    """The body height the frontend gives a node at least: socket rows, then widgets."""
    sockets = [slot for slot in node.get("inputs", []) if "widget" not in slot]
    rows = max(len(sockets), len(node.get("outputs", [])), 1)
    widgets = widget_count(node)
    height = 6 + rows * SLOT_HEIGHT + (8 + widgets * WIDGET_HEIGHT if widgets else 0)
    if node["type"] in VIDEO_PREVIEW:
        height += node["size"][0] * 9 / 16
    return height


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_nodes_are_at_least_as_large_as_their_widgets(name):
    small = [(node["id"], node["type"], node["size"], min_height(node)) for node in WORKFLOWS[name]["nodes"]
             if node["size"][1] < min_height(node) or node["size"][0] < 140]
    assert small == []


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_no_node_overlaps_another(name):
    nodes = WORKFLOWS[name]["nodes"]
    clashes = [(a["id"], b["id"]) for a, b in combinations(nodes, 2) if overlap(rect(a), rect(b))]
    assert clashes == []


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_groups_hold_whole_nodes(name):
    workflow = WORKFLOWS[name]
    for group in workflow.get("groups", []):
        x, y, w, h = group["bounding"]
        body = (x, y + GROUP_TITLE_HEIGHT, x + w, y + h)  # below the group's own title bar
        inside = []
        for node in workflow["nodes"]:
            left, top, right, bottom = rect(node)
            if overlap(rect(node), (x, y, x + w, y + h)):
                # the frontend moves a group with the nodes it contains: a node half in is a layout slip
                assert body[0] <= left and body[1] <= top and right <= body[2] and bottom <= body[3], (
                    group["title"], node["id"])
                inside.append(node["id"])
        assert inside, f"group {group['title']!r} holds no node"
    for a, b in combinations(workflow.get("groups", []), 2):
        ax, ay, aw, ah = a["bounding"]
        bx, by, bw, bh = b["bounding"]
        assert not overlap((ax, ay, ax + aw, ay + ah), (bx, by, bx + bw, by + bh))


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_whole_graph_is_readable_at_fit_to_view(name):
    workflow = WORKFLOWS[name]
    boxes = [rect(node) for node in workflow["nodes"]]
    boxes += [(x, y, x + w, y + h) for x, y, w, h in (group["bounding"] for group in workflow.get("groups", []))]
    width = max(box[2] for box in boxes) - min(box[0] for box in boxes)
    height = max(box[3] for box in boxes) - min(box[1] for box in boxes)
    assert width <= MAX_WIDTH and height <= MAX_HEIGHT, (width, height)


def test_the_checks_catch_a_hidden_widget():
    # a node given less height than its widgets: the frontend would grow it over the node below
    node = {"id": 1, "type": "T", "pos": [0, 0], "size": [340, 60], "inputs": [{"name": "a", "type": "X"}],
            "outputs": [{"name": "b", "type": "X"}], "widgets_values": ["mos", 0.1, "none"]}
    below = dict(node, id=2, pos=[0, 100])
    assert min_height(node) > 60
    assert not overlap(rect(node), rect(below))
    assert overlap(rect(dict(node, size=[340, min_height(node)])), rect(below))
    # the title bar counts: a node starting right under another's body still covers it
    assert overlap(rect(node), rect(dict(node, id=3, pos=[0, 80])))
