"""Check a built wheel of jaxgrad, and the copy of it installed in the running interpreter.

Run by `make wheel-check` with the fresh virtual environment's Python, from the checkout:

    venv/bin/python .ci/check_wheel.py dist/jaxgrad-0.1.0-py3-none-any.whl

It fails (exit status 1, one line per problem) when the wheel lacks a module of
src/jaxgrad, py.typed or the license, when its metadata lacks the license expression or the
project URLs, or when `import jaxgrad` finds the source tree instead of the installed copy.
"""

from __future__ import annotations

import email.parser
import importlib
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
URLS = ("Homepage", "Documentation", "Repository", "Issues", "Changelog")


def problems(wheel: Path) -> list[str]:
    found = []
    names = set(zipfile.ZipFile(wheel).namelist())
    source = ROOT / "src"
    for path in sorted((source / "jaxgrad").rglob("*")):
        if path.suffix in (".py", ".typed") and "__pycache__" not in path.parts:
            name = path.relative_to(source).as_posix()
            if name not in names:
                found.append(f"the wheel lacks {name}")
    (info,) = {name.split("/")[0] for name in names if ".dist-info/" in name}
    if f"{info}/licenses/LICENSE" not in names:
        found.append(f"the wheel lacks {info}/licenses/LICENSE")
    with zipfile.ZipFile(wheel) as archive:
        metadata = email.parser.Parser().parsestr(archive.read(f"{info}/METADATA").decode())
    if metadata["License-Expression"] != "Apache-2.0":
        found.append(f"License-Expression is {metadata['License-Expression']!r}")
    labels = {url.split(",")[0].strip() for url in metadata.get_all("Project-URL") or []}
    found += [f"no Project-URL {label}" for label in URLS if label not in labels]

    sys.path = [p for p in sys.path if Path(p or ".").resolve() != ROOT]
    jaxgrad = importlib.import_module("jaxgrad")
    installed = Path(jaxgrad.__file__).resolve()
    if ROOT in installed.parents:
        found.append(f"import jaxgrad found the source tree ({installed}), not the wheel")
    for name in jaxgrad.MODULES:
        getattr(jaxgrad, name)
    if "matplotlib" not in sys.modules:
        found.append("the drawing modules did not load matplotlib (were they found?)")
    return found


def main() -> int:
    (wheel,) = sys.argv[1:]
    found = problems(Path(wheel))
    for problem in found:
        print(f"check_wheel: {problem}", file=sys.stderr)
    if not found:
        print(f"check_wheel: {Path(wheel).name} holds every module, py.typed, the license")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
