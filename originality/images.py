"""Loading and normalising user-supplied images.

Everything a user can upload goes through :func:`load_image`, which either returns a
fresh 8-bit RGB ``PIL.Image.Image`` (EXIF orientation applied, not resized) or raises
:class:`ImageInputError` whose message can be shown to the user verbatim: it says what
is wrong with the file and what to do about it.  No Pillow/OS exception escapes; the
original error is kept as ``__cause__``.

Safety notes
------------
* Decompression bombs: the declared size is read from the header (``Image.open`` is
  lazy) and checked against :data:`MAX_PIXELS` before any pixel data is decoded.
  Pillow's own ``DecompressionBombWarning`` / ``DecompressionBombError`` are caught as
  well.  ``Image.MAX_IMAGE_PIXELS`` is never changed.
* Truncated files are detected by calling ``img.load()`` inside the ``try``.  This
  module never sets ``ImageFile.LOAD_TRUNCATED_IMAGES``; note that if the host
  application sets it to True globally, Pillow will silently pad truncated images and
  they cannot be detected here.
* The limits below are module globals read at call time, so they can be adjusted
  (e.g. monkeypatched in tests) without touching Pillow's globals.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "ImageInputError",
    "MAX_PIXELS",
    "MIN_SIDE",
    "MAX_FILE_BYTES",
    "IMAGE_EXTENSIONS",
    "check_file_size",
    "is_hidden",
    "list_images",
    "load_image",
    "centre_square",
    "crop_note",
    "prepare_image",
]

MAX_PIXELS = 64_000_000  # refuse images with more pixels than this (decompression bombs)
MIN_SIDE = 64  # refuse images whose shorter side is below this
MAX_FILE_BYTES = 50 * 2**20  # refuse files larger than this

SUPPORTED_FORMATS = "PNG, JPEG, WebP, GIF, BMP, TIFF"
# File names taken as images when a folder is given (the CLI's batch, --reference FOLDER).
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})

# Modes that carry an alpha channel; they are composited on white.
_ALPHA_MODES = {"LA", "La", "PA", "RGBA", "RGBa"}
# Multi-frame formats whose extra frames are not an animation: MPO is what many
# cameras/phones write (primary photo + preview/depth frames); we use the first frame.
_FIRST_FRAME_FORMATS = {"MPO"}
_PAGED_FORMATS = {"TIFF"}


class ImageInputError(ValueError):
    """The supplied image cannot be used; the message is meant for end users."""


# --------------------------------------------------------------------------- helpers


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _too_large_file(n_bytes: int, where: str, limit: int | None = None) -> ImageInputError:
    return ImageInputError(
        f"the file is too large ({_mib(n_bytes)}{where}; the limit is "
        f"{_mib(MAX_FILE_BYTES if limit is None else limit)}); upload a smaller or more compressed image "
        f"(e.g. a JPEG or WebP export)"
    )


def _empty_file(where: str) -> ImageInputError:
    return ImageInputError(f"the file is empty (0 bytes){where}; upload a non-empty image file")


def _sniff(head: bytes) -> tuple[str | None, str | None]:
    """(image format Pillow should read, non-image/unsupported kind) guessed from magic bytes."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG", None
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG", None
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF", None
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WebP", None
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF", None
    if head.startswith(b"BM"):
        return "BMP", None
    if head.startswith(b"%PDF"):
        return None, "it looks like a PDF document; export the page as a PNG or JPEG"
    stripped = head.lstrip()
    if stripped[:5].lower() == b"<?xml" or stripped[:4].lower() == b"<svg":
        return None, "it looks like an SVG/XML file; rasterise it to a PNG first"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"):
            return None, "HEIC/HEIF photos are not supported; convert it to JPEG or PNG"
        if brand in (b"avif", b"avis"):
            return "AVIF", None
        return None, "it looks like a video/ISO media file; upload a still image"
    return None, None


def _not_an_image(where: str, head: bytes, err: BaseException) -> ImageInputError:
    fmt, hint = _sniff(head)
    if fmt is not None:
        # The magic bytes say "image" but Pillow could not parse the header.
        return ImageInputError(
            f"the image data is truncated or corrupt{where}: it starts like a {fmt} file "
            f"but its header could not be read; re-export or re-upload the image"
        )
    msg = f"not an image Pillow can read{where}"
    if hint:
        msg += f" ({hint})"
    return ImageInputError(
        f"{msg}; supported formats include {SUPPORTED_FORMATS} - convert the file to one "
        f"of these and upload it again"
    )


def _bomb_error(where: str, size: tuple[int, int] | None = None) -> ImageInputError:
    dims = f" ({size[0]}x{size[1]})" if size else ""
    return ImageInputError(
        f"the image declares an implausibly large size{dims}{where} and was refused as a "
        f"possible decompression bomb (limit {MAX_PIXELS:,} pixels); downscale the image "
        f"and upload it again"
    )


def _check_size(width: int, height: int, where: str) -> None:
    """Refuse too many pixels or a too-short side; needs only the header."""
    n = int(width) * int(height)
    if n > MAX_PIXELS:
        raise ImageInputError(
            f"the image is too large: {width}x{height} = {n:,} pixels{where}, more than "
            f"the limit of {MAX_PIXELS:,} pixels (possible decompression bomb); downscale "
            f"it and upload it again"
        )
    if min(width, height) < MIN_SIDE:
        raise ImageInputError(
            f"the image is too small: {width}x{height} pixels{where}; its shorter side must "
            f"be at least {MIN_SIDE} pixels - upload a larger image"
        )


def _check_frames(img: Image.Image) -> None:
    n = int(getattr(img, "n_frames", 1) or 1)
    if n <= 1 or (img.format or "").upper() in _FIRST_FRAME_FORMATS:
        return
    if (img.format or "").upper() in _PAGED_FORMATS:
        raise ImageInputError(
            f"multi-page image with {n} pages; upload a single still image"
        )
    raise ImageInputError(f"animated image with {n} frames; upload a single still image")


def _exif_transpose(img: Image.Image) -> Image.Image:
    """Apply EXIF orientation; a broken EXIF block is ignored rather than fatal."""
    try:
        out = ImageOps.exif_transpose(img)
    except Exception:  # malformed EXIF must not make an otherwise good image unusable
        return img.copy()
    return out if out is not None else img.copy()


def _on_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Scale high-bit-depth greyscale values to 0..255."""
    a = values.astype(np.float64)
    if mode.startswith("I;16"):
        scaled = a / 257.0  # full 16-bit range
    else:
        finite = a[np.isfinite(a)]
        if finite.size == 0:
            return np.zeros(a.shape, dtype=np.uint8)
        lo, hi = float(finite.min()), float(finite.max())
        a = np.nan_to_num(a, nan=lo, posinf=hi, neginf=lo)
        if mode == "F" and lo >= 0.0 and hi <= 1.0:
            scaled = a * 255.0  # float image in [0, 1]
        elif mode == "F" and lo >= 0.0 and hi <= 255.0:
            scaled = a  # float image already in 8-bit range
        elif mode != "F" and lo >= 0 and hi <= 65535:
            scaled = a / 257.0  # 32-bit int container holding 16-bit data (e.g. old PNG 'I')
        elif hi > lo:
            scaled = (a - lo) * (255.0 / (hi - lo))  # arbitrary range: stretch
        else:
            scaled = np.zeros_like(a)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _normalise(img: Image.Image) -> Image.Image:
    """Return a new 8-bit RGB image; alpha is composited on white."""
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img.copy()
    if mode in _ALPHA_MODES or (
        mode in ("P", "L", "RGB", "1") and "transparency" in img.info
    ):
        return _on_white(img.convert("RGBA"))
    if mode == "P":
        # A palette may itself carry alpha (e.g. RGBA palettes).
        if img.palette is not None and img.palette.mode == "RGBA":
            return _on_white(img.convert("RGBA"))
        return img.convert("RGB")
    if mode.startswith("I") or mode == "F":
        try:
            values = np.asarray(img)
        except Exception:
            values = np.asarray(img.convert("I"))
        if values.ndim != 2:
            raise ImageInputError(
                f"unsupported image mode {mode!r}; convert the image to 8-bit RGB and upload it again"
            )
        return Image.fromarray(_to_uint8(values, mode), mode="L").convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, HSV, ...


def _finish(img: Image.Image, where: str) -> Image.Image:
    """Size/frame checks, decode, orientation and mode normalisation of an opened image.

    Must run inside the caller's try/except so decode errors are translated.
    """
    width, height = img.size  # from the header; no pixels decoded yet
    _check_size(width, height, where)
    _check_frames(img)
    img.load()  # decode now, inside the try: truncated/corrupt data fails here
    out = _normalise(_exif_transpose(img))
    out.load()
    return out


def _decode(opener: Any, where: str, head: bytes) -> Image.Image:
    """Open (lazily), check, decode and normalise; translate every failure."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(opener) as img:
                return _finish(img, where)
        except ImageInputError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise _bomb_error(where) from err
        except UnidentifiedImageError as err:
            raise _not_an_image(where, head, err) from err
        except MemoryError:
            raise
        except Exception as err:  # OSError, SyntaxError, EOFError, struct.error, zlib.error...
            detail = str(err).strip() or type(err).__name__
            raise ImageInputError(
                f"the image data is truncated or corrupt{where} ({detail}); re-export or "
                f"re-upload the file"
            ) from err


# ----------------------------------------------------------------------- per source


def _from_path(source: str | os.PathLike) -> Image.Image:
    try:
        shown = os.fspath(source)
        if isinstance(shown, bytes):
            shown = os.fsdecode(shown)
        if not shown.strip():
            raise ImageInputError("no file path was given (empty string); pass the path of an image file")
        path = Path(shown)
        where = f" ({shown})"
        if not path.exists():
            hint = ""
            if shown.startswith(("http://", "https://")):
                hint = "; URLs are not supported, download the image first"
            raise ImageInputError(f"file not found: {shown}{hint}. Check the path and try again")
        if path.is_dir():
            raise ImageInputError(
                f"{shown} is a directory, not an image file; pass the path of a single image"
            )
        size = path.stat().st_size
    except ImageInputError:
        raise
    except (OSError, ValueError, TypeError) as err:  # bad characters, permissions, too long
        raise ImageInputError(f"cannot access the file {source!r} ({err}); check the path") from err
    if size == 0:
        raise _empty_file(where)
    if size > MAX_FILE_BYTES:
        raise _too_large_file(size, where)
    try:
        with open(path, "rb") as fh:
            head = fh.read(32)
            fh.seek(0)
            return _decode(fh, where, head)
    except ImageInputError:
        raise
    except OSError as err:  # permission denied, I/O error while opening/reading
        raise ImageInputError(f"cannot read the file {shown} ({err}); check its permissions") from err


def check_file_size(source: Any, max_bytes: int) -> None:
    """Refuse a file path or bytes larger than `max_bytes` (a server's own upload limit, below
    MAX_FILE_BYTES) with the same message `load_image` gives; other sources pass."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        size, where = len(source), ""
    elif isinstance(source, (str, os.PathLike)) and os.path.isfile(source):
        size, where = os.path.getsize(source), ""
    else:
        return
    if size > max_bytes:
        raise _too_large_file(size, where, max_bytes)


def _from_bytes(data: bytes | bytearray | memoryview, where: str = "") -> Image.Image:
    data = bytes(data)
    if len(data) == 0:
        raise _empty_file(where)
    if len(data) > MAX_FILE_BYTES:
        raise _too_large_file(len(data), where)
    return _decode(io.BytesIO(data), where, data[:32])


def _from_file_object(fh: Any) -> Image.Image:
    name = getattr(fh, "name", None)
    where = f" ({name})" if isinstance(name, str) and name else ""
    try:
        data = fh.read(MAX_FILE_BYTES + 1)
    except Exception as err:
        raise ImageInputError(
            f"cannot read from the uploaded file object{where} ({err}); pass a readable "
            f"binary file (open it with 'rb')"
        ) from err
    if isinstance(data, str):
        raise ImageInputError(
            f"the file object{where} was opened in text mode; open it in binary mode ('rb')"
        )
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageInputError(
            f"reading the file object{where} returned {type(data).__name__}, not bytes; "
            f"pass a binary file object"
        )
    if len(data) > MAX_FILE_BYTES:
        raise ImageInputError(
            f"the file is too large (more than {_mib(MAX_FILE_BYTES)}{where}); upload a smaller "
            f"or more compressed image (e.g. a JPEG or WebP export)"
        )
    return _from_bytes(data, where)


def _from_pil(img: Image.Image) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return _finish(img, "")
        except ImageInputError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise _bomb_error("", img.size) from err
        except MemoryError:
            raise
        except Exception as err:
            detail = str(err).strip() or type(err).__name__
            raise ImageInputError(
                f"the image could not be decoded ({detail}); it may be truncated, corrupt or "
                f"already closed - reload the file and try again"
            ) from err


def _from_array(arr: np.ndarray) -> Image.Image:
    shape = "x".join(str(s) for s in arr.shape)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise ImageInputError(
            f"unsupported array shape {shape}; expected HxW (greyscale), HxWx3 (RGB) or "
            f"HxWx4 (RGBA)"
        )
    height, width = arr.shape[:2]
    _check_size(width, height, "")
    if arr.dtype == np.uint8:
        data = arr
    elif np.issubdtype(arr.dtype, np.floating):
        finite = np.isfinite(arr)
        if not finite.all() or arr.min() < 0.0 or arr.max() > 1.0:
            raise ImageInputError(
                f"float image array must hold finite values in [0, 1] (got dtype {arr.dtype}"
                + (f", range {float(np.nanmin(arr)):.3g}..{float(np.nanmax(arr)):.3g}" if finite.any() else "")
                + "); scale it to [0, 1] or convert it to uint8"
            )
        data = np.rint(arr.astype(np.float64) * 255.0).astype(np.uint8)
    else:
        raise ImageInputError(
            f"unsupported array dtype {arr.dtype}; pass a uint8 array (0..255) or a float "
            f"array in [0, 1]"
        )
    data = np.ascontiguousarray(data)
    img = Image.fromarray(data)  # uint8: HxW -> L, HxWx3 -> RGB, HxWx4 -> RGBA
    return _normalise(img)


# --------------------------------------------------------------------------- public


def load_image(source: Any) -> Image.Image:
    """Load an image from a user-supplied source and return it as 8-bit RGB.

    source: a path (``str`` / ``os.PathLike``), ``bytes``, a binary file object, a
    ``PIL.Image.Image`` or an HxW / HxWx3 / HxWx4 ``uint8`` numpy array (float arrays
    in [0, 1] are scaled to 0..255).

    Returns a new RGB image, detached from any file, with EXIF orientation applied and
    transparency composited on white; it is not resized.  Raises
    :class:`ImageInputError` with a user-facing message for anything unusable.
    """
    if isinstance(source, Image.Image):
        return _from_pil(source)
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _from_bytes(source)
    if isinstance(source, (str, os.PathLike)):
        return _from_path(source)
    if hasattr(source, "read") and callable(source.read):
        return _from_file_object(source)
    raise ImageInputError(
        f"cannot load an image from an object of type {type(source).__name__}; pass a file "
        f"path, bytes, a binary file object, a PIL image or a uint8 numpy array"
    )


def _centre_box(size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the centred square of side min(width, height) in an image of `size`."""
    width, height = size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def centre_square(img: Image.Image) -> Image.Image:
    """The part of `img` an analysis sees (:func:`prepare_image`, before resizing): its centred square of side
    min(width, height); `img` itself when it is square."""
    return img if img.width == img.height else img.crop(_centre_box(img.size))


def crop_note(size: tuple[int, int]) -> str | None:
    """A sentence for the user when an image of `size` (width, height) is not square, so that an analysis sees only
    its centre square; None when it is square."""
    width, height = size
    if width == height:
        return None
    side = min(width, height)
    return (f"The image is {width}x{height} px; only its centre square ({side}x{side} px) was analysed, as models of "
            "this kind are trained on square images: crop it yourself to choose another part.")


def prepare_image(source: Any, resolution: int) -> Image.Image:
    """:func:`load_image`, then centre-crop to a square (:func:`centre_square`) and resize (Lanczos) to
    ``resolution`` x ``resolution``."""
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)):
        raise TypeError(f"resolution must be an int, got {type(resolution).__name__}")
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    img = load_image(source)
    return img.resize(
        (int(resolution), int(resolution)),
        Image.Resampling.LANCZOS,
        box=_centre_box(img.size),
        reducing_gap=3.0,
    )


def is_hidden(name: str) -> bool:
    """Whether a file or folder named `name` is one a folder's listing passes over: a hidden one (macOS leaves
    `._name.png` beside each file it copies to another disk, which holds no image) or a zip's `__MACOSX`."""
    return name.startswith((".", "__MACOSX"))


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder` (by extension, `IMAGE_EXTENSIONS`; not `is_hidden`), sorted by name."""
    return sorted((p for p in Path(folder).iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not is_hidden(p.name)),
                  key=lambda p: p.name)
