"""jaxgrad: see, measure and cure vanishing and exploding gradients in deep networks.

Every public module is an attribute of the package, imported the first time it is used, so
`import jaxgrad` is fast and never imports matplotlib (only `jaxgrad.plot`, `jaxgrad.report`
and `jaxgrad.cli` do):

    >>> import jaxgrad
    >>> jaxgrad.sweep.Sweep(depth=4, width=8).size
    1

The names most analyses start from are re-exported here as well (`jaxgrad.probe`,
`jaxgrad.inspect`, `jaxgrad.diagnose`, ...); each lives in the module `EXPORTS` names.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

MODULES = tuple(
    sorted(module.name for module in pkgutil.iter_modules(__path__) if module.name[0] != "_")
)
"""The public modules and subpackages, each an attribute of `jaxgrad` on first use."""

EXPORTS = {
    "ModelReport": "inspection",
    "inspect": "inspection",
    "cure": "model_init",
    "fixup": "model_init",
    "lsuv": "model_init",
    "LayerStats": "propagation",
    "mean_square_loss": "propagation",
    "probe": "propagation",
    "propagate": "propagation",
    "random_projection_loss": "propagation",
    "seed_configs": "propagation",
    "seed_experiment": "propagation",
    "Diagnosis": "stats",
    "diagnose": "stats",
}
"""The functions and classes re-exported at the top level: name -> the module holding it."""

__all__ = ["__version__", *MODULES, *EXPORTS]


def __getattr__(name: str) -> Any:
    if name in EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{EXPORTS[name]}"), name)
    elif name in MODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(
            f"module {__name__!r} has no attribute {name!r}; its modules are {', '.join(MODULES)}"
        )
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what type checkers and IDEs see; nothing is imported at run time
    from jaxgrad import activations as activations
    from jaxgrad import cli as cli
    from jaxgrad import data as data
    from jaxgrad import init as init
    from jaxgrad import inspection as inspection
    from jaxgrad import jacobian as jacobian
    from jaxgrad import model_init as model_init
    from jaxgrad import nn as nn
    from jaxgrad import optim as optim
    from jaxgrad import plot as plot
    from jaxgrad import prng as prng
    from jaxgrad import propagation as propagation
    from jaxgrad import recording as recording
    from jaxgrad import report as report
    from jaxgrad import stats as stats
    from jaxgrad import store as store
    from jaxgrad import sweep as sweep
    from jaxgrad import theory as theory
    from jaxgrad import train as train
    from jaxgrad.inspection import ModelReport as ModelReport
    from jaxgrad.inspection import inspect as inspect
    from jaxgrad.model_init import cure as cure
    from jaxgrad.model_init import fixup as fixup
    from jaxgrad.model_init import lsuv as lsuv
    from jaxgrad.propagation import LayerStats as LayerStats
    from jaxgrad.propagation import mean_square_loss as mean_square_loss
    from jaxgrad.propagation import probe as probe
    from jaxgrad.propagation import propagate as propagate
    from jaxgrad.propagation import random_projection_loss as random_projection_loss
    from jaxgrad.propagation import seed_configs as seed_configs
    from jaxgrad.propagation import seed_experiment as seed_experiment
    from jaxgrad.stats import Diagnosis as Diagnosis
    from jaxgrad.stats import diagnose as diagnose
