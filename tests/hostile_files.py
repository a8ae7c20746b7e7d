"""Files a hostile (or unlucky) visitor uploads: bad ones with the message each must get, and odd but valid
ones whose query must equal the CLI's (load_image + prepare_image) pixel for pixel."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "assets" / "examples" / "shapes_common.png"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(side: int = 30000) -> bytes:
    """A real side x side one-bit PNG (all black): about 110 kB on disk, 900 million pixels once decoded."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    z = zlib.compressobj(9)
    data = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, a piece of the message it must get)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "empty": (b"", "file is empty (0 bytes)"),
        "text": (b"this is not an image, just text\n", "ot an image Pillow can read"),
        "truncated": (EXAMPLE.read_bytes()[:8], "truncated or corrupt"),
        "bomb": (bomb_png(), "decompression bomb"),
    }
    out = {}
    for name, (data, message) in files.items():
        path = folder / f"{name}.png"
        path.write_bytes(data)
        out[name] = (path, message)
    return out


def odd_files(folder: Path) -> dict[str, Path]:
    """RGBA, LA, palette with transparency, 16-bit, CMYK JPEG and an EXIF-rotated JPEG, all shapes-like."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = Image.open(EXAMPLE).convert("RGB").resize((96, 80))
    a = np.asarray(rgb)
    background = (a > 235).all(axis=2)
    rgba = np.dstack([a, np.where(background, 0, 255).astype(np.uint8)])
    rgba[background, :3] = 0  # black under the transparent pixels: composited on black, it would show
    out = {}
    Image.fromarray(rgba, "RGBA").save(out.setdefault("rgba", folder / "rgba.png"))
    grey = np.asarray(rgb.convert("L"))
    Image.fromarray(np.dstack([np.where(background, 0, grey), rgba[..., 3]]).astype(np.uint8), "LA").save(
        out.setdefault("la", folder / "la.png"))
    pal = rgb.quantize(colors=16)
    index = int(np.asarray(pal)[0, 0])  # the background's palette entry becomes transparent
    pal.save(out.setdefault("palette", folder / "palette.png"), transparency=index)
    Image.fromarray((grey.astype(np.uint16) * 257), "I;16").save(out.setdefault("16bit", folder / "16bit.png"))
    rgb.convert("CMYK").save(out.setdefault("cmyk", folder / "cmyk.jpg"), quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    rgb.rotate(90, expand=True).save(out.setdefault("exif", folder / "exif.jpg"), quality=95, exif=exif)
    return out
