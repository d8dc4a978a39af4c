"""Per-layer statistics of a training run, recorded inside the user's own jitted step.

- `Recorder`: an NNX module of device buffers; `recorder.value_and_grad(model, batch)` in
  place of `nnx.value_and_grad`, and `recorder.update(model, optimizer, updates)` after
  `nnx.Optimizer.update`, record every k steps what `jaxgrad.inspect` reports of one batch,
  plus the updates, Adam's moments, guard skips and spikes (see `recorder`).
- `History`: a run on the host: `to_frame()` (step, layer in forward order, statistic),
  `first_nonfinite()`, `spikes()` with the statistic that moved first, `profile()` for
  `jaxgrad.diagnose(history)`.
- `RunLog`: the run written as it goes to Parquet parts, resumable (`History.read`).

Cost: see `benchmarks/monitor_overhead.py` and the `recorder` module.

Example:
    What is recorded every step, and on the recorded steps for each parameter row (a full
    training loop is in `Recorder`'s docstring):

    >>> from jaxgrad import recording
    >>> recording.STEP_FIELDS
    ('loss', 'grad_norm', 'update_norm', 'recorded', 'rerun', 'skipped', 'spike')
    >>> recording.UPDATE_FIELDS
    ('update_norm', 'update_ratio', 'first_moment_norm', 'second_moment_norm')
"""

from jaxgrad.recording.history import MOVE_FACTOR as MOVE_FACTOR
from jaxgrad.recording.history import History as History
from jaxgrad.recording.history import NonFinite as NonFinite
from jaxgrad.recording.history import RunLog as RunLog
from jaxgrad.recording.history import Spike as Spike
from jaxgrad.recording.history import debug_nans as debug_nans
from jaxgrad.recording.recorder import STEP_FIELDS as STEP_FIELDS
from jaxgrad.recording.recorder import UPDATE_FIELDS as UPDATE_FIELDS
from jaxgrad.recording.recorder import Recorder as Recorder
from jaxgrad.recording.recorder import RecorderState as RecorderState
