"""Input folders for tests and benchmarks: small JSONL batch files with keys unique across the folder.

Free of pytest, so that `benchmarks/` can write the same inputs.
"""

from __future__ import annotations

import json
from pathlib import Path


def write_batch_files(folder: Path, files: int, requests: int, *, prefix: str = "part", pad: int = 0) -> list[Path]:
    """`files` JSONL inputs of `requests` lines each (`pad` words more per prompt); returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    width = max(3, len(str(files)))  # part_001 ... part_10000: names sort the way they were written
    paths = []
    for f in range(1, files + 1):
        lines = []
        for r in range(1, requests + 1):
            text = f"question {f}.{r}" + " lorem" * pad
            lines.append(json.dumps({"key": f"{prefix}-{f}-{r}",
                                     "request": {"contents": [{"parts": [{"text": text}]}]}}))
        path = folder / f"{prefix}_{f:0{width}d}.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths.append(path)
    return paths
