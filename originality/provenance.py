"""Content hashes of what an analysis starts from (a leaf module: it imports no other part of the engine).

- `input_sha256`: the image source as the user gave it (a file, bytes, a file object; none for an
  in-memory image)
- `pixels_sha256`: the normalised query's RGB bytes (the same in memory and read back from query.png)
- `folder_sha256`: a local model folder's content (every file's hash, in sorted order)

The reproducibility record (`originality.record`) and `python -m originality reproduce` use them.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

_CHUNK = 1 << 20


def input_sha256(source: Any) -> dict[str, Any]:
    """{"sha256", "bytes", "kind"} of the image source as given to the analysis.

    A path is hashed from its file, bytes as they are, a seekable file object from its
    start (its position is restored); an in-memory image (PIL, numpy) has no file: sha256 None.
    """
    if isinstance(source, (str, os.PathLike)):
        digest, size = hashlib.sha256(), 0
        with open(source, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
        return {"kind": "file", "name": Path(source).name, "sha256": digest.hexdigest(), "bytes": size}
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return {"kind": "bytes", "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    if hasattr(source, "read") and hasattr(source, "seek") and hasattr(source, "tell"):
        try:
            where = source.tell()
            source.seek(0)
            data = source.read()
            source.seek(where)
        except (OSError, ValueError):
            data = None
        if isinstance(data, (bytes, bytearray)):
            return {"kind": "file object", "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    return {"kind": f"in-memory {type(source).__name__} (no file)", "sha256": None, "bytes": None}


def pixels_sha256(image: Image.Image) -> str:
    """sha256 of an image's RGB bytes (width x height x 3, row-major): the same for the
    normalised query in memory and for query.png read back."""
    return hashlib.sha256(np.asarray(image.convert("RGB"), dtype=np.uint8).tobytes()).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@functools.lru_cache(maxsize=8)
def _folder_sha256(folder: str, stamp: tuple) -> str:
    digest = hashlib.sha256()
    for rel, _size, _mtime in stamp:
        digest.update(f"{rel}\0{file_sha256(Path(folder) / rel)}\n".encode())
    return digest.hexdigest()


def folder_sha256(folder: str | os.PathLike) -> str:
    """Content hash of a model folder: sha256 over "relative/path\\0<sha256 of the file>\\n" for
    every file in sorted order (hidden files and __pycache__ left out). Cached per folder
    until a file changes (size or modification time)."""
    root = Path(folder).resolve()
    stamp = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or any(p.startswith(".") or p == "__pycache__" for p in rel.parts):
            continue
        st = path.stat()
        stamp.append((rel.as_posix(), st.st_size, st.st_mtime_ns))
    return _folder_sha256(str(root), tuple(stamp))
