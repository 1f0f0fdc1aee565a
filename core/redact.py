"""Keeping the API key out of every line the tool writes."""

from __future__ import annotations

import os

KEY_VARIABLES = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
MISSING_KEY_MESSAGE = "no API key: set GEMINI_API_KEY (or GOOGLE_API_KEY) in the environment"


def api_key_from_env() -> str | None:
    """The key as the SDK reads it: GOOGLE_API_KEY wins over GEMINI_API_KEY; blank counts as unset."""
    for name in ("GOOGLE_API_KEY", "GEMINI_API_KEY"):
        value = (os.environ.get(name) or "").strip()
        if value:
            return value
    return None


def redact(text: str, secrets: tuple[str, ...] | None = None) -> str:
    """`text` with every known secret (by default the keys in the environment) replaced."""
    if secrets is None:
        secrets = tuple(v.strip() for name in KEY_VARIABLES if (v := os.environ.get(name)) and v.strip())
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return text
