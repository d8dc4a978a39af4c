"""Tests for the package as a whole: lazy access to every public module, metadata, files."""

import ast
import importlib
import json
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import jaxgrad

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "jaxgrad"
DRAWING = ("plot", "report", "cli")
"""The modules that import matplotlib; no other module may."""


def run_python(code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter (sys.modules as a user's first import leaves it)."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done


def test_import_is_lazy_and_never_imports_matplotlib():
    done = run_python(
        "import sys, json, jaxgrad\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('jaxgrad', 'jax', 'flax', 'matplotlib', 'pandas'))))"
    )
    assert json.loads(done.stdout) == ["jaxgrad"]


def test_every_public_module_is_an_attribute_after_import_jaxgrad():
    """`help(jaxgrad.sweep.Sweep)` after `import jaxgrad` (it raised AttributeError)."""
    on_disk = sorted(m.name for m in pkgutil.iter_modules([str(PACKAGE)]) if m.name[0] != "_")
    assert list(jaxgrad.MODULES) == on_disk
    assert {"sweep", "plot", "store", "theory", "recording", "optim"} <= set(on_disk)
    done = run_python(
        "import pydoc, jaxgrad\n"
        "text = pydoc.render_doc(jaxgrad.sweep.Sweep, renderer=pydoc.plaintext)\n"
        "assert 'class Sweep' in text, text[:200]\n"
        "for name in jaxgrad.MODULES:\n"
        "    assert getattr(jaxgrad, name).__name__ == 'jaxgrad.' + name, name\n"
        "print(sorted(set(dir(jaxgrad)) & set(jaxgrad.MODULES)) == sorted(jaxgrad.MODULES))"
    )
    assert done.stdout.strip() == "True"


def test_the_numeric_core_never_imports_matplotlib():
    """Every module but the drawing ones leaves matplotlib unimported (the style guide's
    direction of dependencies)."""
    core = [name for name in jaxgrad.MODULES if name not in DRAWING]
    done = run_python(
        "import sys, jaxgrad\n"
        f"for name in {core!r}:\n"
        "    getattr(jaxgrad, name)\n"
        "print('matplotlib' in sys.modules)"
    )
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize("name", sorted(jaxgrad.EXPORTS))
def test_top_level_names_are_the_modules_objects(name):
    module = importlib.import_module(f"jaxgrad.{jaxgrad.EXPORTS[name]}")
    assert getattr(jaxgrad, name) is getattr(module, name)
    assert name in jaxgrad.__all__


def test_an_unknown_attribute_names_the_modules():
    with pytest.raises(AttributeError, match="no attribute 'sweeps'; its modules are .*sweep"):
        jaxgrad.sweeps  # noqa: B018


def test_metadata():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == jaxgrad.__version__
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.lstrip().startswith("Apache License")
    assert "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text
    assert {"Homepage", "Documentation", "Repository", "Issues", "Changelog"} <= set(
        project["urls"]
    )
    assert (PACKAGE / "py.typed").is_file()
    citation = (ROOT / "CITATION.cff").read_text()
    assert "cff-version: 1.2.0" in citation
    assert f'version: "{jaxgrad.__version__}"' in citation
    assert f"## [{jaxgrad.__version__}]" in (ROOT / "CHANGELOG.md").read_text()


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstring nodes of a module, its classes and functions."""
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            found.add(id(first.value))
    return found


def test_the_package_points_to_no_file_it_does_not_ship():
    """The installed package holds src/jaxgrad only, so nothing it prints or writes (its
    strings other than docstrings, which describe the repository to its developers) may send
    a reader to the repository's experiments/, benchmarks/ or tests/ folders."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
            ):
                for folder in ("experiments/", "benchmarks/", "tests/"):
                    if folder in node.value:
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {folder}")
    assert not offenders, "\n".join(offenders)
