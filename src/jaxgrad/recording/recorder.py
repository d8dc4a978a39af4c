"""The per-layer view of `jaxgrad.inspect`, recorded inside a user's own jitted train step.

A `Recorder` is an NNX module holding fixed-size ring buffers on the device. In the step:

    loss, grads = recorder.value_and_grad(model, batch)   # nnx.value_and_grad's place
    updates = optimizer.update(model, grads)              # nnx.Optimizer, any Optax chain
    recorder.update(model, optimizer, updates)

Every `every` steps `value_and_grad` runs the instrumented pass of `inspect` (module inputs
and outputs, dL/d(output), attention, parameter gradients and weights, one row per layer),
the other steps a plain `jax.value_and_grad` (`jax.lax.cond`: only the branch taken runs).
`update` adds, on the same steps, each parameter's (each layer's) update norm,
update-to-weight ratio and the norms of Adam-family moments found in the optimizer's state,
and, every step, the loss, the global gradient and update norms, whether a
`jaxgrad.optim.guard` skipped the step, and whether any of them spiked above its running
average. A step whose loss or gradient is not finite is measured whatever the step (the
instrumented pass runs again on the same batch, inside the compiled step), so the first
non-finite module is found forward or backward. Nothing leaves the device until the host asks
(`history`, `poll`, `write`): no host synchronization on the steps in between.

Cost (`benchmarks/monitor_overhead.py`: an MLP of 20 layers x 256, a ResNet-style CNN and
a pre-LN transformer with Adam on a CPU, ratios to the plain `nnx.value_and_grad` and
`nnx.Optimizer` step): a recorded step costs 1.2 to 1.4 times a plain one (the activation
statistics of `inspect`, and five passes over the parameters' size for the weight,
gradient, update and moment norms). Recording every 16 steps with the schedule chosen in
Python (`value_and_grad(record=...)`) and `check_every_step=False` costs 1.04 to 1.05
times; the per-step global norms of `check_every_step` add about 0.02 to 0.06 (the updates,
which XLA otherwise fuses into the parameters' update, are written out to take their norm);
a traced schedule (`record=None`) about 0.03 to 0.05 more, since the updates are then an
operand of a conditional. On a CPU a model with convolutions runs its instrumented pass
every step under a traced schedule (`conditional_pass`): XLA's CPU backend runs
convolutions inside a conditional without its fast path (about 35 times slower), so there
a traced schedule costs what recording every step does. Donate the recorder's state to the
jitted step (`nnx.jit(step, donate_argnums=...)`, or `jax.jit` of the split state) so its
buffers are updated in place.

References:
    Glorot and Bengio 2010 (per-layer statistics during training). Wortsman et al. 2023,
    "Small-scale proxies for large-scale Transformer training instabilities" (update norms
    and attention logits before loss spikes). Schneider et al. 2021, "Cockpit: A Practical
    Debugging Tool for the Training of Deep Neural Networks" (instruments in the step).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxgrad import inspection as _inspection
from jaxgrad import stats as _stats
from jaxgrad.inspection import capture as _capture
from jaxgrad.nn import _positive_int
from jaxgrad.optim.monitoring import GuardState, _moments

STEP_FIELDS = ("loss", "grad_norm", "update_norm", "recorded", "rerun", "skipped", "spike")
"""Per-step fields of the step buffer (besides `step`): the loss, the global gradient and
update norms (nan where not measured: `check_every_step` off and the step not recorded,
though a pass that runs every step, `conditional_pass=False`, gives the gradient's), whether the
step was recorded, whether it was recorded again because it was not finite, whether a guard
skipped it, and which of the loss (1), gradient norm (2) and update norm (4) began a spike
there (their sum; 0 for none)."""

UPDATE_FIELDS = ("update_norm", "update_ratio", "first_moment_norm", "second_moment_norm")
"""Per-parameter (per-layer) fields measured from the optimizer's updates and state."""


def update_stats(param_rows: Any, updates: Any, weight_norm: jax.Array, opt_state: Any) -> dict:
    """The `UPDATE_FIELDS` of a recorded row: each parameter row's update norm, its
    update-to-weight ratio (nan where the weight is zero) and the norms of the Adam-family
    moments found in `opt_state` (nan where it holds none; a partitioned optimizer, such as
    `optax.multi_transform` or `optax.contrib.muon`, gives each parameter the moments of the
    partition that updates it). `Recorder.update` and `jaxgrad.train` record them with this
    one function.

    Args:
        param_rows: the `jaxgrad.inspection.ParamRows` of the model.
        updates: the optimizer's updates, shaped like the parameters.
        weight_norm: (rows,) each row's weight norm (a recorded row's `params.weight_norm`).
        opt_state: the optimizer's state, as plain arrays.

    Returns:
        A dict from each of `UPDATE_FIELDS` to a (rows,) float32 array, in row order.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> from flax import nnx
        >>> from jaxgrad.inspection import ParamRows
        >>> from jaxgrad.recording.recorder import update_stats
        >>> layer = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
        >>> param_rows = ParamRows(
        ...     names=("bias", "kernel"), owners=("", ""), shapes=((2,), (3, 2)),
        ...     paths=((("bias",), None), (("kernel",), None)), permutation=(0, 1))
        >>> params = jax.tree.map(jnp.ones_like, nnx.state(layer, nnx.Param))
        >>> updates = jax.tree.map(lambda p: 0.1 * p, params)
        >>> opt_state = optax.adam(0.1).init(params)  # moments still zero
        >>> stats = update_stats(param_rows, updates, param_rows.norms(params), opt_state)
        >>> {name: [round(v, 4) for v in value.tolist()] for name, value in stats.items()}
        ... # doctest: +NORMALIZE_WHITESPACE
        {'update_norm': [0.1414, 0.2449], 'update_ratio': [0.1, 0.1],
         'first_moment_norm': [0.0, 0.0], 'second_moment_norm': [0.0, 0.0]}
    """
    mu, nu = _moments(opt_state, updates)
    update_norm = param_rows.norms(updates).astype(jnp.float32)
    weight = jnp.asarray(weight_norm).astype(jnp.float32)
    nan = jnp.full(update_norm.shape, jnp.nan, jnp.float32)

    def norms(tree):
        return nan if tree is None else param_rows.norms(tree).astype(jnp.float32)

    return {
        "update_norm": update_norm,
        "update_ratio": jnp.where(weight > 0, update_norm / weight, jnp.nan),
        "first_moment_norm": norms(mu),
        "second_moment_norm": norms(nu),
    }


def guard_skips(opt_state: Any) -> jax.Array:
    """How many updates the `jaxgrad.optim.guard`s in `opt_state` have skipped so far.

    A step skipped an update when this count grew over it: compare it before and after
    (`Recorder.update` keeps the last count). The state alone cannot say so: a guard inside
    `optax.MultiSteps` is not called on the steps between its updates, and its state then
    still shows its last decision.

    Args:
        opt_state: an optimizer state (an Optax chain's, or an `nnx.Optimizer`'s
            `opt_state` as plain arrays); without a guard the count is always 0.

    Returns:
        An int32 scalar: the guards' skipped updates, summed.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> from jaxgrad.optim import guard
        >>> from jaxgrad.recording.recorder import guard_skips
        >>> transform = guard(optax.sgd(0.1))
        >>> state = transform.init({"w": jnp.zeros(2)})
        >>> _, state = transform.update({"w": jnp.array([1.0, jnp.nan])}, state)
        >>> int(guard_skips(state))
        1
        >>> _, state = transform.update({"w": jnp.ones(2)}, state)
        >>> int(guard_skips(state))
        1
    """
    guards = [
        node
        for node in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, GuardState))
        if isinstance(node, GuardState)
    ]
    return sum((guard.skipped.astype(jnp.int32) for guard in guards), jnp.zeros((), jnp.int32))


def spike_onsets(
    state: jax.Array,
    step: jax.Array,
    watched: jax.Array,
    *,
    factor: float,
    decay: float,
    warmup: int,
) -> tuple[jax.Array, jax.Array]:
    """Which watched values (loss, gradient norm, update norm) begin a spike, as bits 1,
    2, 4: a value above `factor` times its debiased running average, at a step where it was
    not already above (an excursion is flagged once, at its onset). The averages take every
    finite value, capped at `factor` times the average, so that one outlier cannot hide the
    next spike and a lasting new level is adopted within a few dozen steps. The norms are
    judged after `warmup` steps, the loss from step 1 (a blow-up in the first steps is the
    spike a user most needs to see).

    Args:
        state: (6,) the three running averages, then whether each was above (start: zeros).
        step: the step (the debiasing and the warmup count from it).
        watched: (3,) the step's loss, gradient norm and update norm.
        factor, decay, warmup: as `Recorder`'s spike_factor, spike_decay, spike_warmup
            (`warmup` holds back the norms' spikes only).

    Returns:
        (the bits, as a float; the new state).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad.recording.recorder import spike_onsets
        >>> state = jnp.zeros(6)
        >>> onsets = []
        >>> for step, loss in enumerate([1.0, 1.0, 1.0, 50.0, 60.0]):  # the loss jumps at 3
        ...     bits, state = spike_onsets(state, jnp.asarray(step), jnp.array([loss, 1.0, 1.0]),
        ...                                factor=10.0, decay=0.9, warmup=2)
        ...     onsets.append(int(bits))
        >>> onsets  # flagged once, at the onset (bit 1: the loss)
        [0, 0, 0, 1, 0]
    """
    averages, above_before = state[:3], state[3:] > 0
    debiased = averages / (1 - decay ** jnp.maximum(step, 1).astype(jnp.float32))
    magnitude = jnp.abs(watched)
    finite = jnp.isfinite(magnitude)
    warm = jnp.stack([step >= 1, step >= warmup, step >= warmup])  # the loss from step 1
    above = finite & (magnitude > factor * debiased) & warm
    onset = above & ~above_before
    capped = jnp.where(warm, jnp.minimum(magnitude, factor * debiased), magnitude)
    new = jnp.where(finite, decay * averages + (1 - decay) * capped, averages)
    bits = jnp.sum(jnp.where(onset, jnp.array([1.0, 2.0, 4.0]), 0.0))
    return bits, jnp.concatenate([new, above.astype(jnp.float32)])


class RecorderState(nnx.Variable):
    """The recorder's buffers and counters: not parameters (`nnx.grad` and optimizers over
    `nnx.Param` leave them alone).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxgrad.recording import RecorderState
        >>> buffer = RecorderState(jnp.zeros(3))
        >>> isinstance(buffer, nnx.Param), buffer[...].shape
        (False, (3,))
    """


def _nan_like(tree: Any) -> Any:
    """Floats nan, integers -1 (no step yet), bools False: what an empty row holds."""

    def fill(leaf):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            return jnp.full(leaf.shape, jnp.nan, leaf.dtype)
        if jnp.issubdtype(leaf.dtype, jnp.integer):
            return jnp.full(leaf.shape, -1, leaf.dtype)
        return jnp.zeros(leaf.shape, leaf.dtype)

    return jax.tree.map(fill, tree)


def _write(buffer: Any, slot: jax.Array, row: Any, where: jax.Array | None = None) -> Any:
    """`row` written at `slot` of the ring `buffer` (where `where`, else the slot is kept): a
    dynamic update of one row, in place when the buffer is donated (a conditional around the
    write would pass the whole ring through it)."""

    def put(buf, value):
        value = value.astype(buf.dtype)
        if where is not None:
            value = jnp.where(where, value, jax.lax.dynamic_index_in_dim(buf, slot, 0, False))
        return jax.lax.dynamic_update_index_in_dim(buf, value, slot, 0)

    return jax.tree.map(put, buffer, row)


class _Packing(NamedTuple):
    """How a row (a pytree of small arrays) is laid out as one vector per dtype, so that a
    ring of rows is one array per dtype (static).

    Every array the recorder keeps is an input and an output of the jitted step, and every
    write to one is an operation of its own: a row of a few dozen fields kept field by field
    cost about 0.1 ms a step on a CPU (2% of the step of an MLP of 20 layers x 256); packed,
    a handful of arrays and writes.

    Attributes:
        treedef: the row's structure.
        leaves: per leaf, (its dtype's name, offset in that dtype's vector, shape).
        widths: per dtype name, the vector's length.
    """

    treedef: Any
    leaves: tuple[tuple[str, int, tuple[int, ...]], ...]
    widths: tuple[tuple[str, int], ...]

    @classmethod
    def of(cls, template: Any) -> _Packing:
        flat, treedef = jax.tree.flatten(template)
        widths: dict[str, int] = {}
        leaves = []
        for leaf in flat:
            name = jnp.dtype(leaf.dtype).name
            leaves.append((name, widths.get(name, 0), tuple(leaf.shape)))
            widths[name] = widths.get(name, 0) + math.prod(leaf.shape)
        return cls(treedef, tuple(leaves), tuple(widths.items()))

    def pack(self, row: Any) -> dict[str, jax.Array]:
        """The row as {dtype name: vector} (its leaves cast to their template's dtype)."""
        pieces: dict[str, list[jax.Array]] = {name: [] for name, _ in self.widths}
        for (name, _, _), leaf in zip(self.leaves, self.treedef.flatten_up_to(row), strict=True):
            pieces[name].append(jnp.ravel(jnp.asarray(leaf).astype(name)))
        return {name: jnp.concatenate(pieces[name]) for name, _ in self.widths}

    def unpack(self, packed: Mapping[str, Any]) -> Any:
        """The row (or rows: any leading axes) from `pack`'s vectors, numpy or jax."""
        leaves = []
        for name, offset, shape in self.leaves:
            vector = packed[name]
            lead = vector.shape[:-1]
            leaves.append(vector[..., offset : offset + math.prod(shape)].reshape(*lead, *shape))
        return self.treedef.unflatten(leaves)

    def empty(self, *lead: int) -> dict[str, jax.Array]:
        """Vectors (with leading axes `lead`) of empty rows: see `_nan_like`."""
        return {name: _nan_like(jnp.zeros((*lead, width), name)) for name, width in self.widths}

    def span(self, key: str) -> tuple[str, int, int]:
        """(dtype name, start, stop): where the leaves of the row's top-level field `key` lie
        in the packed vectors (together, in flattening order, when they share one dtype)."""
        indices = jax.tree.leaves(self.treedef.unflatten(range(len(self.leaves)))[key])
        names = {self.leaves[i][0] for i in indices}
        if len(names) != 1:
            raise ValueError(f"the leaves of {key!r} have several dtypes: {sorted(names)}")
        start = offset = self.leaves[indices[0]][1]
        for i in indices:
            if self.leaves[i][1] != offset:
                raise ValueError(f"the leaves of {key!r} do not lie together")
            offset += math.prod(self.leaves[i][2])
        return names.pop(), start, offset


def _has_convolution(graphdef, loss_fn, params, rest, batch) -> bool:
    """Whether the loss's computation holds a convolution, at any depth of its jaxpr (scan,
    cond and custom-derivative bodies included; traced abstractly, no compute)."""

    def loss_of(params):
        return loss_fn(nnx.merge(graphdef, params, rest, copy=True), batch)

    def primitives(jaxpr):
        for equation in jaxpr.eqns:
            yield equation.primitive.name
            for value in equation.params.values():
                for inner in value if isinstance(value, tuple | list) else (value,):
                    inner = getattr(inner, "jaxpr", inner)  # a ClosedJaxpr's Jaxpr
                    if hasattr(inner, "eqns"):
                        yield from primitives(inner)

    closed = jax.make_jaxpr(loss_of)(params)
    return any(name == "conv_general_dilated" for name in primitives(closed.jaxpr))


def _ordered_after(tree: Any, value: Any) -> Any:
    """`tree`, unchanged (each array plus -0.0), but computed from `value`: what reads the
    result runs after whatever computes `value`.

    The recorder's conditionals read the parameters (the one that measures a non-finite
    step again; the one-pass check of the weight norms), and nothing orders them before the
    optimizer's in-place update of the parameters, which reads only the gradients: XLA then
    copies every parameter on every step to keep the conditionals' operands intact (about
    0.1 of an MLP's step on a CPU). The gradients made to depend on everything the recorder
    computed in the step order the two, and the copy goes (an optimization barrier does not
    do it)."""
    # every leaf reduced whole: XLA simplifies a slice of a concatenation to the one piece
    # sliced, which would leave the rest of `value` unordered
    total = jnp.zeros((), jnp.float32)
    for leaf in jax.tree.leaves(value):
        leaf = jnp.asarray(leaf).astype(jnp.float32)
        total = total + jnp.sum(jnp.abs(jnp.where(jnp.isfinite(leaf), leaf, 0.0)))
    negative_zero = -0.0 * jnp.minimum(total, 1.0)  # -0.0 + x is x, for every x
    return jax.tree.map(lambda leaf: leaf + negative_zero.astype(leaf.dtype), tree)


class Recorder(nnx.Module):
    """Records the per-layer statistics of a training run inside the jitted step.

    Args:
        model: the model the step trains (its structure is learned here, abstractly).
        loss_fn: `loss_fn(model, batch) -> scalar`, the loss the step differentiates (see
            `jaxgrad.inspect`).
        batch: an example batch (only its shapes are used).
        every: record the per-layer statistics every this many steps, an int >= 1.
        capacity: recorded rows kept on the device (a ring: read them with `poll` or
            `history` before `capacity` more are recorded).
        step_capacity: per-step rows kept on the device (a ring too).
        modules, activation, saturation_threshold: as for `jaxgrad.inspect`.
        check_every_step: compute the global gradient and update norms every step (two
            passes over the parameters' size), for spikes and for locating a non-finite
            gradient on a step that is not recorded; off, only the loss is watched then.
        spike_factor: a step spikes when its loss, gradient norm or update norm exceeds
            this many times its running average (debiased, decay `spike_decay`), > 1.
        spike_decay: the running averages' decay, in (0, 1).
        spike_warmup: steps before a spike of the gradient or update norm can be declared
            (they move by orders of magnitude in the first steps of a healthy run), >= 0.
            The loss is watched from step 1: a loss `spike_factor` times its average is a
            blow-up even in the first steps (a learning rate far too large).
        conditional_pass: with the schedule traced (`every` > 1 and `value_and_grad`'s
            `record=None`), whether the forward and backward pass runs inside a
            conditional, the instrumented one on recording steps and a plain one between
            them. None (default): yes, except for a model with convolutions on a CPU, where
            XLA runs convolutions inside a conditional without its fast path (a ResNet-style
            CNN's step took about 35 times as long); there the instrumented pass runs every
            step and its rows are kept on the recording steps only, which costs what
            recording every step does. A schedule chosen in Python (`record=True/False`)
            needs neither.

    On a CPU under Linux, XLA's runtime allocates each call's temporary buffer with malloc,
    and a program that holds the recorder's conditional branches needs a larger one: past
    glibc's mmap threshold every step maps fresh pages and pays their page faults (an
    unrecorded step of a 4-block transformer took 31-37 ms instead of 19-20 ms). Start Python
    with MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824 (or preload
    jemalloc or tcmalloc) for long CPU runs.

    Raises:
        TypeError: `model` is not an `nnx.Module`, `loss_fn` is not callable,
            `check_every_step` is not a bool, or `spike_factor`, `spike_decay` or
            `saturation_threshold` is not a real number, or `conditional_pass` is not
            None, True or False.
        ValueError: `every`, `capacity` or `step_capacity` is not an int >= 1,
            `spike_factor` <= 1, `spike_decay` outside (0, 1), `spike_warmup` not an int
            >= 0, or `saturation_threshold` negative or not finite; `modules` and
            `activation` are checked as by `jaxgrad.inspect`.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> from flax import nnx
        >>> from jaxgrad import recording
        >>> model = nnx.Sequential(nnx.Linear(4, 8, rngs=nnx.Rngs(0)), nnx.relu,
        ...                        nnx.Linear(8, 1, rngs=nnx.Rngs(1)))
        >>> def loss_fn(model, batch):
        ...     return jnp.mean((model(batch[0]) - batch[1]) ** 2)
        >>> batch = (jnp.ones((16, 4)), jnp.zeros((16, 1)))
        >>> optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
        >>> recorder = recording.Recorder(model, loss_fn, batch, every=2)
        >>> @nnx.jit
        ... def step(model, optimizer, recorder, batch):
        ...     loss, grads = recorder.value_and_grad(model, batch)
        ...     recorder.update(model, optimizer, optimizer.update(model, grads))
        ...     return loss
        >>> for _ in range(4):
        ...     _ = step(model, optimizer, recorder, batch)
        >>> history = recorder.history()
        >>> history.recorded_steps.tolist(), history.module_names
        ([0, 2], ('layers.0', 'layers.2'))
    """

    def __init__(
        self,
        model: nnx.Module,
        loss_fn: Callable[[nnx.Module, Any], jax.Array],
        batch: Any,
        *,
        every: int = 1,
        capacity: int = 256,
        step_capacity: int = 4096,
        modules: Sequence[str | type[nnx.Module]] | str | type[nnx.Module] | None = None,
        activation: str | Callable[[jax.Array], jax.Array] | None = None,
        saturation_threshold: float = _stats.SATURATION_THRESHOLD,
        check_every_step: bool = True,
        spike_factor: float = 10.0,
        spike_decay: float = 0.99,
        spike_warmup: int = 20,
        conditional_pass: bool | None = None,
    ):
        if not isinstance(model, nnx.Module):
            raise TypeError(f"model must be an nnx.Module, got {type(model).__name__}")
        _inspection._check_loss_fn(loss_fn)
        self.every = _positive_int("every", every)
        self.capacity = _positive_int("capacity", capacity)
        self.step_capacity = _positive_int("step_capacity", step_capacity)
        if not isinstance(check_every_step, bool):
            raise TypeError(f"check_every_step must be True or False, got {check_every_step!r}")
        self.check_every_step = check_every_step
        if conditional_pass is not None and not isinstance(conditional_pass, bool):
            raise TypeError(
                f"conditional_pass must be None (chosen by the model and the backend), True "
                f"or False, got {conditional_pass!r}"
            )
        spike_factor = float(_inspection._nonnegative("spike_factor", spike_factor))
        if not spike_factor > 1:
            raise ValueError(f"spike_factor must be > 1, got {spike_factor}")
        spike_decay = float(_inspection._nonnegative("spike_decay", spike_decay))
        if not 0 < spike_decay < 1:
            raise ValueError(f"spike_decay must be in (0, 1), got {spike_decay}")
        if isinstance(spike_warmup, bool) or not isinstance(spike_warmup, int) or spike_warmup < 0:
            raise ValueError(f"spike_warmup must be an int >= 0, got {spike_warmup!r}")
        self.spike_factor, self.spike_decay, self.spike_warmup = (
            spike_factor,
            spike_decay,
            spike_warmup,
        )
        threshold = _inspection._nonnegative("saturation_threshold", saturation_threshold)
        self.loss_fn = loss_fn
        self.spec = _inspection._spec(model, modules, activation, threshold)
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        self.layout = _inspection.learn_layout(graphdef, loss_fn, self.spec, params, rest, batch)
        if conditional_pass is None:
            conditional_pass = not (
                jax.default_backend() == "cpu"
                and _has_convolution(graphdef, loss_fn, params, rest, batch)
            )
        self.conditional_pass = conditional_pass
        rows = _capture.rows(self.layout)
        self.param_rows = _inspection.param_rows_of(self.layout, rows, params)
        self.module_names = tuple(row.name for row in rows)
        self.module_types = tuple(row.module_type for row in rows)
        self.activation = (
            None if self.spec.activation is None else _inspection._act.name_of(self.spec.activation)
        )
        template = jax.eval_shape(self._measured_row, graphdef, params, rest, batch)
        template = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), template)
        n_params = len(self.param_rows.names)
        update_row = {name: jnp.zeros((n_params,), jnp.float32) for name in UPDATE_FIELDS}
        row = {"step": jnp.zeros((), jnp.int32), **template, "updates": update_row}
        step_row = {"step": jnp.zeros((), jnp.int32)}
        step_row |= {name: jnp.zeros((), jnp.float32) for name in STEP_FIELDS}
        # rows are packed, one vector per dtype (`_Packing`): a ring is an array per dtype
        self.row_packing = _Packing.of(row)
        self.step_packing = _Packing.of(step_row)
        self.count = RecorderState(jnp.zeros((), jnp.int32))
        self.recorded = RecorderState(jnp.zeros((), jnp.int32))
        self.rows = RecorderState(self.row_packing.empty(self.capacity))
        self.steps = RecorderState(self.step_packing.empty(self.step_capacity))
        self.pending = RecorderState(self.row_packing.empty())
        self.pending_step = RecorderState(self.step_packing.empty())
        self.averages = RecorderState(jnp.zeros((6,), jnp.float32))  # averages, above
        # set by value_and_grad, read and reset by update inside the step; always None
        # between steps, so the recorder's graph (nnx.jit's cache key) stays the same
        self._scheduled: bool | None = None
        # True from value_and_grad to update (the step is open); False between steps
        self._open = False
        self.guard_skips = RecorderState(jnp.zeros((), jnp.int32))  # as of the last step

    # ------------------------------------------------------------------ in the step

    def _measured_row(self, graphdef, params, rest, batch):
        _, _, _, report = _inspection.measure(
            graphdef, self.loss_fn, self.spec, params, rest, batch, self.layout
        )
        return {"loss": report.loss, "modules": report.modules, "params": report.params}

    def value_and_grad(
        self, model: nnx.Module, batch: Any, *, record: bool | None = None
    ) -> tuple[jax.Array, nnx.State]:
        """`nnx.value_and_grad(loss_fn)(model, batch)`, recording on the recording steps.

        Call it inside the jitted train step, once per step, then `update`. The model's state
        other than its parameters (batch-norm statistics, RNG counters) is updated as
        `nnx.value_and_grad` would.

        Args:
            model: the model being trained.
            batch: this step's batch.
            record: None (default): record on the steps that `every` picks, decided inside
                the compiled step by a `jax.lax.cond` around the forward and backward pass
                (with `every=1`, or `conditional_pass=False`, no conditional). True or
                False: decided here, in Python; pass it as a static argument of the jitted
                step (`nnx.jit(step, static_argnames="record")`, called with
                `record=step % k == 0`: two compiled programs). The Python form is the
                cheaper one for every model: no conditional around the pass, and none over
                the optimizer's updates, which XLA can then fuse into the parameters' update
                instead of writing them out (`benchmarks/monitor_overhead.py`). A non-finite
                step that is not recorded is still measured (inside a conditional that runs
                only then); with `record=False` that row has no update statistics (nan).

        Returns:
            (loss, gradients): the gradients an `nnx.State` of the parameters, what
            `nnx.Optimizer.update` takes.

        Raises:
            TypeError: `record` is not None, True or False.
            ValueError: the step before did not call `update`, or this one calls
                `value_and_grad` twice (a step's numbers would shift silently).
        """
        if record is not None and not isinstance(record, bool | np.bool_):
            raise TypeError(
                f"record must be None (the schedule of every=), True or False, got {record!r}; "
                "a traced value cannot choose the program: leave it None and set every="
            )
        if self._open:
            raise ValueError(
                "recorder.value_and_grad was called again before recorder.update closed the "
                "step: call value_and_grad, then update, once per step (this step calls "
                "value_and_grad twice, or the one before did not call update). To accumulate "
                "gradients, wrap the optimizer in optax.MultiSteps and record every micro-step"
            )
        self._open = True
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        loss_fn, spec, layout = self.loss_fn, self.spec, self.layout
        template = self.row_packing.unpack(self.row_packing.empty())  # constants

        def recorded(params, rest):
            loss, grads, new_rest, report = _inspection.measure(
                graphdef, loss_fn, spec, params, rest, batch, layout
            )
            row = {"loss": report.loss, "modules": report.modules, "params": report.params}
            return loss, grads, new_rest, row

        def plain(params, rest):
            def loss_of(params):
                copy = nnx.merge(graphdef, params, rest, copy=True)
                loss = loss_fn(copy, batch)
                return loss, nnx.split(copy, nnx.Param, ...)[2]

            (loss, new_rest), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
            empty = {key: template[key] for key in ("loss", "modules", "params")}
            return loss, grads, new_rest, empty

        check_every_step = self.check_every_step

        def global_grad_norm(grads):
            return _stats.global_norm(grads, one_pass=True).astype(jnp.float32)

        step = self.count[...]
        packing = self.row_packing

        def pending_of(row):
            # the row packed inside the branch that made it: a conditional then passes a
            # vector per dtype, not every field of the row
            return packing.pack({**template, **row, "step": step})

        def measured(params, rest):
            loss, grads, new_rest, row = recorded(params, rest)
            # the global norm of a recorded step from its rows (a norm of the rows' norms,
            # equal up to rounding): no second pass over the gradients
            grad_norm = _stats.norm(row["params"].grad_norm).astype(jnp.float32)
            return loss, grads, new_rest, pending_of(row), grad_norm, jnp.zeros((), bool)

        def unmeasured(params, rest):
            loss, grads, new_rest, row = plain(params, rest)
            bad = ~jnp.isfinite(loss)
            grad_norm = jnp.full((), jnp.nan, jnp.float32)
            if check_every_step:
                grad_norm = global_grad_norm(grads)
                bad = bad | ~jnp.isfinite(grad_norm)
            else:
                # one entry of the gradients (free): the conditional below then waits for the
                # backward pass; placed between the forward and the backward pass, where the
                # loss alone lets XLA put it, it made a transformer's every step 1.3x slower
                first = jax.tree.leaves(grads)[0]
                bad = bad | ~jnp.isfinite(jnp.ravel(first)[0] if first.size else 0.0)
            # A step that is not finite is measured again here, inside this branch: the
            # parameters are then read by one conditional only, which the optimizer's
            # in-place update follows (a second conditional reading them beside the update
            # made XLA copy every parameter on every step).
            pending = jax.lax.cond(
                bad, lambda: pending_of(recorded(params, rest)[3]), lambda: pending_of(row)
            )
            if not check_every_step:
                rows_norms = packing.unpack(pending)["params"].grad_norm
                global_norm = _stats.norm(rows_norms).astype(jnp.float32)
                grad_norm = jnp.where(bad, global_norm, grad_norm)
            return loss, grads, new_rest, pending, grad_norm, bad

        if record is None and self.every == 1:
            record = True
        if record is None and self.conditional_pass:
            now = step % self.every == 0
            loss, grads, new_rest, pending, grad_norm, rerun = jax.lax.cond(
                now, measured, unmeasured, params, rest
            )
        else:
            if record is None:
                # the instrumented pass every step, its row kept on the recording steps and
                # on a step that is not finite (which it has measured already)
                now = step % self.every == 0
                loss, grads, new_rest, pending, grad_norm, _ = measured(params, rest)
                rerun = ~now & ~(jnp.isfinite(loss) & jnp.isfinite(grad_norm))
            else:
                now = jnp.asarray(bool(record))
                branch = measured if record else unmeasured
                loss, grads, new_rest, pending, grad_norm, rerun = branch(params, rest)
            # outside a conditional, the optimizer's in-place update must be ordered after
            # the recorder's reads of the parameters (inside one, its outputs order it)
            grads = _ordered_after(grads, pending)
        # what `update` needs to know in Python: whether this step's recording is decided
        # here (True or False) or inside the compiled step (None); `update` resets it
        self._scheduled = None if record is None else bool(record)
        nnx.update(model, new_rest)
        self.pending.set_value(pending)
        step_row = self.step_packing.unpack(self.step_packing.empty())
        step_row.update(
            step=step,
            loss=loss.astype(jnp.float32),
            grad_norm=grad_norm,
            recorded=(now | rerun).astype(jnp.float32),
            rerun=rerun.astype(jnp.float32),
        )
        self.pending_step.set_value(self.step_packing.pack(step_row))
        return loss, grads

    def update(self, model: nnx.Module, optimizer: nnx.Optimizer, updates: Any) -> None:
        """Record the step's updates and close the step: call it after
        `updates = optimizer.update(model, grads)`, inside the jitted step.

        Args:
            model: the model, after the update.
            optimizer: the `nnx.Optimizer` (its state is searched for Adam-family moments
                and for `jaxgrad.optim.guard` states).
            updates: what `optimizer.update` returned.

        Raises:
            ValueError: `value_and_grad` was not called in this step before it.
        """
        if not self._open:
            raise ValueError(
                "recorder.update closes a step that recorder.value_and_grad opened: call "
                "value_and_grad, then update, once per step"
            )
        self._open = False
        step_row = dict(self.step_packing.unpack(self.pending_step.get_value()))
        measured = step_row["recorded"] > 0
        param_rows = self.param_rows
        opt_state = nnx.as_pure(optimizer.opt_state)
        pending = dict(self.pending.get_value())
        weight_norm = self.row_packing.unpack(pending)["params"].weight_norm
        dtype, start, stop = self.row_packing.span("updates")

        check_every_step = self.check_every_step

        def measure(_):
            stats = update_stats(param_rows, updates, weight_norm, opt_state)
            # the global norm from the rows' norms (equal up to rounding): no second pass
            packed = jnp.concatenate([jnp.ravel(v) for v in jax.tree.leaves(stats)]).astype(dtype)
            return packed, _stats.norm(stats["update_norm"]).astype(jnp.float32)

        def skip(_):
            update_norm = jnp.full((), jnp.nan, jnp.float32)
            if check_every_step:
                update_norm = _stats.global_norm(updates, one_pass=True).astype(jnp.float32)
            return pending[dtype][start:stop], update_norm

        # Only the update fields pass through the conditional and are written into the row.
        # Decided in Python (`record=` of value_and_grad), there is no conditional: one whose
        # operand is the updates makes XLA write them out instead of fusing them into the
        # parameters' update. A step measured again because it was not finite then has no
        # update statistics (nan).
        scheduled, self._scheduled = self._scheduled, None
        if scheduled is None:
            packed, update_norm = jax.lax.cond(measured, measure, skip, None)
        else:
            packed, update_norm = (measure if scheduled else skip)(None)
        pending[dtype] = jax.lax.dynamic_update_slice(pending[dtype], packed, (start,))
        skips = guard_skips(opt_state)
        skipped = skips > self.guard_skips[...]
        self.guard_skips[...] = skips
        watched = jnp.stack([step_row["loss"], step_row["grad_norm"], update_norm])
        spike, averages = self._spike(step_row["step"], watched)
        step_row.update(update_norm=update_norm, skipped=skipped.astype(jnp.float32))
        step_row["spike"] = spike
        self.averages.set_value(averages)
        slot = step_row["step"] % self.step_capacity
        self.steps.set_value(_write(self.steps.get_value(), slot, self.step_packing.pack(step_row)))

        slot = self.recorded[...] % self.capacity
        self.rows.set_value(_write(self.rows.get_value(), slot, pending, where=measured))
        self.recorded[...] = self.recorded[...] + measured.astype(jnp.int32)
        self.count[...] = self.count[...] + 1

    def _spike(self, step: jax.Array, watched: jax.Array) -> tuple[jax.Array, jax.Array]:
        return spike_onsets(
            self.averages.get_value(),
            step,
            watched,
            factor=self.spike_factor,
            decay=self.spike_decay,
            warmup=self.spike_warmup,
        )

    # ------------------------------------------------------------------ on the host

    def history(self) -> Any:
        """Everything still in the buffers, as a `History` (brings them to the host: a
        synchronization; call it between steps, not in them)."""
        from jaxgrad.recording.history import History

        rows, steps = jax.device_get((self.rows.get_value(), self.steps.get_value()))
        return History.from_buffers(
            self, self.row_packing.unpack(rows), self.step_packing.unpack(steps)
        )

    def __repr__(self) -> str:
        return (
            f"Recorder(every={self.every}, capacity={self.capacity}, "
            f"{len(self.module_names)} calls, {len(self.param_rows.names)} parameter rows)"
        )

    __str__ = __repr__  # nnx's own str lists every buffer and the layout


__all__ = [
    "STEP_FIELDS",
    "UPDATE_FIELDS",
    "Recorder",
    "RecorderState",
    "guard_skips",
    "spike_onsets",
    "update_stats",
]
