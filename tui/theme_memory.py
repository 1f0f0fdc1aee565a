"""The theme the user chose, remembered across runs in `tui.toml` (next to $GEMBATCH_CONFIG, else in the
user's config directory)."""

from __future__ import annotations

import contextlib
import os
import tomllib
from pathlib import Path

import platformdirs
import tomli_w
from gembatch.core.config import APP_NAME, CONFIG_ENV

FILE_NAME = "tui.toml"


def theme_file() -> Path:
    """Where the choice is kept: the directory of $GEMBATCH_CONFIG when it is set, else the user config dir."""
    from_env = os.environ.get(CONFIG_ENV, "").strip()
    folder = Path(from_env).expanduser().parent if from_env else Path(platformdirs.user_config_dir(APP_NAME))
    return folder / FILE_NAME


def load_theme(path: Path) -> str | None:
    """The remembered theme's name, or None when nothing was saved; raises ValueError naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    theme = data.get("theme")
    if theme is None:
        return None
    if not isinstance(theme, str):
        raise ValueError(f"{path}: `theme` must be a theme's name (a string), not {type(theme).__name__}")
    return theme


def save_theme(path: Path, name: str) -> None:
    """Remember `name`, keeping any other keys the file holds; written whole (a crash leaves the old file)."""
    data: dict[str, object] = {}
    with contextlib.suppress(FileNotFoundError, tomllib.TOMLDecodeError):  # a broken file is replaced
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    data["theme"] = name
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(tomli_w.dumps(data), encoding="utf-8")
    scratch.replace(path)
