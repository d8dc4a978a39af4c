"""Scaling checks: does a network's training stay healthy as it gets wider or deeper?

- `coord_check(make_model, optimizer, batches, widths=..., depths=..., seeds=..., loss_fn=...)`:
  the coordinate check of `mup` for any Flax NNX model factory `make_model(width, depth,
  rngs)` and any Optax chain: a few training steps per width (and depth) and seed, and per
  layer in forward order the mean |x| and rms of each recorded output, its change from step
  0, and each parameter's gradient rms, update rms and update-to-weight ratio
  (`CoordCheck`, `to_frame()` for pandas). One compiled program per shape; seeds vmapped;
  with `out=`, each point is written to a results folder as it is computed and a killed run
  resumes from there. `coord_checks(..., learning_rates=...)` vmaps learning rates too, one
  `CoordCheck` per rate (learning-rate transfer reads their losses).
- `slopes(check, against="width")`: the exponent of each statistic in width (or depth), per
  layer and step, its spread over seeds, and a verdict in words ("stable", "grows as
  width^0.98"); `verdict` states the thresholds (`STABLE_SLOPE`, `NOISY_SPREAD`).
  `jaxgrad.diagnose(table)` (or `jaxgrad.diagnose(check)`) turns them into a verdict: the
  width_scaling and depth_scaling rules, with muP or depth-muP as the cure.
- muP (`base_shapes`, `mup_table`, `scale_by_mup`, `mup_adam`, `mup_sgd`, `MuReadout`,
  `mup_dot_product_attention`) and depth-muP (`depth_multiplier`, and the Adam rule of
  `scale_by_mup` for stacked blocks): the parametrizations under which the check is flat.
- `jaxgrad.plot.coord_check(check)` draws it as mup does; `jaxgrad coord CONFIG.toml` runs
  it from the command line (its points go to `OUT/points`; Ctrl-C or a kill loses at most
  the point being computed, and the same command resumes).

Cost: a check costs, per (width, depth), one compilation and `steps` training steps of all
the seeds at once, each step with one more forward pass than training (the reference for
the change). For a single model at a single size, `jaxgrad.inspect` is the cheaper view.

Example:
    >>> import jax.numpy as jnp, optax
    >>> from flax import nnx
    >>> from jaxgrad import scaling
    >>> def make(width, depth, rngs):
    ...     return nnx.Sequential(nnx.Linear(4, width, rngs=rngs), nnx.relu,
    ...                           scaling.MuReadout(width, 2, base_in_features=16, rngs=rngs))
    >>> base = scaling.base_shapes(make, 16)
    >>> batch = (jnp.ones((8, 4)), jnp.zeros((8, 2)))
    >>> check = scaling.coord_check(
    ...     make, scaling.mup_adam(1e-2, base), batch, widths=[16, 64], seeds=2, steps=2,
    ...     loss_fn=lambda model, b: jnp.mean((model(b[0]) - b[1]) ** 2))
    >>> scaling.slopes(check).get("layers.0", "mean_abs")[1]
    'stable'

References:
    Yang et al. 2022, "Tensor Programs V: Tuning Large Neural Networks via Zero-Shot
    Hyperparameter Transfer". Yang, Yu, Zhu and Hayou 2023, "Tensor Programs VI:
    Feature Learning in Infinite-Depth Neural Networks". Bordelon, Noci, Li, Hanin and
    Pehlevan 2023, "Depthwise Hyperparameter Transfer in Residual Networks".
"""

from jaxgrad.scaling.config import CoordConfig as CoordConfig
from jaxgrad.scaling.coord import MODULE_STATISTICS as MODULE_STATISTICS
from jaxgrad.scaling.coord import PARAM_STATISTICS as PARAM_STATISTICS
from jaxgrad.scaling.coord import STATISTICS as STATISTICS
from jaxgrad.scaling.coord import CoordCheck as CoordCheck
from jaxgrad.scaling.coord import CoordPoint as CoordPoint
from jaxgrad.scaling.coord import coord_check as coord_check
from jaxgrad.scaling.coord import coord_checks as coord_checks
from jaxgrad.scaling.coord import mean_abs as mean_abs
from jaxgrad.scaling.mup import BaseShapes as BaseShapes
from jaxgrad.scaling.mup import MupEntry as MupEntry
from jaxgrad.scaling.mup import MuReadout as MuReadout
from jaxgrad.scaling.mup import base_shapes as base_shapes
from jaxgrad.scaling.mup import depth_multiplier as depth_multiplier
from jaxgrad.scaling.mup import mup_adam as mup_adam
from jaxgrad.scaling.mup import mup_dot_product_attention as mup_dot_product_attention
from jaxgrad.scaling.mup import mup_sgd as mup_sgd
from jaxgrad.scaling.mup import mup_table as mup_table
from jaxgrad.scaling.mup import scale_by_mup as scale_by_mup
from jaxgrad.scaling.slopes import JUDGED as JUDGED
from jaxgrad.scaling.slopes import NOISY_SPREAD as NOISY_SPREAD
from jaxgrad.scaling.slopes import STABLE_SLOPE as STABLE_SLOPE
from jaxgrad.scaling.slopes import Slopes as Slopes
from jaxgrad.scaling.slopes import fit_slope as fit_slope
from jaxgrad.scaling.slopes import slopes as slopes
from jaxgrad.scaling.slopes import verdict as verdict
