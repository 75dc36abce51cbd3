"""A pipeline's graph laid out for SVG: each step one layer below its deepest parent, the steps
of a layer ordered by where their parents stand (so edges cross less), each layer centred.
Top to bottom, because pipelines are deeper than wide and phones are taller than wide."""

from __future__ import annotations

BOX_W, BOX_H = 176, 54      # a step's box, in SVG units
GAP_X, GAP_Y = 20, 46       # between boxes side by side, between layers
MARGIN = 8
LABEL_CHARS = 21            # a longer step key is cut, with its full name in the box's title


def layout(steps: list[dict]) -> dict:
    """Boxes and edges for the steps of a PipelineOut (as a dict), which lists parents before children."""
    depth: dict[str, int] = {}
    for step in steps:
        depth[step["key"]] = 1 + max((depth[dep["step"]] for dep in step["depends_on"]), default=-1)
    layers: list[list[dict]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for step in steps:
        layers[depth[step["key"]]].append(step)
    widest = max((len(layer) for layer in layers), default=0)
    centre: dict[str, float] = {}
    boxes = []
    for row, layer in enumerate(layers):
        def barycentre(item: tuple[int, dict]) -> tuple[float, int]:
            index, step = item
            parents = [centre[dep["step"]] for dep in step["depends_on"]]
            return (sum(parents) / len(parents) if parents else 0.0, index)

        ordered = [step for _, step in sorted(enumerate(layer), key=barycentre)]
        indent = (widest - len(ordered)) * (BOX_W + GAP_X) / 2
        for column, step in enumerate(ordered):
            x = MARGIN + indent + column * (BOX_W + GAP_X)
            y = MARGIN + row * (BOX_H + GAP_Y)
            centre[step["key"]] = x + BOX_W / 2
            key = step["key"]
            label = key if len(key) <= LABEL_CHARS else key[:LABEL_CHARS - 1] + "…"
            boxes.append(dict(step, x=x, y=y, label=label))
    top = {box["key"]: box for box in boxes}
    edges = []
    for box in boxes:
        for dep in box["depends_on"]:
            parent = top[dep["step"]]
            x1, y1 = parent["x"] + BOX_W / 2, parent["y"] + BOX_H
            x2, y2 = box["x"] + BOX_W / 2, box["y"] - 4   # stop short of the box: the arrowhead
            middle = (y1 + y2) / 2
            edges.append(dict(path=f"M{x1:g},{y1:g} C{x1:g},{middle:g} {x2:g},{middle:g} {x2:g},{y2:g}",
                              parent_state=parent["state"], allow_failure=dep["allow_failure"],
                              parent=parent["key"], child=box["key"]))
    width = 2 * MARGIN + max(widest * (BOX_W + GAP_X) - GAP_X, 0)
    height = 2 * MARGIN + max(len(layers) * (BOX_H + GAP_Y) - GAP_Y, 0)
    return dict(width=width, height=height, box_w=BOX_W, box_h=BOX_H, boxes=boxes, edges=edges)
