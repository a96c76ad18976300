#!/usr/bin/env python3
"""Draw the Countersign app icon (rounded square, check mark over a signature line).

Stdlib only: the PNGs are written with zlib. Run from anywhere:
    python3 scripts/make-icons.py
"""
import math
import struct
import zlib
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "icons"
BG = (31, 111, 92)  # #1f6f5c
FG = (255, 255, 255)


def seg_dist(px, py, ax, ay, bx, by):
    dx, dy = bx - ax, by - ay
    t = max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)))
    return math.hypot(px - (ax + t * dx), py - (ay + t * dy))


def cover(d, aa):
    """Coverage of a pixel whose centre is at signed distance d (negative = inside)."""
    return max(0.0, min(1.0, 0.5 - d / aa))


def render(n):
    s = n / 512.0  # design grid is 512x512
    aa = 1.0
    half, radius, inset = n / 2.0, 112 * s, 16 * s
    check = [(150 * s, 262 * s), (222 * s, 334 * s), (362 * s, 180 * s)]
    check_w = 34 * s
    line = ((150 * s, 396 * s), (362 * s, 396 * s))
    line_w = 14 * s
    rows = []
    for y in range(n):
        row = bytearray([0])  # filter type: none
        py = y + 0.5
        for x in range(n):
            px = x + 0.5
            # rounded square signed distance
            qx = abs(px - half) - (half - inset - radius)
            qy = abs(py - half) - (half - inset - radius)
            d_box = math.hypot(max(qx, 0), max(qy, 0)) + min(max(qx, qy), 0) - radius
            a_box = cover(d_box, aa)
            if a_box == 0.0:
                row += b"\0\0\0\0"
                continue
            d_chk = min(
                seg_dist(px, py, *check[0], *check[1]),
                seg_dist(px, py, *check[1], *check[2]),
            ) - check_w / 2
            d_line = seg_dist(px, py, *line[0], *line[1]) - line_w / 2
            a_fg = max(cover(d_chk, aa), cover(d_line, aa) * 0.7)
            rgb = [round(b + (f - b) * a_fg) for b, f in zip(BG, FG)]
            row += bytes(rgb + [round(255 * a_box)])
        rows.append(bytes(row))
    return b"".join(rows)


def write_png(path, n):
    def chunk(tag, data):
        return (
            struct.pack(">I", len(data))
            + tag
            + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", n, n, 8, 6, 0, 0, 0)  # 8-bit RGBA
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(render(n), 9))
        + chunk(b"IEND", b"")
    )
    path.write_bytes(png)


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for name, size in [
        ("32x32.png", 32),
        ("128x128.png", 128),
        ("128x128@2x.png", 256),
        ("icon.png", 512),
    ]:
        write_png(OUT / name, size)
        print(OUT / name)
