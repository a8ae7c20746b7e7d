"""What the app reads from its environment: whole numbers, sizes and the server address, each with a
message that names the variable when it is malformed."""

from __future__ import annotations

import os


def env_int(name: str, default: int) -> int:
    """A whole number from the environment (blank: `default`); ValueError names the variable."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as err:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from err


def env_bytes(name: str, default: str) -> int:
    """A size from the environment, "20mb" / "512kb" / "1gb" / bytes (blank: `default`); ValueError names it."""
    raw = (os.environ.get(name, "").strip() or default).lower()
    units = {"gb": 2**30, "mb": 2**20, "kb": 2**10, "b": 1}
    unit = next((u for u in units if raw.endswith(u)), "b")
    try:
        return int(float(raw[: len(raw) - len(unit)] if raw.endswith(unit) else raw) * units[unit])
    except ValueError as err:
        raise ValueError(f"{name} must be a size such as 20mb, got {raw!r}") from err


def server_address() -> tuple[str, int]:
    """The app's (name, port) from Gradio's own variables, GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (PORT as a
    fallback)."""
    name = os.environ.get("GRADIO_SERVER_NAME") or "0.0.0.0"
    port = env_int("GRADIO_SERVER_PORT", 0) or env_int("PORT", 7860)
    return name, port
