"""Draw the module icon (128 x 128 RGBA PNG) with numpy; writes the PNG with zlib + struct.

Four tiles for FLAIR, T1, T1c, T2; the T1c tile is drawn as missing (dashed
outline) and filled in with a synthesised brain carrying the tumour segments
in their BraTS colours.

    python docs/make_icon.py   (writes MissingModalityTools/Resources/Icons/MissingModalityTools.png)
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

SIZE = 128
OUT = Path(__file__).resolve().parents[1] / "MissingModalityTools" / "Resources" / "Icons" / "MissingModalityTools.png"


def write_png(path: Path, rgba: np.ndarray) -> None:
    """Write an (H, W, 4) uint8 array as an 8-bit RGBA PNG."""
    h, w, _ = rgba.shape
    raw = b"".join(b"\x00" + rgba[y].tobytes() for y in range(h))  # filter type 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)


def draw() -> np.ndarray:
    img = np.zeros((SIZE, SIZE, 4), np.float32)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    # Rounded dark background.
    r = 18
    cx = np.clip(xx, r, SIZE - r)
    cy = np.clip(yy, r, SIZE - r)
    inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    img[inside] = (0.13, 0.16, 0.22, 1.0)
    tiles = {"flair": (8, 8), "t1": (68, 8), "t1c": (68, 68), "t2": (8, 68)}
    # Tissue grey levels per contrast: (white matter, grey matter, CSF, tumour).
    contrast = {
        "flair": (0.55, 0.7, 0.15, 0.95),
        "t1": (0.9, 0.62, 0.25, 0.45),
        "t2": (0.4, 0.65, 0.95, 0.85),
        "t1c": (0.9, 0.62, 0.25, 0.45),
    }
    for key, (x0, y0) in tiles.items():
        tx, ty = xx - (x0 + 26), yy - (y0 + 26)
        brain = (tx / 21) ** 2 + (ty / 24) ** 2 <= 1
        cortex = brain & ((tx / 17) ** 2 + (ty / 20) ** 2 > 1)
        ventricles = ((np.abs(tx) - 5) / 3.5) ** 2 + (ty / 8) ** 2 <= 1
        tumour = ((tx - 9) / 7) ** 2 + ((ty + 7) / 7) ** 2 <= 1
        wm, gm, csf, tu = contrast[key]
        grey = np.where(cortex, gm, wm)
        grey = np.where(ventricles, csf, grey)
        grey = np.where(tumour, tu, grey)
        if key == "t1c":
            # The missing, synthesised contrast: dashed frame and the segments over it.
            frame = ((np.abs(tx) <= 27) & (np.abs(ty) <= 27)) & ~((np.abs(tx) <= 25) & (np.abs(ty) <= 25))
            dashes = ((xx + yy) // 6) % 2 == 0
            img[frame & dashes] = (0.95, 0.75, 0.2, 1.0)
            m = brain
            img[m, :3] = grey[m, None] * np.array([0.85, 0.9, 1.0])
            img[m, 3] = 1.0
            d = np.sqrt((tx - 9) ** 2 + (ty + 7) ** 2)
            edema = brain & (d <= 11) & (d > 7)
            enhancing = (d <= 7) & (d > 4)
            necrotic = d <= 4
            for mask, colour in ((edema, (0.0, 0.8, 0.0)), (enhancing, (1.0, 0.9, 0.0)), (necrotic, (1.0, 0.0, 0.0))):
                img[mask, :3] = 0.35 * img[mask, :3] + 0.65 * np.array(colour)
        else:
            img[brain, :3] = grey[brain, None]
            img[brain, 3] = 1.0
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


if __name__ == "__main__":
    write_png(OUT, draw())
    print(OUT)
