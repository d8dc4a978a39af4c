"""Sphinx configuration of jaxgrad's documentation.

Pages are MyST markdown; the tutorials are MyST notebooks (`{code-cell}`) that MyST-NB
executes when the site is built, so every number and figure on them comes from the code
beside it. The API reference is written at build time from the docstrings: one page per
public module (see `write_api_pages`), autodoc + napoleon for the Google-style sections.
"""

from __future__ import annotations

import importlib
import inspect as pyinspect
import os
import pkgutil
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import jaxgrad  # noqa: E402

project = "jaxgrad"
author = "the jaxgrad authors"
copyright = "2026, the jaxgrad authors"
release = jaxgrad.__version__
version = release

extensions = [
    "myst_nb",
    "sphinx_design",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    # MathJax served from the site itself, so that the pages read offline too.
    "sphinx-mathjax-offline",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "README.md"]
root_doc = "index"

# Docstrings write `name` in single backticks, as Markdown does: render it as code.
default_role = "code"

# -- MyST and MyST-NB --------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
# Execute every notebook page when the site is built. `make docs` keeps a cache between builds
# (JAXGRAD_DOCS_EXECUTE=cache); CI builds with the cache off, so every page runs.
nb_execution_mode = os.environ.get("JAXGRAD_DOCS_EXECUTE", "force")
nb_execution_timeout = 600  # per notebook; each takes seconds to a minute on 2 cores
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
nb_execution_cache_path = str(HERE / "_build" / ".jupyter_cache")

# -- autodoc and napoleon ----------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_preserve_defaults = True
autodoc_inherit_docstrings = False
autodoc_class_signature = "separated"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True
napoleon_custom_sections = [("References", "notes_style"), ("Cost", "notes_style")]
autosummary_generate = False
# A type hint such as `History` names a class that two modules define (`jaxgrad.train`,
# `jaxgrad.recording`); Sphinx links it to one of them and says so.
suppress_warnings = ["ref.python"]

# The extension serves MathJax 3 from _static/mathjax (this pins the path it sets).
mathjax_path = "mathjax/tex-chtml.js"

# -- HTML --------------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = f"jaxgrad {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "home_page_in_toc": True,
}
html_show_sourcelink = False
toc_object_entries_show_parents = "hide"

# -- the API pages -----------------------------------------------------------------------------
# Modules that are not a user's API: the command line has its own page.
NOT_API = {"cli"}
API_DIR = HERE / "api"


def public_modules() -> list[str]:
    """Every public module of jaxgrad, in the order of the package's dependency chain."""
    names = [m.name for m in pkgutil.iter_modules(jaxgrad.__path__) if not m.name.startswith("_")]
    return ["jaxgrad." + n for n in names if n not in NOT_API]


def public_names(module) -> list[str]:
    """A module's public functions and classes: its `__all__`, or else those defined in it
    (for a package, in its submodules) with a name that does not start with `_`."""
    if hasattr(module, "__all__"):
        candidates = list(module.__all__)
    else:
        candidates = [n for n in vars(module) if not n.startswith("_")]
    names = []
    for name in candidates:
        obj = getattr(module, name)
        if not (pyinspect.isfunction(obj) or pyinspect.isclass(obj)):
            continue
        home = getattr(obj, "__module__", "") or ""
        is_package = hasattr(module, "__path__")
        if home == module.__name__ or (is_package and home.startswith(module.__name__ + ".")):
            names.append(name)
    return names


def object_page(module_name: str) -> str:
    module = importlib.import_module(module_name)
    names = public_names(module)
    lines = [
        f"# `{module_name}`",
        "",
        "```{eval-rst}",
        f".. automodule:: {module_name}",
        "   :no-members:",
        "",
        f".. currentmodule:: {module_name}",
        "",
    ]
    if names:
        lines += [".. autosummary::", "   :nosignatures:", ""]
        lines += [f"   {name}" for name in names]
        lines += [""]
    for name in names:
        obj = getattr(module, name)
        if pyinspect.isclass(obj):
            lines += [f".. autoclass:: {name}", "   :members:", ""]
        else:
            lines += [f".. autofunction:: {name}", ""]
    lines += ["```", ""]
    return "\n".join(lines)


def top_level_page() -> str:
    """`jaxgrad`'s own names: each links to the page of the module that defines it."""
    rows = []
    for name in sorted(n for n in dir(jaxgrad) if not n.startswith("_")):
        obj = getattr(jaxgrad, name)
        if pyinspect.ismodule(obj):
            if obj.__name__ == f"jaxgrad.{name}" and name not in NOT_API:
                rows.append(
                    f"| `jaxgrad.{name}` | module | {{doc}}`{obj.__name__} <{obj.__name__}>` |"
                )
        elif pyinspect.isfunction(obj) or pyinspect.isclass(obj):
            home = obj.__module__
            while home.rsplit(".", 1)[0] != "jaxgrad" and "." in home.removeprefix("jaxgrad."):
                home = home.rsplit(".", 1)[0]
            rows.append(
                f"| `jaxgrad.{name}` | {'class' if pyinspect.isclass(obj) else 'function'} "
                f"| {{py:obj}}`{home}.{name}` |"
            )
    return "\n".join(
        [
            "# `jaxgrad`",
            "",
            "The names `import jaxgrad` gives, and where each is documented.",
            "",
            "| name | kind | documented at |",
            "| --- | --- | --- |",
            *rows,
            "",
        ]
    )


def write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def write_api_pages(app) -> None:
    """Write `api/*.md` from the package as it is now (the folder is generated, git-ignored)."""
    API_DIR.mkdir(exist_ok=True)
    modules = public_modules()
    write_if_changed(API_DIR / "jaxgrad.md", top_level_page())
    for name in modules:
        write_if_changed(API_DIR / f"{name}.md", object_page(name))
    toc = "\n".join(["jaxgrad", *modules])
    index = (
        "# API reference\n\n"
        "Generated from the docstrings: one page per module, each opening with the module's "
        "own overview.\n\n"
        f"```{{toctree}}\n:maxdepth: 1\n\n{toc}\n```\n"
    )
    write_if_changed(API_DIR / "index.md", index)
    for stale in API_DIR.glob("*.md"):
        if stale.stem not in {"index", "jaxgrad", *modules}:
            stale.unlink()


def skip_namedtuple_fields(app, what, name, obj, skip, options):
    """A NamedTuple's fields carry only "Alias for field number N" and its `__new__` only
    "Create new instance of ..."; the class docstring says what they hold."""
    doc = getattr(obj, "__doc__", None) or ""
    if doc.startswith(("Alias for field number", "Create new instance of")):
        return True
    return skip


# Docstrings are plain text read in a terminal (`help()`), with Markdown's backticks for code.
# Three habits of that prose mean something else to reStructuredText; they are escaped here
# (outside code, doctests and literal blocks) rather than bent out of the docstrings:
# |x| (absolute value, a substitution in rST), `name`s (a plural after code, an unclosed
# role in rST) and a paragraph that opens with "(a) " (an enumerated list in rST).
BACKTICK_SPAN = re.compile(r"(`[^`]+`)")
ENUMERATOR = re.compile(r"^(\s*)\((\w{1,3})\) ")


def escape_prose(line: str) -> str:
    pieces = BACKTICK_SPAN.split(line)
    out = []
    for i, piece in enumerate(pieces):
        if i % 2 == 1:  # a code span
            out.append(piece)
            following = pieces[i + 1] if i + 1 < len(pieces) else ""
            if following[:1].isalnum():
                out.append("\\ ")
        else:
            out.append(piece.replace("|", "\\|"))
    return ENUMERATOR.sub(r"\1\\(\2) ", "".join(out))


def escape_docstring(app, what, name, obj, options, lines):
    in_doctest = False
    literal_indent = None  # the indent of the paragraph that opened a `::` literal block
    for i, line in enumerate(lines):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if literal_indent is not None:
            if not stripped or indent > literal_indent:
                continue
            literal_indent = None
        if stripped.startswith(">>>"):
            in_doctest = True
        if in_doctest:
            in_doctest = bool(stripped)
            continue
        if not stripped or stripped.startswith(".. "):
            continue
        lines[i] = escape_prose(line)
        if stripped.endswith("::"):
            literal_indent = indent


def setup(app):
    app.connect("builder-inited", write_api_pages)
    app.connect("autodoc-skip-member", skip_namedtuple_fields)
    app.connect("autodoc-process-docstring", escape_docstring)
