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
from jaxgrad.scaling.slopes import NOISY_SPREAD as NOISY_SPREAD
from jaxgrad.scaling.slopes import STABLE_SLOPE as STABLE_SLOPE
from jaxgrad.scaling.slopes import Slopes as Slopes
from jaxgrad.scaling.slopes import fit_slope as fit_slope
from jaxgrad.scaling.slopes import slopes as slopes
from jaxgrad.scaling.slopes import verdict as verdict
