"""Statistics every jaxgrad front end shares: robust per-layer reductions (`reductions`),
and the one `diagnose` that judges their results (`diagnosis`).

`probe` and `propagate` (jaxgrad's MLP), `inspect` (any Flax NNX model) and the training
monitor compute their numbers with these functions only, so a norm or a std means the same
thing, and is finite under the same conditions, wherever it is read.
"""

from jaxgrad.stats.diagnosis import BAND as BAND
from jaxgrad.stats.diagnosis import CURE_SIGMA_B2 as CURE_SIGMA_B2
from jaxgrad.stats.diagnosis import DEAD_THRESHOLD as DEAD_THRESHOLD
from jaxgrad.stats.diagnosis import PRECEDENCE as PRECEDENCE
from jaxgrad.stats.diagnosis import RULES as RULES
from jaxgrad.stats.diagnosis import SATURATED_THRESHOLD as SATURATED_THRESHOLD
from jaxgrad.stats.diagnosis import SCALE_HIGH as SCALE_HIGH
from jaxgrad.stats.diagnosis import SCALE_LOW as SCALE_LOW
from jaxgrad.stats.diagnosis import SIGNAL_BAND as SIGNAL_BAND
from jaxgrad.stats.diagnosis import STALL_RATIO as STALL_RATIO
from jaxgrad.stats.diagnosis import VERDICTS as VERDICTS
from jaxgrad.stats.diagnosis import Diagnosis as Diagnosis
from jaxgrad.stats.diagnosis import Finding as Finding
from jaxgrad.stats.diagnosis import Judged as Judged
from jaxgrad.stats.diagnosis import Prescription as Prescription
from jaxgrad.stats.diagnosis import Profile as Profile
from jaxgrad.stats.diagnosis import Profiled as Profiled
from jaxgrad.stats.diagnosis import diagnose as diagnose
from jaxgrad.stats.diagnosis import prescribe_initialization as prescribe_initialization
from jaxgrad.stats.reductions import SATURATION_THRESHOLD as SATURATION_THRESHOLD
from jaxgrad.stats.reductions import Moments as Moments
from jaxgrad.stats.reductions import accumulation_dtype as accumulation_dtype
from jaxgrad.stats.reductions import dead_fraction as dead_fraction
from jaxgrad.stats.reductions import global_norm as global_norm
from jaxgrad.stats.reductions import gram as gram
from jaxgrad.stats.reductions import mean_std as mean_std
from jaxgrad.stats.reductions import moments as moments
from jaxgrad.stats.reductions import moments_and_dead_fraction as moments_and_dead_fraction
from jaxgrad.stats.reductions import norm as norm
from jaxgrad.stats.reductions import pow2_exponent as pow2_exponent
from jaxgrad.stats.reductions import product_norm as product_norm
from jaxgrad.stats.reductions import rms as rms
from jaxgrad.stats.reductions import root_sum_squares as root_sum_squares
from jaxgrad.stats.reductions import saturated_fraction as saturated_fraction
from jaxgrad.stats.reductions import scale_by_pow2 as scale_by_pow2
from jaxgrad.stats.reductions import scaled as scaled
