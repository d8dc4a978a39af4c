"""Results on disk: a folder that knows its sweep, in parts that survive any interruption.

A results folder holds

- `manifest.json`: what the folder is for. The sweep's *identity* (the settings that change
  a network's numbers or the rows' shape without being a grid axis: for `jaxgrad.sweep`, the
  results format, batch size, dtype, depth list, theory and Jacobian columns), the
  *network columns* that name one network (activation, init, width, norm, residual, dtype,
  seed, sigma_w2, sigma_b2), and the *grids* run into the folder (each a product of values
  of those columns). Written atomically (a temporary file, flushed, then `os.replace`).
- `parts/<id>.parquet`: rows. Each part records in its Parquet metadata the sweep identity
  it belongs to and the networks it holds; its id is a hash of those, so it depends on the
  networks, not on how a run chunked them. A part is written under a temporary name, flushed
  and renamed into place: it exists whole or not at all, so a run killed at any moment
  (SIGKILL included) leaves no partial or duplicated rows.

A run into an existing folder must have the same identity (`ResultStore.for_sweep` refuses
another with one line naming what differs); its grid joins the manifest's, and the networks
already stored are skipped, whatever chunking stored them. Readers take only the manifest's
networks, each from one part. A part that cannot be read (truncated, garbage, wrong columns)
is moved aside into `parts/damaged/` with a message naming it, and its networks count as
missing, so the next run recomputes them; a file in `parts/` that is not a part of this
sweep is ignored with a message, never read as results.

Parquet (through pyarrow) is columnar and typed, compresses the repetitive configuration
columns well, and is read by pandas, polars, DuckDB and Spark alike.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import re
import sys
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

PART_SUFFIX = ".parquet"
MANIFEST = "manifest.json"
MANIFEST_KIND = "jaxgrad results"
MANIFEST_FORMAT = 1
"""Version of the manifest's own layout (what a sweep's identity holds is its own business)."""
PART_METADATA_KEY = b"jaxgrad.part"
_PART_NAME = re.compile(r"^[0-9a-f]{20}\.parquet$")

Network = tuple
"""One network's values of the manifest's network columns, in their order."""


def content_id(payload: Any) -> str:
    """A stable 20-hex-digit id for a JSON-serializable payload (keys sorted).

    Args:
        payload: anything `json.dumps` takes.

    Returns:
        20 hexadecimal digits of the payload's hash; equal payloads give equal ids, whatever
        their keys' order.

    Example:
        >>> from jaxgrad.store import content_id
        >>> content_id({"b": 1, "a": [1, 2]}) == content_id({"a": [1, 2], "b": 1})
        True
        >>> len(content_id({"a": 1}))
        20
    """
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class FolderError(ValueError):
    """A folder that cannot hold this run's results: another sweep's, not a results folder
    but not empty, or with an unreadable manifest (`ResultStore.for_sweep` raises it before
    anything is computed; the message names what differs and what to do).

    Example:
        >>> import tempfile
        >>> root = tempfile.mkdtemp()
        >>> _ = ResultStore.for_sweep(root, {"batch_size": 4}, {"seed": [0]})
        >>> try:
        ...     ResultStore.for_sweep(root, {"batch_size": 8}, {"seed": [0]})
        ... except FolderError as error:
        ...     print(str(error).split("(")[1].split(")")[0])
        batch_size 4 there, 8 here
    """


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """write(temporary) in path's folder, flush it to disk, then rename it to path."""
    temporary = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        write(temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _grid_networks(grid: dict[str, list], columns: Sequence[str]) -> Iterable[Network]:
    return itertools.product(*(grid[name] for name in columns))


def _grid_within(inner: dict[str, list], outer: dict[str, list]) -> bool:
    """Every network of `inner` is one of `outer`'s (both products over the same columns)."""
    return all(
        set(map(_hashable, values)) <= set(map(_hashable, outer[name]))
        for name, values in inner.items()
    )


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _describe_differences(there: dict[str, Any], here: dict[str, Any], prefix: str = "") -> str:
    """What differs, one `name value there, value here` per leaf (nested dicts by dotted
    name, so that one setting of a large identity is named alone)."""
    differences = []
    for name in sorted(set(there) | set(here)):
        old, new = there.get(name, "unset"), here.get(name, "unset")
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            differences.append(_describe_differences(old, new, f"{prefix}{name}."))
        else:
            differences.append(f"{prefix}{name} {old!r} there, {new!r} here")
    return "; ".join(differences)


class ResultStore:
    """A results folder: its manifest and its Parquet parts.

    Open an existing folder with `ResultStore(root)` to read it; create one, or join the
    compatible sweep already in it, with `ResultStore.for_sweep`.

    Args:
        root: a folder holding `manifest.json` and `parts/`.
        log: where messages about damaged or stray parts go (default: one line on stderr).

    Raises:
        ValueError: `root` is not a results folder (no readable manifest).

    Example:
        >>> import tempfile, pandas as pd
        >>> grid = {"seed": [0, 1], "sigma_w2": [1.0]}
        >>> store = ResultStore.for_sweep(tempfile.mkdtemp(), {"batch_size": 4}, grid)
        >>> frame = pd.DataFrame({"seed": [0, 1], "sigma_w2": [1.0, 1.0], "x": [3.0, 4.0]})
        >>> part_id = store.write([(0, 1.0), (1, 1.0)], frame)
        >>> store.stored() == {(0, 1.0): part_id, (1, 1.0): part_id}, len(store.read())
        (True, 2)
    """

    def __init__(self, root: str | os.PathLike, *, log: Callable[[str], None] | None = None):
        self.root = Path(root)
        self.parts = self.root / "parts"
        self.log = _stderr if log is None else log
        self.manifest = self._read_manifest()
        if self.manifest is None:
            raise ValueError(f"{self.root} holds no jaxgrad results (no {MANIFEST})")
        self.identity_id = content_id(self.manifest["identity"])
        self.columns = tuple(self.manifest["network_columns"])
        self._footers: dict[str, tuple[str, Any]] = {}

    # ------------------------------------------------------------------------- the manifest

    @classmethod
    def for_sweep(
        cls,
        root: str | os.PathLike,
        identity: dict[str, Any],
        grid: dict[str, list],
        *,
        part_columns: Sequence[str] | None = None,
        log: Callable[[str], None] | None = None,
        what: str = "sweep",
    ) -> ResultStore:
        """Create the results folder of a sweep, or join the same sweep already in it.

        Args:
            root: the folder; created if missing. An existing folder must be empty or hold a
                manifest with the same `identity`.
            identity: JSON values that must be equal for two runs to share a folder.
            grid: {network column: list of values}; its product is the run's networks. It
                joins the manifest's grids (a grid within one already there adds nothing).
            part_columns: the columns every part must have (checked on read); default: any.
            log: where messages go (default: one line on stderr).
            what: what the folder holds, in a refusal ("sweep", "coordinate check").

        Raises:
            FolderError: (a ValueError) the folder holds another sweep (the message names
                what differs), is not empty without a manifest, or its manifest is
                unreadable.
        """
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        identity = json.loads(json.dumps(identity))
        grid = json.loads(json.dumps(grid))
        with _locked(root):
            manifest = cls._read_manifest_at(root)
            if manifest is None:
                stray = sorted(p.name for p in root.iterdir() if p.name != ".manifest.lock")
                if stray:
                    raise FolderError(
                        f"{root} is not empty ({', '.join(stray[:3])}"
                        f"{', ...' if len(stray) > 3 else ''}) and holds no {MANIFEST}: it is "
                        "not a jaxgrad results folder, or one written before manifests; use "
                        "another results folder (--out)"
                    )
                manifest = {
                    "kind": MANIFEST_KIND,
                    "format": MANIFEST_FORMAT,
                    "identity": identity,
                    "network_columns": list(grid),
                    "part_columns": None if part_columns is None else list(part_columns),
                    "grids": [grid],
                }
            else:
                differences = _describe_differences(manifest["identity"], identity)
                if manifest["network_columns"] != list(grid):
                    differences = differences or "its networks are named by other columns"
                if differences:
                    raise FolderError(
                        f"{root} holds a different {what} ({differences}); use another results "
                        "folder (--out), or delete this one"
                    )
                grids = manifest["grids"]
                if not any(_grid_within(grid, known) for known in grids):
                    kept = [known for known in grids if not _grid_within(known, grid)]
                    manifest = {**manifest, "grids": [*kept, grid]}
            cls._write_manifest(root, manifest)
        (root / "parts").mkdir(exist_ok=True)
        return cls(root, log=log)

    @staticmethod
    def _read_manifest_at(root: Path) -> dict[str, Any] | None:
        path = root / MANIFEST
        if not path.exists():
            return None
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise FolderError(f"{path} is not a readable manifest ({error})") from None
        if not isinstance(manifest, dict) or manifest.get("kind") != MANIFEST_KIND:
            raise FolderError(f"{path} is not a jaxgrad results manifest")
        if manifest.get("format") != MANIFEST_FORMAT:
            raise FolderError(
                f"{path} has manifest format {manifest.get('format')!r}; this jaxgrad reads "
                f"format {MANIFEST_FORMAT}"
            )
        return manifest

    def _read_manifest(self) -> dict[str, Any] | None:
        return self._read_manifest_at(self.root)

    @staticmethod
    def _write_manifest(root: Path, manifest: dict[str, Any]) -> None:
        path = root / MANIFEST
        text = json.dumps(manifest, indent=1) + "\n"
        if path.exists() and path.read_text() == text:
            return
        _write_atomically(path, lambda temporary: temporary.write_text(text))

    def networks(self) -> set[Network]:
        """Every network of the manifest's grids (stored or not)."""
        return {
            tuple(network)
            for grid in self.manifest["grids"]
            for network in _grid_networks(grid, self.columns)
        }

    # ------------------------------------------------------------------------- the parts

    def path(self, part_id: str) -> Path:
        return self.parts / f"{part_id}{PART_SUFFIX}"

    def part_id(self, networks: Iterable[Network]) -> str:
        """The id of the part holding exactly these networks (in any order)."""
        listed = sorted((list(n) for n in networks), key=json.dumps)
        return content_id({"sweep": self.identity_id, "networks": listed})

    def write(self, networks: Sequence[Network], frame: pd.DataFrame) -> str:
        """Write the rows of these networks as one part, atomically; return its id.

        An existing part of the same networks is left as it is (append-only).
        """
        part_id = self.part_id(networks)
        final = self.path(part_id)
        if final.exists():
            return part_id
        table = pa.Table.from_pandas(frame, preserve_index=False)
        record = {"sweep": self.identity_id, "networks": [list(n) for n in networks]}
        metadata = {**(table.schema.metadata or {}), PART_METADATA_KEY: json.dumps(record)}
        table = table.replace_schema_metadata(metadata)
        _write_atomically(final, lambda temporary: pq.write_table(table, temporary))
        self._footers.pop(final.name, None)
        return part_id

    def stored(self) -> dict[Network, str]:
        """{network: id of the part that holds it} over the readable parts of this sweep.

        A part whose footer cannot be read or whose columns are wrong is moved aside into
        `parts/damaged/`; other files are ignored. Each is reported once through `log`.
        """
        holder: dict[Network, str] = {}
        for path in sorted(self.parts.glob(f"*{PART_SUFFIX}")):
            verdict, networks = self._footer(path)
            if verdict != "part":
                continue
            part_id = path.name[: -len(PART_SUFFIX)]
            for network in networks:
                holder.setdefault(network, part_id)
        return holder

    def _footer(self, path: Path) -> tuple[str, Any]:
        """("part", networks), ("stray", None) or ("damaged", None); cached per file name
        (parts are immutable)."""
        if path.name in self._footers:
            return self._footers[path.name]
        verdict = self._check_footer(path)
        self._footers[path.name] = verdict
        return verdict

    def _check_footer(self, path: Path) -> tuple[str, Any]:
        shown = path.relative_to(self.root)
        if not _PART_NAME.match(path.name):
            self.log(f"ignoring {shown}: not a jaxgrad part (its name is not a part id)")
            return "stray", None
        try:
            schema = pq.read_schema(path)
        except (OSError, pa.ArrowException) as error:
            self.quarantine(path, f"unreadable: {_first_line(error)}")
            return "damaged", None
        try:
            record = json.loads((schema.metadata or {})[PART_METADATA_KEY])
            networks = [tuple(network) for network in record["networks"]]
            sweep = record["sweep"]
        except (KeyError, TypeError, ValueError):
            self.log(f"ignoring {shown}: not a part of a jaxgrad sweep (no part record)")
            return "stray", None
        if sweep != self.identity_id:
            self.log(f"ignoring {shown}: a part of another sweep")
            return "stray", None
        if path.name != f"{self.part_id(networks)}{PART_SUFFIX}":
            self.log(f"ignoring {shown}: its name does not match the networks it records")
            return "stray", None
        expected = self.manifest.get("part_columns")
        if expected is not None and sorted(schema.names) != sorted(expected):
            missing = sorted(set(expected) - set(schema.names))
            extra = sorted(set(schema.names) - set(expected))
            self.quarantine(path, f"wrong columns (missing {missing}, unexpected {extra})")
            return "damaged", None
        if any(len(network) != len(self.columns) for network in networks):
            self.quarantine(path, "its part record names networks of another shape")
            return "damaged", None
        return "part", networks

    def quarantine(self, path: Path, reason: str) -> None:
        """Move a damaged part into `parts/damaged/` so that its networks are recomputed."""
        damaged = self.parts / "damaged"
        target = damaged / path.name
        try:
            damaged.mkdir(exist_ok=True)
            if target.exists():
                target = damaged / f"{path.stem}.{uuid.uuid4().hex[:8]}{PART_SUFFIX}"
            os.replace(path, target)
        except FileNotFoundError:
            return  # another process moved it first
        except OSError as error:
            self.log(
                f"damaged part {path.relative_to(self.root)} ({reason}) could not be moved "
                f"aside ({error.strerror}); it is ignored, delete it by hand"
            )
            return
        self.log(
            f"moved damaged part {path.relative_to(self.root)} to "
            f"{target.relative_to(self.root)} ({reason}); its networks will be recomputed "
            "on the next run"
        )

    def read(self, networks: Iterable[Network] | None = None) -> pd.DataFrame:
        """The rows of these networks (default: the manifest's), each from one part.

        Networks not stored are absent (compare with `stored()`); a part that fails to read
        is moved aside (see `quarantine`) and its networks are absent. Leftover temporary
        files of an interrupted write are ignored. An empty frame when nothing is stored.
        """
        wanted = self.networks() if networks is None else {tuple(n) for n in networks}
        by_part: dict[str, set[Network]] = {}
        for network, part_id in self.stored().items():
            if network in wanted:
                by_part.setdefault(part_id, set()).add(network)
        frames = []
        for part_id in sorted(by_part):
            path = self.path(part_id)
            try:
                frame = pd.read_parquet(path)
            except (OSError, pa.ArrowException) as error:
                self.quarantine(path, f"unreadable: {_first_line(error)}")
                self._footers[path.name] = ("damaged", None)
                continue
            if len(by_part[part_id]) < len(self._footers[path.name][1]):
                keys = zip(*(frame[name].tolist() for name in self.columns), strict=True)
                frame = frame[[key in by_part[part_id] for key in keys]]
            frames.append(frame)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


@contextlib.contextmanager
def _locked(root: Path):
    """Hold an exclusive lock on root's manifest while it is read and rewritten."""
    with open(root / ".manifest.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
