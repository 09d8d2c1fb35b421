"""A workflow definition drawn as a graph: boxes and edges laid out top to bottom, for inline SVG.

Sequences stack; each task is drawn in the shape its kind gives (`core/kinds`: a box, lanes side
by side that meet again at the next task, as FORK_JOIN's branches and SWITCH's cases, or a loop
whose body has an edge back to its box, as DO_WHILE's). Each box carries the status of the
latest attempt of its reference (when an execution is shown), which the page colours.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.kinds import kind_for
from ..core.kinds.base import Lanes, Loop
from ..core.schema import WorkflowTask

BOX_W, BOX_H = 168.0, 40.0
V_GAP, H_GAP, LANE = 34.0, 22.0, 26.0
PAD = 16.0
MAX_LABEL = 22

Point = tuple[float, float]


@dataclass
class Box:
    x: float
    y: float
    ref: str
    title: str            # the type, or the task definition's name
    kind: str
    status: str = ""      # the latest attempt's status; "" if it never ran
    w: float = BOX_W
    h: float = BOX_H
    note: str = ""        # e.g. "x3" for loop iterations
    round: bool = False   # start and end

    @property
    def label(self) -> str:
        return short(self.ref)

    @property
    def sublabel(self) -> str:
        return short(f"{self.title}{'  ' + self.note if self.note else ''}")


@dataclass
class Edge:
    points: list[Point]
    label: str = ""
    back: bool = False

    @property
    def path(self) -> str:
        return " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(self.points))

    @property
    def label_at(self) -> Point:
        if self.back:   # under the bottom run of the loop's edge back
            (x1, y1), (x2, _) = self.points[1], self.points[2]
            return ((x1 + x2) / 2, y1 + 11)
        (_, y1), (x2, y2) = self.points[-2], self.points[-1]
        return (x2 + 4, (y1 + y2) / 2 + 4)


@dataclass
class Block:
    width: float
    height: float
    entry: Point
    exits: list[Point]
    boxes: list[Box] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)

    def moved(self, dx: float, dy: float) -> Block:
        def move(p: Point) -> Point:
            return (p[0] + dx, p[1] + dy)
        for box in self.boxes:
            box.x, box.y = box.x + dx, box.y + dy
        for edge in self.edges:
            edge.points = [move(p) for p in edge.points]
        self.entry = move(self.entry)
        self.exits = [move(p) for p in self.exits]
        return self


@dataclass
class Graph:
    width: float
    height: float
    boxes: list[Box]
    edges: list[Edge]


def short(text: str) -> str:
    return text if len(text) <= MAX_LABEL else text[:MAX_LABEL - 1] + "…"


def connect(start: Point, end: Point, label: str = "") -> Edge:
    if abs(start[0] - end[0]) < 0.5:
        return Edge([start, end], label)
    mid = end[1] - V_GAP / 2
    return Edge([start, (start[0], mid), (end[0], mid), end], label)


class _Layout:
    def __init__(self, statuses: Mapping[str, str], iterations: Mapping[str, int]) -> None:
        self.statuses = statuses
        self.iterations = iterations

    def box(self, task: WorkflowTask | dict[str, Any], title: str) -> Box:
        kind = str(task.get("type", "SIMPLE"))
        ref = str(task.get("taskReferenceName", "?"))
        count = self.iterations.get(ref, 0)
        return Box(0.0, 0.0, ref, title, kind, self.statuses.get(ref, ""), note=f"x{count}" if count > 1 else "")

    def single(self, box: Box) -> Block:
        return Block(box.w, box.h, (box.w / 2, 0.0), [(box.w / 2, box.h)], [box])

    def sequence(self, tasks: list[Any]) -> Block:
        blocks = [self.task(t) for t in tasks]
        if not blocks:
            return Block(BOX_W / 2, 0.0, (BOX_W / 4, 0.0), [(BOX_W / 4, 0.0)])
        width = max(b.width for b in blocks)
        out = Block(width, 0.0, (0.0, 0.0), [])
        y = 0.0
        previous: Block | None = None
        for block in blocks:
            block.moved((width - block.width) / 2, y)
            if previous is None:
                out.entry = block.entry
            else:
                out.edges += [connect(p, block.entry) for p in previous.exits]
            out.boxes += block.boxes
            out.edges += block.edges
            y += block.height + V_GAP
            previous = block
        assert previous is not None
        out.exits, out.height = previous.exits, y - V_GAP
        return out

    def branches(self, head: Box, branches: list[tuple[str, list[Any]]]) -> Block:
        blocks = [(label, self.sequence(tasks)) for label, tasks in branches]
        inner = sum(b.width for _, b in blocks) + H_GAP * max(0, len(blocks) - 1)
        width = max(head.w, inner)
        head.x = (width - head.w) / 2
        top = head.h + V_GAP
        out = Block(width, head.h, (width / 2, 0.0), [], [head])
        x = (width - inner) / 2
        for label, block in blocks:
            block.moved(x, top)
            out.edges.append(connect((width / 2, head.h), block.entry, label))
            out.boxes += block.boxes
            out.edges += block.edges
            out.exits += block.exits
            out.height = max(out.height, top + block.height)
            x += block.width + H_GAP
        if not blocks:
            out.exits = [(width / 2, head.h)]
        return out

    def task(self, task: Any) -> Block:
        shape = kind_for(task.get("type", "SIMPLE")).graph(task)
        head = self.box(task, shape.title)
        if isinstance(shape, Lanes):
            return self.branches(head, shape.lanes)
        if isinstance(shape, Loop):
            return self.loop(head, shape.body)
        return self.single(head)

    def loop(self, head: Box, tasks: list[Any]) -> Block:
        body = self.sequence(tasks)
        width = max(head.w, body.width) + LANE
        head.x = (width - LANE - head.w) / 2
        top = head.h + V_GAP
        body.moved((width - LANE - body.width) / 2, top)
        out = Block(width, top + body.height + V_GAP / 2, (head.x + head.w / 2, 0.0), body.exits,
                    [head, *body.boxes], [connect((head.x + head.w / 2, head.h), body.entry), *body.edges])
        lane = width - LANE / 3
        for ex, ey in body.exits[:1]:
            below = ey + V_GAP / 3
            out.edges.append(Edge([(ex, ey), (ex, below), (lane, below), (lane, head.h / 2),
                                   (head.x + head.w, head.h / 2)], "repeat", back=True))
        return out


def layout(tasks: list[Any], statuses: Mapping[str, str] | None = None,
           iterations: Mapping[str, int] | None = None, *, ended: str = "") -> Graph:
    """Lay out a normalised task list. `statuses`: reference -> status of its latest attempt;
    `iterations`: reference -> how many instances ran (loops); `ended`: the workflow's status
    once it ended (colours the end circle)."""
    maker = _Layout(statuses or {}, iterations or {})
    body = maker.sequence(tasks)
    start = Box(0.0, 0.0, "start", "", "START", "COMPLETED" if statuses else "", w=60.0, h=26.0, round=True)
    end = Box(0.0, 0.0, "end", "", "END", ended, w=60.0, h=26.0, round=True)
    width = max(body.width, start.w)
    start.x = (width - start.w) / 2
    body.moved((width - body.width) / 2, start.h + V_GAP)
    end_y = start.h + V_GAP + body.height + V_GAP
    end.x, end.y = (width - end.w) / 2, end_y
    edges = [*body.edges]
    if tasks:
        edges.insert(0, connect((width / 2, start.h), body.entry))
        edges += [connect(p, (width / 2, end_y)) for p in body.exits]
    else:
        edges.append(connect((width / 2, start.h), (width / 2, end_y)))
    graph = Graph(width + 2 * PAD, end_y + end.h + 2 * PAD, [start, *body.boxes, end], edges)
    for box in graph.boxes:
        box.x, box.y = box.x + PAD, box.y + PAD
    for edge in graph.edges:
        edge.points = [(x + PAD, y + PAD) for x, y in edge.points]
    return graph
