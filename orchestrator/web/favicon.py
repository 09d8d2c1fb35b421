"""The console's favicon, drawn here in code: a 16x16, 32-bit ICO (a BMP with its alpha) of the
console's blue tile with three white nodes joined in a chain, the shape of a workflow.
Served at /favicon.ico (`image/x-icon`), where browsers look for it unasked."""

from __future__ import annotations

import itertools
import struct

SIZE = 16
_BLUE = (0x2F, 0x5B, 0xD3, 0xFF)    # RGBA: the console's button blue
_WHITE = (0xFF, 0xFF, 0xFF, 0xFF)
_CLEAR = (0, 0, 0, 0)
_NODES = ((3, 3), (7, 8), (12, 12))   # top-left corners of the 2x2 nodes, top row first


def _pixel(x: int, y: int) -> tuple[int, int, int, int]:
    """The colour at column x, row y (row 0 at the top)."""
    corner = min(x, SIZE - 1 - x) + min(y, SIZE - 1 - y)
    if corner < 2 and min(x, SIZE - 1 - x) < 2 and min(y, SIZE - 1 - y) < 2 and corner <= 1:
        return _CLEAR                                   # rounded corners
    for nx, ny in _NODES:
        if nx - 1 <= x <= nx + 2 and ny - 1 <= y <= ny + 2 and not (x in (nx - 1, nx + 2) and y in (ny - 1, ny + 2)):
            return _WHITE                               # a node: a 4x4 disc
    for (ax, ay), (bx, by) in itertools.pairwise(_NODES):
        if ax <= x <= bx + 1 and ay <= y <= by + 1:     # the edge between two nodes, one pixel wide
            t = (x - ax) / max(1, bx - ax)
            if abs(y - (ay + t * (by - ay))) < 0.75:
                return _WHITE
    return _BLUE


def _ico() -> bytes:
    rows = []
    for y in range(SIZE - 1, -1, -1):                   # a BMP stores the bottom row first
        rows.append(b"".join(bytes((b, g, r, a)) for r, g, b, a in (_pixel(x, y) for x in range(SIZE))))
    pixels = b"".join(rows)
    mask = bytes(4 * SIZE)                              # the AND mask: unused with an alpha channel
    header = struct.pack("<IiiHHIIiiII", 40, SIZE, 2 * SIZE, 1, 32, 0, len(pixels) + len(mask), 0, 0, 0, 0)
    image = header + pixels + mask
    directory = struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", SIZE, SIZE, 0, 0, 1, 32, len(image), 22)
    return directory + image


FAVICON = _ico()
