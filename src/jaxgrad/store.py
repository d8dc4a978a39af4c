"""Results on disk: append-only, content-addressed Parquet parts that survive any interruption.

A sweep writes each chunk of results as one Parquet file named by a hash of the chunk's
whole configuration. The file is written under a temporary name in the same folder, flushed
to disk, and renamed into place (`os.replace`, atomic on POSIX): a part either exists whole
or not at all, so a run killed at any moment (SIGKILL included) leaves no partial or
duplicated rows, and running the same sweep again skips every part that exists.

Parquet (through pyarrow) is columnar and typed, compresses the repetitive configuration
columns well, and is read by pandas, polars, DuckDB and Spark alike.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

PART_SUFFIX = ".parquet"


def content_id(payload: Any) -> str:
    """A stable 20-hex-digit id for a JSON-serializable payload (keys sorted)."""
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class ResultStore:
    """A folder of immutable Parquet parts.

    Args:
        root: the folder; created if missing. Parts live in `root/parts/`.

    Example:
        >>> import tempfile, pandas as pd
        >>> store = ResultStore(tempfile.mkdtemp())
        >>> store.write("abc", pd.DataFrame({"x": [1, 2]}))
        >>> store.has("abc"), len(store.read())
        (True, 2)
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.parts = self.root / "parts"
        self.parts.mkdir(parents=True, exist_ok=True)

    def path(self, part_id: str) -> Path:
        return self.parts / f"{part_id}{PART_SUFFIX}"

    def has(self, part_id: str) -> bool:
        return self.path(part_id).exists()

    def write(self, part_id: str, frame: pd.DataFrame) -> None:
        """Write one part atomically; an existing part is left as it is (append-only)."""
        final = self.path(part_id)
        if final.exists():
            return
        temporary = self.parts / f".{part_id}.{os.getpid()}.tmp"
        frame.to_parquet(temporary, index=False)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, final)

    def part_ids(self) -> list[str]:
        return sorted(p.name[: -len(PART_SUFFIX)] for p in self.parts.glob(f"*{PART_SUFFIX}"))

    def read(self) -> pd.DataFrame:
        """Every part, concatenated (empty frame when there is none). Leftover temporary
        files of an interrupted write are ignored."""
        frames = [pd.read_parquet(self.path(part)) for part in self.part_ids()]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
