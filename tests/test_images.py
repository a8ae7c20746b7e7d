"""Tests for originality.images: every bad input is built programmatically in tmp_path."""

from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, features

from originality import images
from originality.images import ImageInputError, load_image, prepare_image

# ---------------------------------------------------------------------------- helpers


def _png_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def _noise(size=(128, 128), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height (1-bit grey) with a tiny IDAT.

    Costs a few bytes to build; decoding it would need width*height pixels of memory.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


@pytest.fixture
def no_decode(monkeypatch):
    """Make any pixel decoding fail loudly, to prove a refusal happened before it."""

    def boom(self, *a, **k):
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", boom)


def _px(img: Image.Image, xy) -> tuple[int, int, int]:
    return tuple(img.getpixel(xy))


# ----------------------------------------------------------------------- bad sources


def test_missing_path(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(ImageInputError, match="file not found: .*nope.png"):
        load_image(missing)
    with pytest.raises(ImageInputError, match="file not found"):
        load_image(str(missing))


def test_empty_path_string():
    with pytest.raises(ImageInputError, match="no file path was given"):
        load_image("")


def test_url_gets_a_hint():
    with pytest.raises(ImageInputError, match="file not found.*URLs are not supported"):
        load_image("https://example.com/cat.png")


def test_directory(tmp_path):
    with pytest.raises(ImageInputError, match="is a directory, not an image file"):
        load_image(tmp_path)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    with pytest.raises(ImageInputError, match="the file is empty"):
        load_image(p)


def test_empty_bytes_and_file_object():
    with pytest.raises(ImageInputError, match="the file is empty"):
        load_image(b"")
    with pytest.raises(ImageInputError, match="the file is empty"):
        load_image(io.BytesIO(b""))


def test_file_too_large(tmp_path, monkeypatch):
    data = _png_bytes(_noise())
    p = tmp_path / "big.png"
    p.write_bytes(data)
    monkeypatch.setattr(images, "MAX_FILE_BYTES", len(data) - 1)
    for src in (p, data, io.BytesIO(data)):
        with pytest.raises(ImageInputError, match="the file is too large.*limit|too large.*more than"):
            load_image(src)


def test_default_limits():
    assert images.MAX_PIXELS == 64_000_000
    assert images.MIN_SIDE == 64
    assert images.MAX_FILE_BYTES == 50 * 2**20


def test_text_file_is_not_an_image(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello, this is not an image\n" * 10)
    with pytest.raises(ImageInputError, match=r"not an image Pillow can read.*PNG, JPEG, WebP") as ei:
        load_image(p)
    assert ei.value.__cause__ is not None


def test_pdf_is_not_an_image(tmp_path):
    p = tmp_path / "doc.pdf"
    p.write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer\n%%EOF\n")
    with pytest.raises(ImageInputError, match=r"not an image Pillow can read.*PDF.*PNG, JPEG, WebP"):
        load_image(p)


def test_heic_gets_a_specific_hint():
    data = struct.pack(">I", 24) + b"ftypheic" + b"\x00" * 40
    with pytest.raises(ImageInputError, match="not an image Pillow can read.*HEIC"):
        load_image(data)


def test_truncated_png(tmp_path):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    data = _png_bytes(_noise())
    p = tmp_path / "half.png"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageInputError, match="truncated or corrupt") as ei:
        load_image(p)
    assert ei.value.__cause__ is not None
    with pytest.raises(ImageInputError, match="truncated or corrupt"):
        load_image(data[: len(data) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_jpeg(tmp_path):
    buf = io.BytesIO()
    _noise().save(buf, format="JPEG", quality=95)
    data = buf.getvalue()
    p = tmp_path / "half.jpg"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageInputError, match="truncated or corrupt"):
        load_image(p)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_png_with_broken_header_is_called_corrupt():
    data = _png_bytes(_noise())
    with pytest.raises(ImageInputError, match="truncated or corrupt"):
        load_image(data[:20])  # signature + part of IHDR
    with pytest.raises(ImageInputError, match="truncated or corrupt.*starts like a PNG"):
        load_image(data[:8] + b"\x00" * 30)  # signature, then garbage


def test_bomb_header_refused_before_decoding(tmp_path, no_decode):
    # 9000x9000 = 81 M pixels > MAX_PIXELS (64 M) but < Pillow's own warning threshold,
    # so it is our header check that refuses it.
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_header_only(9000, 9000))
    before = Image.MAX_IMAGE_PIXELS
    t0 = time.perf_counter()
    with pytest.raises(ImageInputError, match=r"too large: 9000x9000 .*limit of 64,000,000 pixels"):
        load_image(p)
    assert time.perf_counter() - t0 < 1.0
    assert Image.MAX_IMAGE_PIXELS == before


def test_bomb_respects_monkeypatched_limit(monkeypatch, no_decode):
    monkeypatch.setattr(images, "MAX_PIXELS", 100 * 100)
    with pytest.raises(ImageInputError, match="too large: 101x100"):
        load_image(_png_header_only(101, 100))


def test_pillow_bomb_warning_becomes_error(monkeypatch, no_decode):
    # Above Image.MAX_IMAGE_PIXELS (warning) with our own limit disabled.
    monkeypatch.setattr(images, "MAX_PIXELS", 10**12)
    side = int((Image.MAX_IMAGE_PIXELS * 1.5) ** 0.5)
    with pytest.raises(ImageInputError, match="decompression bomb"):
        load_image(_png_header_only(side, side))


def test_pillow_bomb_error_is_translated(monkeypatch, no_decode):
    monkeypatch.setattr(images, "MAX_PIXELS", 10**12)
    side = int((Image.MAX_IMAGE_PIXELS * 3) ** 0.5)  # above 2x MAX_IMAGE_PIXELS: error
    with pytest.raises(ImageInputError, match="decompression bomb") as ei:
        load_image(_png_header_only(side, side))
    assert isinstance(ei.value.__cause__, Image.DecompressionBombError)


def test_tiny_image(tmp_path):
    p = _save(Image.new("RGB", (100, 32), "red"), tmp_path / "tiny.png")
    with pytest.raises(ImageInputError, match=r"too small: 100x32 pixels.*at least 64"):
        load_image(p)
    with pytest.raises(ImageInputError, match=r"too small: 10x70"):
        load_image(np.zeros((70, 10, 3), np.uint8))
    assert load_image(Image.new("RGB", (64, 64))).size == (64, 64)


def _frames(n=3):
    colours = ["red", "green", "blue", "white", "black"]
    return [Image.new("RGB", (80, 80), colours[i]) for i in range(n)]


def test_animated_gif(tmp_path):
    f = _frames(3)
    p = _save(f[0], tmp_path / "anim.gif", save_all=True, append_images=f[1:], duration=100)
    with pytest.raises(ImageInputError, match="animated image with 3 frames; upload a single still image"):
        load_image(p)


def test_animated_png(tmp_path):
    f = _frames(2)
    p = _save(f[0], tmp_path / "anim.png", save_all=True, append_images=f[1:], duration=100)
    with pytest.raises(ImageInputError, match="animated image with 2 frames"):
        load_image(p)


@pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP")
def test_animated_webp(tmp_path):
    f = _frames(2)
    p = _save(f[0], tmp_path / "anim.webp", save_all=True, append_images=f[1:], duration=100)
    with pytest.raises(ImageInputError, match="animated image with 2 frames"):
        load_image(p)


def test_single_frame_gif_is_fine(tmp_path):
    p = _save(Image.new("RGB", (80, 80), "blue"), tmp_path / "still.gif")
    img = load_image(p)
    assert img.mode == "RGB" and _px(img, (5, 5)) == (0, 0, 255)


def test_multipage_tiff_refused(tmp_path):
    f = _frames(2)
    p = _save(f[0], tmp_path / "pages.tiff", save_all=True, append_images=f[1:])
    with pytest.raises(ImageInputError, match="multi-page image with 2 pages"):
        load_image(p)


def test_mpo_camera_file_uses_primary_frame(tmp_path):
    f = _frames(2)
    p = tmp_path / "camera.mpo"
    try:
        f[0].save(p, format="MPO", save_all=True, append_images=f[1:])
    except (KeyError, OSError, ValueError):
        pytest.skip("this Pillow cannot write MPO")
    img = load_image(p)
    r, g, b = _px(img, (40, 40))
    assert r > 200 and g < 60 and b < 60


def test_other_types_refused():
    with pytest.raises(ImageInputError, match="type int"):
        load_image(123)
    with pytest.raises(ImageInputError, match="type NoneType"):
        load_image(None)
    with pytest.raises(ImageInputError, match="type list"):
        load_image([[0, 0], [0, 0]])


def test_text_mode_file_object_refused(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("abc")
    with open(p) as fh, pytest.raises(ImageInputError, match="text mode.*'rb'"):
        load_image(fh)


# --------------------------------------------------------------------- numpy arrays


def test_numpy_uint8_arrays():
    grey = np.full((70, 90), 128, np.uint8)
    img = load_image(grey)
    assert img.mode == "RGB" and img.size == (90, 70) and _px(img, (0, 0)) == (128, 128, 128)

    rgb = np.zeros((70, 90, 3), np.uint8)
    rgb[..., 1] = 200
    assert _px(load_image(rgb), (10, 10)) == (0, 200, 0)

    rgba = np.zeros((70, 90, 4), np.uint8)  # fully transparent black
    assert _px(load_image(rgba), (10, 10)) == (255, 255, 255)

    assert load_image(rgb[:, ::-1]).size == (90, 70)  # non-contiguous view


def test_numpy_float_in_unit_range_scaled():
    arr = np.full((64, 64, 3), 0.5, np.float32)
    assert _px(load_image(arr), (0, 0)) == (128, 128, 128)


@pytest.mark.parametrize(
    "arr, pattern",
    [
        (np.zeros((64, 64, 3), np.int16), "unsupported array dtype int16"),
        (np.zeros((64, 64, 3), np.uint16), "unsupported array dtype uint16"),
        (np.zeros((64, 64, 2), np.uint8), "unsupported array shape 64x64x2"),
        (np.zeros((3, 64, 64), np.uint8), "unsupported array shape 3x64x64"),
        (np.zeros(4096, np.uint8), "unsupported array shape 4096"),
        (np.full((64, 64, 3), 2.0), r"float image array must hold finite values in \[0, 1\]"),
        (np.full((64, 64), np.nan, np.float32), r"finite values in \[0, 1\]"),
    ],
)
def test_numpy_bad_arrays(arr, pattern):
    with pytest.raises(ImageInputError, match=pattern):
        load_image(arr)


# ---------------------------------------------------------------- normalisation


def test_rgba_transparent_pixel_becomes_white(tmp_path):
    im = Image.new("RGBA", (80, 80), (255, 0, 0, 255))
    im.putpixel((0, 0), (0, 0, 0, 0))  # transparent black
    im.putpixel((1, 0), (0, 0, 0, 128))  # half-transparent black
    img = load_image(_save(im, tmp_path / "a.png"))
    assert img.mode == "RGB"
    assert _px(img, (0, 0)) == (255, 255, 255)
    assert all(120 <= c <= 135 for c in _px(img, (1, 0)))
    assert _px(img, (5, 5)) == (255, 0, 0)


def test_la_composited_on_white(tmp_path):
    im = Image.new("LA", (80, 80), (0, 0))
    img = load_image(_save(im, tmp_path / "la.png"))
    assert _px(img, (3, 3)) == (255, 255, 255)


def test_palette_with_and_without_transparency(tmp_path):
    base = Image.new("RGB", (80, 80), (0, 0, 255))
    base.paste((0, 0, 0), (0, 0, 40, 80))
    p_img = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    black_index = p_img.getpixel((0, 0))

    plain = load_image(_save(p_img, tmp_path / "p.png"))
    assert plain.mode == "RGB"
    assert _px(plain, (0, 0)) == (0, 0, 0) and _px(plain, (70, 0)) == (0, 0, 255)

    trans = load_image(_save(p_img, tmp_path / "pt.png", transparency=black_index))
    assert _px(trans, (0, 0)) == (255, 255, 255)  # transparent -> white, not black
    assert _px(trans, (70, 0)) == (0, 0, 255)

    gif = load_image(_save(p_img, tmp_path / "pt.gif", transparency=black_index))
    assert _px(gif, (0, 0)) == (255, 255, 255)


def test_cmyk_converted(tmp_path):
    im = Image.new("CMYK", (80, 80), (0, 255, 255, 0))  # pure red in CMYK
    assert _px(load_image(im), (0, 0)) == (255, 0, 0)
    img = load_image(_save(im, tmp_path / "cmyk.jpg", quality=95))
    r, g, b = _px(img, (40, 40))
    assert img.mode == "RGB" and r > 230 and g < 30 and b < 30


def test_16bit_gradient_keeps_gradient(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (80, 1))
    im = Image.fromarray(ramp)
    assert im.mode.startswith("I;16")
    img = load_image(_save(im, tmp_path / "g16.png"))
    arr = np.asarray(img)
    assert img.mode == "RGB"
    assert arr[..., 0].min() <= 2 and arr[..., 0].max() >= 253
    assert arr[0, 0, 0] < 5 and arr[0, -1, 0] > 250
    assert 120 <= arr[0, 128, 0] <= 135  # mid-grey, not clipped to white
    assert np.all(np.diff(arr[0, :, 0].astype(int)) >= 0)  # monotone


def test_32bit_int_and_float_modes():
    ramp = np.tile(np.linspace(0, 65535, 128), (70, 1))
    i_img = load_image(Image.fromarray(ramp.astype(np.int32)))
    assert i_img.getpixel((0, 0))[0] < 5 and i_img.getpixel((127, 0))[0] > 250
    assert 115 <= i_img.getpixel((64, 0))[0] <= 140

    f_img = load_image(Image.fromarray((ramp / 65535).astype(np.float32)))
    assert f_img.mode == "RGB"
    assert f_img.getpixel((0, 0))[0] < 5 and f_img.getpixel((127, 0))[0] > 250
    assert 115 <= f_img.getpixel((64, 0))[0] <= 140

    wide = load_image(Image.fromarray((ramp * 10 - 1000).astype(np.float32)))  # stretched
    assert wide.getpixel((0, 0))[0] == 0 and wide.getpixel((127, 0))[0] == 255


def test_l_and_1_modes(tmp_path):
    assert _px(load_image(Image.new("L", (64, 64), 77)), (0, 0)) == (77, 77, 77)
    one = load_image(_save(Image.new("1", (64, 64), 1), tmp_path / "one.png"))
    assert one.mode == "RGB" and _px(one, (0, 0)) == (255, 255, 255)


def test_exif_orientation_applied(tmp_path):
    im = Image.new("RGB", (128, 64), (255, 0, 0))
    im.paste((0, 0, 255), (64, 0, 128, 64))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    p = _save(im, tmp_path / "rot.jpg", exif=exif, quality=95)
    img = load_image(p)
    assert img.size == (64, 128)
    top, bottom = _px(img, (32, 10)), _px(img, (32, 118))
    assert top[0] > 200 and top[2] < 60  # left (red) is now on top
    assert bottom[2] > 200 and bottom[0] < 60
    assert img.getexif().get(0x0112, 1) == 1


# ------------------------------------------------------------------ sources & output


def test_bytes_file_object_path_and_pil_sources(tmp_path):
    im = Image.new("RGB", (80, 70), (10, 20, 30))
    data = _png_bytes(im)
    p = tmp_path / "ok.png"
    p.write_bytes(data)
    with open(p, "rb") as fh:
        from_fh = load_image(fh)
    for img in (
        load_image(data),
        load_image(bytearray(data)),
        load_image(io.BytesIO(data)),
        from_fh,
        load_image(p),
        load_image(str(p)),
        load_image(im),
    ):
        assert img.mode == "RGB" and img.size == (80, 70)
        assert _px(img, (5, 5)) == (10, 20, 30)


def test_result_is_detached_and_input_untouched(tmp_path):
    p = _save(Image.new("RGBA", (80, 80), (0, 0, 0, 0)), tmp_path / "x.png")
    img = load_image(p)
    assert getattr(img, "fp", None) is None
    p.unlink()
    assert _px(img, (1, 1)) == (255, 255, 255)  # pixels still available

    src = Image.new("RGBA", (80, 80), (0, 0, 0, 0))
    out = load_image(src)
    assert out is not src and src.mode == "RGBA" and src.getpixel((0, 0)) == (0, 0, 0, 0)

    rgb = Image.new("RGB", (80, 80))
    assert load_image(rgb) is not rgb


def test_not_resized():
    assert load_image(Image.new("RGB", (640, 480))).size == (640, 480)


def test_prepare_image_centre_crops_wide_image():
    w, h = 300, 100
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:, :100, 0] = 255  # red left third
    arr[:, 100:200, 1] = 255  # green middle
    arr[:, 200:, 2] = 255  # blue right third
    out = prepare_image(arr, 64)
    assert out.mode == "RGB" and out.size == (64, 64)
    a = np.asarray(out).astype(int)
    assert tuple(a[32, 32]) == (0, 255, 0)
    for y, x in [(0, 0), (0, 63), (63, 0), (63, 63)]:
        r, g, b = a[y, x]
        assert g > 180 and r < 80 and b < 80, (y, x, a[y, x])
    inner = a[:, 4:-4]
    assert inner[..., 1].min() > 240 and inner[..., 0].max() < 15 and inner[..., 2].max() < 15


def test_centre_square_is_the_part_prepare_image_keeps_and_the_note_says_so():
    arr = np.zeros((100, 300, 3), np.uint8)
    arr[:, 100:200] = (0, 255, 0)
    wide = Image.fromarray(arr)
    square = images.centre_square(wide)
    assert square.size == (100, 100) and np.asarray(square).reshape(-1, 3).tolist().count([0, 255, 0]) == 100 * 100
    tall = Image.new("RGB", (101, 250))
    assert images.centre_square(tall).size == (101, 101)
    already = Image.new("RGB", (80, 80))
    assert images.centre_square(already) is already
    assert images.crop_note((80, 80)) is None
    note = images.crop_note((300, 100))
    assert "300x100" in note and "centre square (100x100 px)" in note


def test_prepare_image_tall_image_and_upscale(tmp_path):
    arr = np.zeros((300, 100, 3), np.uint8)
    arr[:100] = (255, 0, 0)
    arr[100:200] = (0, 255, 0)
    arr[200:] = (0, 0, 255)
    p = _save(Image.fromarray(arr), tmp_path / "tall.png")
    out = prepare_image(p, 224)
    assert out.size == (224, 224) and out.mode == "RGB"
    assert _px(out, (112, 112)) == (0, 255, 0)

    small = prepare_image(Image.new("RGB", (64, 64), (1, 2, 3)), 512)
    assert small.size == (512, 512) and _px(small, (256, 256)) == (1, 2, 3)


def test_prepare_image_bad_resolution():
    im = Image.new("RGB", (64, 64))
    with pytest.raises(ValueError):
        prepare_image(im, 0)
    with pytest.raises(TypeError):
        prepare_image(im, 224.0)


def test_prepare_image_propagates_input_errors():
    with pytest.raises(ImageInputError, match="the file is empty"):
        prepare_image(b"", 224)


def test_a_folder_lists_its_images_and_not_the_files_macos_leaves_beside_them(tmp_path):
    for name in ("b.PNG", "a.jpg"):
        Image.new("RGB", (64, 64), "white").save(tmp_path / name, format="PNG" if name.endswith("PNG") else "JPEG")
    (tmp_path / "._a.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # resource fork, not an image
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "c.png").mkdir()
    assert [p.name for p in images.list_images(tmp_path)] == ["a.jpg", "b.PNG"]
