"""Scaling checks: coordinate checks over width and depth, their slopes and verdicts.

(Module docstring completed below as the package grows.)
"""

from jaxgrad.scaling.coord import MODULE_STATISTICS as MODULE_STATISTICS
from jaxgrad.scaling.coord import PARAM_STATISTICS as PARAM_STATISTICS
from jaxgrad.scaling.coord import STATISTICS as STATISTICS
from jaxgrad.scaling.coord import CoordCheck as CoordCheck
from jaxgrad.scaling.coord import CoordPoint as CoordPoint
from jaxgrad.scaling.coord import coord_check as coord_check
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
from jaxgrad.scaling.slopes import NOISY_SPREAD as NOISY_SPREAD
from jaxgrad.scaling.slopes import STABLE_SLOPE as STABLE_SLOPE
from jaxgrad.scaling.slopes import Slopes as Slopes
from jaxgrad.scaling.slopes import fit_slope as fit_slope
from jaxgrad.scaling.slopes import slopes as slopes
from jaxgrad.scaling.slopes import verdict as verdict
