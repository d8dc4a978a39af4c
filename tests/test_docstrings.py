"""Docstrings: every public function and class of the checked modules documents its
arguments (`Args:`, or `Attributes:` for a result type), what it returns (`Returns:`),
what it raises where its body raises (`Raises:`), and shows an `Example:`; every example in
a module's docstrings runs, as a doctest, and prints what it says it prints.

The public names of a module are those in its `__all__`, or else the functions and classes
it defines whose names do not start with an underscore (a package's re-exports are checked
in the module that defines them).
"""

from __future__ import annotations

import ast
import doctest
import importlib
import inspect
import textwrap

import jax
import pytest

MODULES = (
    "jaxgrad.theory",
    "jaxgrad.init",
    "jaxgrad.activations",
    "jaxgrad.stats.reductions",
    "jaxgrad.stats.diagnosis",
    "jaxgrad.inspection",
    "jaxgrad.inspection.capture",
    "jaxgrad.optim",
    "jaxgrad.optim.chains",
    "jaxgrad.optim.clipping",
    "jaxgrad.optim.monitoring",
    "jaxgrad.optim.penalties",
    "jaxgrad.propagation",
    "jaxgrad.jacobian",
    "jaxgrad.model_init",
    "jaxgrad.nn",
    "jaxgrad.sweep",
    "jaxgrad.store",
    "jaxgrad.data",
    "jaxgrad.prng",
    "jaxgrad.plot",
    "jaxgrad.recording",
    "jaxgrad.recording.recorder",
    "jaxgrad.recording.history",
    "jaxgrad.train",
    "jaxgrad.scaling",
    "jaxgrad.scaling.mup",
    "jaxgrad.scaling.coord",
    "jaxgrad.scaling.slopes",
    "jaxgrad.scaling.config",
    "jaxgrad.cli",
)
"""The modules whose docstrings are checked. Not yet checked: jaxgrad.report
(its docstrings are still incomplete)."""


def public_objects(module_name: str) -> list[tuple[str, object]]:
    """(qualified name, object) for every public function and class `module_name` defines."""
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        names = [name for name in vars(module) if not name.startswith("_")]
    found = []
    for name in names:
        obj = getattr(module, name)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        if getattr(obj, "__module__", None) != module_name:
            continue  # re-exported: checked where it is defined
        found.append((f"{module_name}.{name}", obj))
    return found


def _parameters(obj) -> list[str]:
    """The parameters a caller passes (no self, cls)."""
    target = obj
    if inspect.isclass(obj):
        if _is_namedtuple(obj):
            return list(obj._fields)
        target = obj.__dict__.get("__init__")  # an inherited constructor is documented there
        if target is None or getattr(obj, "_is_protocol", False):
            return []
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return []
    return [name for name in signature.parameters if name not in ("self", "cls")]


def _is_namedtuple(obj) -> bool:
    return inspect.isclass(obj) and issubclass(obj, tuple) and hasattr(obj, "_fields")


def _function_node(obj) -> ast.FunctionDef | None:
    try:
        source = textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError):
        return None
    tree = ast.parse(source)
    node = tree.body[0]
    return node if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else None


def _own_statements(node: ast.AST):
    """The nodes of a function's body, not descending into nested functions or classes."""
    stack = list(ast.iter_child_nodes(node))
    while stack:
        child = stack.pop()
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            continue
        yield child
        stack.extend(ast.iter_child_nodes(child))


def _returns_something(obj) -> bool:
    if inspect.isclass(obj):
        return False
    annotation = inspect.signature(obj).return_annotation
    if annotation is not inspect.Signature.empty:
        return annotation not in (None, "None", type(None))
    node = _function_node(obj)
    if node is None:
        return False
    return any(
        isinstance(child, ast.Yield | ast.YieldFrom)
        or (isinstance(child, ast.Return) and child.value is not None)
        for child in _own_statements(node)
    )


def _raises(obj) -> bool:
    """Whether the function's own body has a `raise` that is not a bare re-raise."""
    if inspect.isclass(obj):
        if getattr(obj, "_is_protocol", False):
            return False
        obj = obj.__dict__.get("__init__")
        if obj is None:
            return False
    node = _function_node(obj)
    if node is None:
        return False
    return any(
        isinstance(child, ast.Raise) and child.exc is not None for child in _own_statements(node)
    )


def missing_sections(obj) -> list[str]:
    """The sections `obj`'s docstring lacks (empty when it has all it needs)."""
    doc = inspect.getdoc(obj) or ""
    if not doc:
        return ["a docstring"]
    missing = []
    if _parameters(obj) and "Args:" not in doc and "Attributes:" not in doc:
        missing.append("Args:")
    if _returns_something(obj) and "Returns:" not in doc and "Yields:" not in doc:
        missing.append("Returns:")
    if _raises(obj) and "Raises:" not in doc:
        missing.append("Raises:")
    if "Example:" not in doc and "Examples:" not in doc:
        missing.append("Example:")
    return missing


PUBLIC = [item for module in MODULES for item in public_objects(module)]


@pytest.mark.parametrize(("name", "obj"), PUBLIC, ids=[name for name, _ in PUBLIC])
def test_docstring_sections(name, obj):
    missing = missing_sections(obj)
    assert not missing, f"{name}'s docstring lacks {', '.join(missing)}"


def _doctests() -> dict[str, list[doctest.DocTest]]:
    """Every docstring with examples in each checked module, sorted by name."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    found = {}
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        tests = sorted(finder.find(module, module_name), key=lambda test: test.name)
        found[module_name] = [test for test in tests if test.examples]
    return found


DOCTESTS = _doctests()


def run_examples(test: doctest.DocTest) -> tuple[int, str]:
    """(failed examples, the runner's report) of one docstring's examples."""
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    report: list[str] = []
    result = runner.run(test, out=report.append)
    return result.failed, "".join(report)


COMPILING = {
    "jaxgrad.theory",
    "jaxgrad.stats.diagnosis",
    "jaxgrad.inspection",
    "jaxgrad.propagation",
    "jaxgrad.jacobian",
    "jaxgrad.model_init",
    "jaxgrad.sweep",
    "jaxgrad.plot",
    "jaxgrad.recording.recorder",
    "jaxgrad.recording.history",
    "jaxgrad.train",
    "jaxgrad.scaling",
    "jaxgrad.scaling.coord",
    "jaxgrad.scaling.config",
    "jaxgrad.cli",
}
"""Modules whose examples compile whole programs (about 100 of the file's 130 s of CPU):
marked slow, so `make test-fast` leaves them to `make test`."""

EXAMPLES = [
    pytest.param(test, marks=[pytest.mark.slow] if module in COMPILING else [], id=test.name)
    for module, tests in DOCTESTS.items()
    for test in tests
]


CLEAR_EVERY = 30
"""Compiled programs are dropped after every 30 examples: consecutive examples (of one
module, mostly) share the small programs of their eager operations, and a few hundred
examples do not accumulate in one process. Measured on 2 cores for the file's 560
examples: after every example 244 s and a peak of 0.97 GB, every 30 169 s and 1.46 GB,
never 137 s and 3.5 GB."""

_RUN = [0]


@pytest.mark.parametrize("test", EXAMPLES)
def test_examples_run(test):
    failed, report = run_examples(test)
    _RUN[0] += 1
    if _RUN[0] % CLEAR_EVERY == 0:
        jax.clear_caches()
    assert failed == 0, report


def test_runner_flags_a_wrong_example():
    wrong = doctest.DocTestParser().get_doctest(">>> 1 + 1\n3\n", {}, "wrong", None, 0)
    failed, report = run_examples(wrong)
    assert failed == 1
    assert "Expected:" in report


@pytest.mark.parametrize("module_name", MODULES)
def test_every_module_has_examples(module_name):
    assert DOCTESTS[module_name], f"{module_name} has no examples"


def test_checker_flags_missing_sections():
    """The checker itself: a function without the sections is flagged, one with them is not."""

    def bare(x):
        """Does a thing."""
        if x < 0:
            raise ValueError(x)
        return x

    def documented(x):
        """Does a thing.

        Args:
            x: a number.

        Returns:
            x.

        Raises:
            ValueError: if x < 0.

        Example:
            >>> 1
            1
        """
        if x < 0:
            raise ValueError(x)
        return x

    assert missing_sections(bare) == ["Args:", "Returns:", "Raises:", "Example:"]
    assert missing_sections(documented) == []
