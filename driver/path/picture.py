"""docs/packet-path.svg, drawn from the hops each registered mode declares
(ModeSpec.path_hops): one column per mode, the hops a packet from a
container passes in order, named as `pynet path` names them. A unit test
keeps the committed picture equal to what this draws:

    python -m driver.path.picture > docs/packet-path.svg
"""

from __future__ import annotations

import sys
from xml.sax.saxutils import escape

from .. import registry
from .model import HopKind

BOX_W, BOX_H, GAP, COL_GAP, TOP, SIDE = 300, 62, 26, 40, 74, 24
FILL = {"container": "#e8f1fb", "host": "#f4f4f4", "underlay": "#fdf1e1"}
STROKE = {"container": "#3d7bc4", "host": "#777777", "underlay": "#d08a2a"}


def chain(spec: registry.ModeSpec) -> list[HopKind]:
    """A mode's hops in a packet's order: those of the modes it builds on, then its own,
    each placed before the kind it names."""
    specs = {s.name: s for s in registry.specs()}
    hops: list[HopKind] = []
    for name in spec.builds_on:
        hops += specs[name].path_hops
    for hop in spec.path_hops:
        at = next((i for i, h in enumerate(hops) if h.kind == hop.before), len(hops)) if hop.before else len(hops)
        hops.insert(at, hop)
    return hops


def _wrap(text: str, width: int = 46) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + ([line] if line else [])


def _box(x: int, y: int, n: int, hop: HopKind) -> list[str]:
    out = [f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="{FILL.get(hop.where, "#fff")}"'
           f' stroke="{STROKE.get(hop.where, "#777")}"/>',
           f'<text x="{x + 10}" y="{y + 18}" class="kind">{n}. {escape(hop.kind)}</text>',
           f'<text x="{x + BOX_W - 10}" y="{y + 18}" class="where" text-anchor="end">{escape(hop.where)}</text>',
           f'<text x="{x + 10}" y="{y + 34}" class="title">{escape(hop.title)}</text>']
    for i, line in enumerate(_wrap(hop.holds)[:2]):
        out.append(f'<text x="{x + 10}" y="{y + 48 + 11 * i}" class="holds">{escape(line)}</text>')
    return out


def draw() -> str:
    modes = [s for s in registry.specs() if s.mode]
    columns = [(s.name, chain(s) if s.builds_on else list(s.path_hops)) for s in modes]
    rows = max(len(hops) for _, hops in columns)
    width = SIDE * 2 + len(columns) * BOX_W + (len(columns) - 1) * COL_GAP
    height = TOP + rows * (BOX_H + GAP) + 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
           f' viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Verdana, sans-serif">',
           "<style>.kind{font-size:13px;font-weight:bold}.where{font-size:10px;fill:#555}"
           ".title{font-size:11px}.holds{font-size:9.5px;fill:#444}.mode{font-size:15px;font-weight:bold}"
           ".note{font-size:10px;fill:#555}</style>",
           '<defs><marker id="arrow" markerWidth="8" markerHeight="8" refX="4" refY="4" orient="auto">'
           '<path d="M0,0 L8,4 L0,8 z" fill="#555"/></marker></defs>',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{SIDE}" y="26" class="mode">A packet from a container, hop by hop, as `pynet path`'
           ' names each hop</text>',
           f'<text x="{SIDE}" y="44" class="note">drawn from the hops each mode declares (driver/path/picture.py);'
           ' blue: the container\'s namespace, grey: the host\'s, orange: across hosts</text>']
    for c, (name, hops) in enumerate(columns):
        x = SIDE + c * (BOX_W + COL_GAP)
        out.append(f'<text x="{x}" y="{TOP - 10}" class="mode">-o pynet.mode={escape(name)}</text>')
        for n, hop in enumerate(hops):
            y = TOP + n * (BOX_H + GAP)
            out += _box(x, y, n + 1, hop)
            if n + 1 < len(hops):
                mid = x + BOX_W // 2
                out.append(f'<line x1="{mid}" y1="{y + BOX_H}" x2="{mid}" y2="{y + BOX_H + GAP - 4}"'
                           ' stroke="#555" marker-end="url(#arrow)"/>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(draw())
