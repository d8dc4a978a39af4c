"""Training Flax NNX models with any Optax chain, in one compiled program, while watching the
gradient of every layer.

`train(model, tx, data, steps=...)` runs the whole training, every step and every evaluation,
as one jitted `jax.lax.scan`, updates the model in place and returns a `History`: loss,
accuracy, the global gradient and update norms and the gradient norm of each layer (in
forward order) at every step, test loss and accuracy at every evaluation, and every
`record_every` steps the whole per-layer view of `jaxgrad.recording`: what
`jaxgrad.inspect` reports of the step's batch (module inputs, outputs and dL/d(output),
parameter gradients and weights) and each layer's update norm and update-to-weight ratio,
measured by the same functions as a `recording.Recorder` in your own train step, so
`History.recording()`, `History.to_frame()` and `jaxgrad.diagnose(history)` read it as a
recorded run. A loss that turns inf or nan is a result, not an error: training goes on,
`History.first_nonfinite_step` says when it happened, and the first non-finite step is
measured whatever the schedule, so `history.recording().first_nonfinite()` names the module.

Cost: a recorded step costs about what `jaxgrad.inspect` does (an instrumented forward and
backward pass, and a forward pass for the accuracy); the others a plain step and one pass
over the gradients and one over the updates for their norms.

`train_many(model_fn, optimizer_fn, data, seeds=..., hyperparams=...)` trains a whole grid of
seeds and continuous hyperparameters (sigma_w2, learning rate, ...) as one vmapped program; its
results equal separate `train` runs.

`pretrain_layerwise(model, x)` is greedy layer-wise pre-training with autoencoders (Bengio et
al. 2007): each hidden layer in turn learns to reconstruct its input, then the whole network
is fine-tuned with `train`.

Example:
    >>> import jax, optax
    >>> from flax import nnx
    >>> from jaxgrad import data, nn, train
    >>> digits = data.digits()
    >>> model = nn.MLP(64, 64, depth=4, out_features=10, activation="relu", rngs=nnx.Rngs(0))
    >>> history = train.train(model, optax.adam(1e-3), digits, steps=200, key=jax.random.key(0))
    >>> bool(history.test_accuracy[-1] > 0.8)
    True

References:
    Bengio, Lamblin, Popovici and Larochelle 2007, "Greedy Layer-Wise Training of Deep
    Networks". Hinton, Osindero and Teh 2006, "A fast learning algorithm for deep belief nets".
    Glorot and Bengio 2010 (per-layer gradient norms during training).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxgrad import data as _data
from jaxgrad import init as _init
from jaxgrad import inspection as _inspection
from jaxgrad import nn as _nn
from jaxgrad import prng as _prng
from jaxgrad import recording as _recording
from jaxgrad import stats as _stats
from jaxgrad.inspection import capture as _capture
from jaxgrad.nn import _positive_int
from jaxgrad.recording import recorder as _recorder

# ----------------------------------------------------------------------------- results


class Layers(NamedTuple):
    """The names behind a `History`'s per-layer arrays (static: known before training).

    Attributes:
        module_names, module_types: the recorded module calls, in forward order (as
            `jaxgrad.inspect` names them).
        param_rows: the `jaxgrad.inspection.ParamRows`: one row per parameter, or per layer
            of a stacked one, in forward order.
        activation: the activation behind the saturated fractions, or None.
        layers: the parameter rows that are layers (`inspection.weight_rows`), in forward
            order: the columns of `History.layer_grad_norms`.
        names: their names (the weight's path without its last part, ".kernel").

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> from flax import nnx
        >>> from jaxgrad import data, nn, train
        >>> x = jax.random.normal(jax.random.key(0), (64, 4))
        >>> y = (x[:, 0] > 0).astype(jnp.int32)  # the sign of the first feature
        >>> split = data.Dataset(x[:48], y[:48], x[48:], y[48:])
        >>> model = nn.MLP(4, 8, depth=2, out_features=2, rngs=nnx.Rngs(0))
        >>> history = train.train(model, optax.sgd(0.1), split, steps=4, batch_size=16,
        ...                       key=jax.random.key(1))
        >>> history.layers.names
        ('input_layer', 'blocks[0].linear', 'blocks[1].linear', 'readout')
        >>> [history.layers.param_rows.names[row] for row in history.layers.layers]
        ['input_layer.kernel', 'blocks[0].linear.kernel', 'blocks[1].linear.kernel',
         'readout.kernel']
    """

    module_names: tuple[str, ...]
    module_types: tuple[str, ...]
    param_rows: _inspection.ParamRows
    activation: str | None
    layers: tuple[int, ...]
    names: tuple[str, ...]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class History:
    """What happened during training (a pytree of arrays: it jits, vmaps and `device_get`s).
    With `train_many`, every array has the grid's leading axes in front; `history[i, j]` is
    one run.

    Attributes:
        loss: (steps,) training loss of each step's batch, before that step's update.
        accuracy: (steps,) accuracy on that batch (nan for regression).
        grad_norm: (steps,) global norm of the gradient of all parameters.
        update_norm: (steps,) global norm of the optimizer's update.
        layer_grad_norms: (steps, layers) Frobenius norm of the gradient of each layer's
            kernel (a stacked kernel: each layer's slice), in the order of
            `layer_names(model)`, forward order.
        eval_step: (evals,) the step after which each evaluation was taken (0: at init).
        test_loss: (evals,) loss on the whole test set.
        test_accuracy: (evals,) accuracy on the whole test set (nan for regression).
        first_nonfinite_step: () the first step whose loss or gradient was inf or nan, -1 if
            none was.
        recorded: (steps,) whether the step's per-layer view was recorded (every
            `record_every` steps, and the first non-finite step).
        rerun: (steps,) whether it was recorded because it was not finite.
        skipped: (steps,) whether a `jaxgrad.optim.guard` in the chain skipped the step.
        spike: (steps,) which of the loss (1), gradient norm (2) and update norm (4) began a
            spike there (their sum), by the rule and defaults of `recording.Recorder`.
        rows: the recorded rows, as a `Recorder` buffers them: "step" (-1 for a row not
            written), "loss", "modules" (`ModuleStats`), "params" (`ParamStats`), "updates"
            (each of `recording.UPDATE_FIELDS`); read them with `recording()`.
        layers: their names (`Layers`).

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> from flax import nnx
        >>> from jaxgrad import data, nn, train
        >>> x = jax.random.normal(jax.random.key(0), (64, 4))
        >>> y = (x[:, 0] > 0).astype(jnp.int32)  # the sign of the first feature
        >>> split = data.Dataset(x[:48], y[:48], x[48:], y[48:])
        >>> model = nn.MLP(4, 8, depth=2, out_features=2, rngs=nnx.Rngs(0))
        >>> history = train.train(model, optax.sgd(0.1), split, steps=8, batch_size=16,
        ...                       eval_every=4, key=jax.random.key(1))
        >>> history.loss.shape, history.layer_grad_norms.shape, history.eval_step.tolist()
        ((8,), (8, 4), [0, 4, 8])
        >>> int(history.first_nonfinite_step), history.grid_shape
        (-1, ())
        >>> history.recording().recorded_steps.tolist()  # every step (steps // 100 < 1)
        [0, 1, 2, 3, 4, 5, 6, 7]
    """

    loss: jax.Array
    accuracy: jax.Array
    grad_norm: jax.Array
    update_norm: jax.Array
    layer_grad_norms: jax.Array
    eval_step: jax.Array
    test_loss: jax.Array
    test_accuracy: jax.Array
    first_nonfinite_step: jax.Array
    recorded: jax.Array
    rerun: jax.Array
    skipped: jax.Array
    spike: jax.Array
    rows: dict
    layers: Layers = dataclasses.field(metadata={"static": True})

    @property
    def layer_names(self) -> tuple[str, ...]:
        """The names of the columns of `layer_grad_norms`, in forward order."""
        return self.layers.names

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """The leading axes of a `train_many` grid; () for one run."""
        return tuple(self.loss.shape[:-1])

    def __getitem__(self, index: Any) -> History:
        """One run (or a slice of runs) of a `train_many` grid: every array indexed."""
        if not self.grid_shape:
            raise IndexError("this History holds one run; index the runs of a train_many grid")
        return jax.tree.map(lambda array: array[index], self)

    def recording(self) -> _recording.History:
        """This run as a `jaxgrad.recording.History`, on the host: `to_frame()`,
        `first_nonfinite()`, `spikes()`, `profile()` and the `plot.run_*` figures read it as
        they read a run recorded by a `Recorder`.

        Raises:
            ValueError: for a `train_many` grid (pick one run first: `history[i, j]`).
        """
        if self.grid_shape:
            raise ValueError(
                f"this History holds a grid of runs with leading axes {self.grid_shape}; "
                "pick one run first, e.g. history[0] or history[i, j]"
            )
        if not self.rows:
            raise ValueError(
                "this run recorded no per-layer view (train_many records none unless given "
                "record_every); train again with record_every=k"
            )
        host = jax.device_get(self)
        steps = {
            "step": np.arange(host.loss.shape[0], dtype=np.int32),
            "loss": host.loss,
            "grad_norm": host.grad_norm,
            "update_norm": host.update_norm,
            "recorded": host.recorded,
            "rerun": host.rerun,
            "skipped": host.skipped,
            "spike": host.spike,
        }
        steps = {name: np.asarray(steps[name], np.float32) for name in _recorder.STEP_FIELDS}
        steps["step"] = np.arange(host.loss.shape[0], dtype=np.int32)
        # from_buffers reads the names off the Layers as off a Recorder
        return _recording.History.from_buffers(self.layers, host.rows, steps)

    def to_frame(self) -> Any:
        """The recorded rows as a tidy table: step, kind, name, order (forward), statistic,
        value (`recording.History.to_frame`)."""
        return self.recording().to_frame()

    def profile(self, step: int | None = None, **known: Any) -> _stats.Profile:
        """The `jaxgrad.stats.Profile` of a recorded step, for `jaxgrad.diagnose(history)`
        (`recording.History.profile`: by default the first non-finite recorded step, else
        the last)."""
        return self.recording().profile(step, **known)


# ----------------------------------------------------------------------------- validation


def _check_data(data: Any) -> _data.Dataset:
    fields = _data.Dataset._fields
    if not all(hasattr(data, field) for field in fields):
        raise TypeError(
            f"data must have x_train, y_train, x_test, y_test (a jaxgrad.data.Dataset), "
            f"got {type(data).__name__}"
        )
    values = []
    for field in fields:
        value = getattr(data, field)
        try:
            values.append(jnp.asarray(value))
        except TypeError:
            dtype = getattr(value, "dtype", type(value).__name__)
            raise TypeError(
                f"data.{field} must be a numeric array (targets: integer class labels or "
                f"float regression targets), got {dtype}"
            ) from None
    arrays = _data.Dataset(*values)
    for split in ("train", "test"):
        x, y = getattr(arrays, f"x_{split}"), getattr(arrays, f"y_{split}")
        if x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise ValueError(
                f"x_{split} and y_{split} must hold the same non-zero number of examples, "
                f"got {x.shape[0]} and {y.shape[0]}"
            )
    if arrays.y_train.dtype != arrays.y_test.dtype:
        raise TypeError(
            f"y_train and y_test must share a dtype, got {arrays.y_train.dtype} and "
            f"{arrays.y_test.dtype}"
        )
    return arrays


def _check_targets(model: nnx.Module, arrays: _data.Dataset) -> None:
    """Check the targets against the model's output, before anything is compiled.

    Integer targets are class labels for the model's logits: every label of both splits
    must be in [0, classes), classes the size of the output's last axis (optax's cross
    entropy would take -1 as the last class and give nan beyond it). Float targets must
    have one value per output entry. The output's shape comes from `jax.eval_shape` (no
    compute); the labels' range is read on the host.
    """
    graphdef, state = nnx.split(model)
    x = arrays.x_test[:1]
    try:
        output = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state, x)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"the model cannot be applied to the data's inputs of shape "
            f"{tuple(arrays.x_test.shape[1:])} per example: {error}"
        ) from None
    if jnp.issubdtype(arrays.y_train.dtype, jnp.integer):
        classes = output.shape[-1] if output.ndim else 1
        for split in ("train", "test"):
            labels = np.asarray(getattr(arrays, f"y_{split}"))
            if labels.ndim != 1:
                raise ValueError(
                    f"integer targets are class labels, one per example; y_{split} has shape "
                    f"{labels.shape}"
                )
            low, high = int(labels.min()), int(labels.max())
            if low < 0 or high >= classes:
                bad = low if low < 0 else high
                raise ValueError(
                    f"y_{split} holds the label {bad}, but the model outputs {classes} logits, "
                    f"so labels must be in [0, {classes - 1}]"
                )
    elif jnp.issubdtype(arrays.y_train.dtype, jnp.floating):
        per_example = math.prod(output.shape[1:])
        for split in ("train", "test"):
            y = getattr(arrays, f"y_{split}")
            if math.prod(y.shape[1:]) != per_example:
                raise ValueError(
                    f"float targets are regression targets, one per output entry: the model "
                    f"outputs {tuple(output.shape[1:])} per example, y_{split} holds "
                    f"{tuple(y.shape[1:])}"
                )
    else:
        raise TypeError(
            f"targets must be integer class labels or float regression targets, got dtype "
            f"{arrays.y_train.dtype}"
        )


def _check_transformation(tx: object) -> optax.GradientTransformation:
    if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
        raise TypeError(
            f"tx must be an optax.GradientTransformation (e.g. optax.sgd(0.1) or "
            f"jaxgrad.optim.make_optimizer('adam', 1e-3)), got {tx!r}"
        )
    return tx


def _check_schedule(steps: int, batch_size: int, eval_every: int | None, n_train: int):
    steps = _positive_int("steps", steps)
    batch_size = _positive_int("batch_size", batch_size)
    if batch_size > n_train:
        raise ValueError(f"batch_size must be <= the {n_train} training examples, got {batch_size}")
    eval_every = steps if eval_every is None else _positive_int("eval_every", eval_every)
    if steps % eval_every:
        raise ValueError(f"eval_every must divide steps ({steps}), got {eval_every}")
    return steps, batch_size, eval_every


# ----------------------------------------------------------------------------- layers


def _example_input(model: nnx.Module) -> jax.ShapeDtypeStruct:
    """An input batch of one example for jaxgrad's own models, which know their input size."""
    if isinstance(model, _nn.RNN):
        return jax.ShapeDtypeStruct((1, 1, model.in_features), jnp.float32)
    if isinstance(model, _nn.MLP | _nn.ResidualMLP):
        return jax.ShapeDtypeStruct((1, model.in_features), jnp.float32)
    raise TypeError(
        f"layer_names needs x, an example input batch, for a {type(model).__name__}: the "
        "layers are ordered as the model calls them, which only a forward pass shows"
    )


def _mean_output(model: nnx.Module, x: jax.Array) -> jax.Array:
    return jnp.mean(jnp.asarray(model(x), jnp.float32))


def _learn_layers(model: nnx.Module, loss_fn: Callable, batch: Any) -> tuple[Any, Any, Layers]:
    """What `loss_fn(model, batch)` calls, from an abstract pass (no compute; the model and
    the batch may be abstract): (inspection spec, capture layout, `Layers`)."""
    spec = _inspection._spec(model, None, None, _stats.SATURATION_THRESHOLD)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    learned = {}

    def plan(params, rest, batch):
        learned["layout"] = _inspection.learn_layout(graphdef, loss_fn, spec, params, rest, batch)
        return jnp.zeros(())

    jax.eval_shape(plan, params, rest, batch)
    layout = learned["layout"]
    rows = _capture.rows(layout)
    param_rows = _inspection.param_rows_of(layout, rows, params)
    called = tuple(row.name for row in rows)
    chosen = _inspection.weight_rows(called, param_rows.names, param_rows.owners, param_rows.shapes)
    # and a kernel its module does not call but uses directly (an RNN's recurrent kernel)
    uncalled = [
        index
        for index, (name, owner) in enumerate(zip(param_rows.names, param_rows.owners, strict=True))
        if owner not in called and _inspection.is_named_weight(name)
    ]
    layers = sorted({param for _, param in chosen} | set(uncalled))
    names = [param_rows.names[i].rpartition(".")[0] or param_rows.names[i] for i in layers]
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no layer with weights to watch (a parameter named "
            "'kernel' or 'embedding', or of two or more axes, owned by a module it calls)"
        )
    activation = None if spec.activation is None else _inspection._act.name_of(spec.activation)
    return (
        spec,
        layout,
        Layers(
            module_names=tuple(row.name for row in rows),
            module_types=tuple(row.module_type for row in rows),
            param_rows=param_rows,
            activation=activation,
            layers=tuple(layers),
            names=tuple(names),
        ),
    )


def layer_names(model: nnx.Module, x: Any = None, *, all_modules: bool = False) -> list[str]:
    """The names of the layers whose gradient norms `History.layer_grad_norms` holds, in
    forward order (or, with `all_modules`, of every module call `jaxgrad.inspect` records).

    A layer is a parameter named `kernel` (the weights of `nnx.Linear` and `nnx.Conv`) or
    `embedding`, one per layer of a stack applied with `jax.lax.scan` or `nnx.scan`
    ("blocks[3].linear"), named by its path without ".kernel". Forward order is the order in
    which the model first calls the layers' modules (learned as `jaxgrad.inspect` learns it,
    from an abstract pass: nothing is computed); kernels the model uses without calling
    their module come last, in the model's order.

    Args:
        model: any Flax NNX model (an abstract one from `nnx.eval_shape` will do).
        x: an example input batch (only its shape and dtype are read); may be omitted for
            jaxgrad's own `MLP`, `ResidualMLP` and `RNN`, which know their input size.
        all_modules: every module call `inspect` records, norm layers and attention among
            them, not only the layers with weights: the order
            `optim.MonitorState.to_frame(order=...)` needs to place every parameter.

    Returns:
        The layers' (the modules') names, in forward order.

    Raises:
        TypeError: `model` is not an NNX module, or `x` is omitted for a model that does
            not know its input size.
        ValueError: the model has no layer with weights (`inspection.weight_rows`).

    Example:
        >>> from flax import nnx
        >>> from jaxgrad import nn, train
        >>> train.layer_names(nn.MLP(4, 8, depth=2, out_features=3, rngs=nnx.Rngs(0)))
        ['input_layer', 'blocks[0].linear', 'blocks[1].linear', 'readout']
        >>> import jax.numpy as jnp
        >>> rngs = nnx.Rngs(0)
        >>> model = nnx.Sequential(nnx.Linear(4, 8, rngs=rngs), nnx.LayerNorm(8, rngs=rngs),
        ...                        nnx.Linear(8, 3, rngs=rngs))
        >>> x = jnp.ones((2, 4))
        >>> train.layer_names(model, x), train.layer_names(model, x, all_modules=True)
        (['layers.0', 'layers.2'], ['layers.0', 'layers.1', 'layers.2'])
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a Flax NNX module, got {type(model).__name__}")
    if not isinstance(all_modules, bool):
        raise TypeError(f"all_modules must be a bool, got {all_modules!r}")
    x = _example_input(model) if x is None else x
    shaped = jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))
    layers = _learn_layers(model, _mean_output, shaped)[2]
    return list(layers.module_names if all_modules else layers.names)


# ----------------------------------------------------------------------------- the loop


def _loss_and_accuracy(output: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    if jnp.issubdtype(y.dtype, jnp.integer):
        loss = optax.softmax_cross_entropy_with_integer_labels(output, y).mean()
        # a row with a non-finite logit counts as wrong, whatever argmax makes of it
        finite = jnp.all(jnp.isfinite(output), axis=-1)
        accuracy = jnp.mean((jnp.argmax(output, axis=-1) == y) & finite)
        return loss, accuracy
    target = y.reshape(output.shape)
    return jnp.mean(jnp.square(output - target)), jnp.array(jnp.nan, jnp.float32)


def _loss(model: nnx.Module, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
    """The training loss of a batch (x, y), as `jaxgrad.inspect` differentiates it."""
    return _loss_and_accuracy(model(batch[0]), batch[1])[0]


# a spike is flagged as `recording.Recorder` flags it, with its defaults
_SPIKE = {
    name: inspect.signature(_recording.Recorder.__init__).parameters[f"spike_{name}"].default
    for name in ("factor", "decay", "warmup")
}


class _Program(NamedTuple):
    """Everything static about one training run (hashable, a jit static argument)."""

    graphdef: Any
    eval_graphdef: Any
    tx: Any
    steps: int
    batch_size: int
    eval_every: int
    record_every: int
    rerun: bool  # measure the first non-finite step off the schedule (not under vmap)
    spec: Any
    layout: Any
    layers: Layers


def _program(model, tx, arrays, steps, batch_size, eval_every, record_every, rerun):
    graphdef, _, _ = nnx.split(model, nnx.Param, ...)
    evaluator = nnx.clone(model)
    evaluator.eval()
    eval_graphdef = nnx.split(evaluator, nnx.Param, ...)[0]
    batch = tuple(
        jax.ShapeDtypeStruct((batch_size, *array.shape[1:]), array.dtype)
        for array in (arrays.x_train, arrays.y_train)
    )
    spec, layout, layers = _learn_layers(model, _loss, batch)
    return _Program(
        graphdef,
        eval_graphdef,
        tx,
        steps,
        batch_size,
        eval_every,
        record_every,
        rerun,
        spec,
        layout,
        layers,
    )


def _evaluate(program: _Program, params, rest, x, y):
    model = nnx.merge(program.eval_graphdef, params, rest)
    return _loss_and_accuracy(model(x), y)


def _record_every(record_every: int | None, steps: int, default: bool = True) -> int:
    """The default: about 100 recorded steps, or none (0) where `default` is off."""
    if record_every is None:
        return max(1, steps // 100) if default else 0
    return _positive_int("record_every", record_every)


def _put(buffer: Any, slot: jax.Array, row: Any, where: jax.Array) -> Any:
    """`row` written at `slot` of `buffer` where `where` (one row's dynamic update)."""

    def put(buf, value):
        kept = jax.lax.dynamic_index_in_dim(buf, slot, 0, keepdims=False)
        value = jnp.where(where, value.astype(buf.dtype), kept)
        return jax.lax.dynamic_update_index_in_dim(buf, value, slot, 0)

    return jax.tree.map(put, buffer, row)


def minibatches(key: jax.Array, steps: int, n_train: int, batch_size: int) -> jax.Array:
    """The training examples of every step, (steps, batch_size), drawn epoch by epoch.

    The steps read consecutive slices of a stream of epochs; each epoch is the permutation
    `jax.random.permutation(jax.random.split(key, epochs)[e], n_train)`, so every example is
    seen once per epoch, a step's examples are distinct unless its slice straddles two
    epochs, and the batches do not depend on `eval_every`. Drawn once before the loop, one
    permutation per epoch (not per step).

    Args:
        key: PRNG key of the permutations.
        steps: number of steps.
        n_train: number of training examples.
        batch_size: examples per step.

    Returns:
        (steps, batch_size) int32 indices into the training examples.

    Example:
        >>> import jax
        >>> from jaxgrad import train
        >>> batches = train.minibatches(jax.random.key(0), steps=3, n_train=4, batch_size=2)
        >>> sorted(batches[:2].reshape(-1).tolist())  # the first epoch: each example once
        [0, 1, 2, 3]
        >>> batches.shape
        (3, 2)
    """
    epochs = -(-steps * batch_size // n_train)
    keys = jax.random.split(key, epochs)
    stream = jax.vmap(lambda k: jax.random.permutation(k, n_train))(keys).reshape(-1)
    return stream[: steps * batch_size].reshape(steps, batch_size)


def _fit(program: _Program, params, rest, opt_state, data: _data.Dataset, key):
    """The whole training as nested scans: evaluations outside, steps inside; every
    `record_every` steps (a `lax.cond` on the step, which `vmap` leaves a branch) the
    per-layer view of `jaxgrad.recording`, into a buffer of the recorded rows."""
    n_train = data.x_train.shape[0]
    graphdef, spec, layout = program.graphdef, program.spec, program.layout
    param_rows = program.layers.param_rows
    layers = np.asarray(program.layers.layers, np.int32)

    def measured(params, rest, batch):
        # the Recorder's recorded pass: inspect's instrumented forward and backward
        loss, grads, new_rest, report = _inspection.measure(
            graphdef, _loss, spec, params, rest, batch, layout
        )
        model = nnx.merge(graphdef, params, rest, copy=True)  # the accuracy: a forward pass
        accuracy = _loss_and_accuracy(model(batch[0]), batch[1])[1]
        row = {"loss": report.loss, "modules": report.modules, "params": report.params}
        return loss, accuracy, grads, new_rest, row

    recording = program.record_every > 0
    empty = {}
    if recording:
        first = (data.x_train[: program.batch_size], data.y_train[: program.batch_size])
        template = jax.eval_shape(lambda: measured(params, rest, first)[4])
        empty = _recorder._nan_like(jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), template))

    def plain(params, rest, batch):
        def loss_of(params):
            model = nnx.merge(graphdef, params, rest, copy=True)
            loss, accuracy = _loss_and_accuracy(model(batch[0]), batch[1])
            return loss, (accuracy, nnx.split(model, nnx.Param, ...)[2])

        (loss, (accuracy, new_rest)), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
        return loss, accuracy, grads, new_rest, empty

    count = len(param_rows.names)
    no_updates = {
        name: jnp.full((count,), jnp.nan, jnp.float32) for name in _recorder.UPDATE_FIELDS
    }
    rows, capacity = {}, 0
    if recording:
        capacity = -(-program.steps // program.record_every) + int(program.rerun)
        record = {"step": jnp.zeros((), jnp.int32), **empty, "updates": no_updates}
        rows = jax.tree.map(lambda leaf: jnp.stack([leaf] * capacity), _recorder._nan_like(record))

    def step(carry, batch):
        params, rest, opt_state, index, rows, averages, rerun_done = carry
        batch = (data.x_train[batch], data.y_train[batch])
        if not recording:
            now = jnp.zeros((), bool)
            loss, accuracy, grads, rest_after, row = plain(params, rest, batch)
        elif program.record_every == 1:  # every step measured: no branch to compile
            now = jnp.ones((), bool)
            loss, accuracy, grads, rest_after, row = measured(params, rest, batch)
        else:
            now = index % program.record_every == 0
            loss, accuracy, grads, rest_after, row = jax.lax.cond(
                now, measured, plain, params, rest, batch
            )
        row_grad_norms = param_rows.norms(grads).astype(jnp.float32)
        grad_norm = _stats.norm(row_grad_norms)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        rerun = jnp.zeros((), bool)
        if recording and program.rerun and program.record_every > 1:
            # the first non-finite step is measured, whatever the schedule
            rerun = ~finite & ~now & ~rerun_done
            row = jax.lax.cond(rerun, lambda: measured(params, rest, batch)[4], lambda: row)
            rerun_done = rerun_done | rerun
        skips = _recorder.guard_skips(opt_state)
        updates, opt_state = program.tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        update_norm = _stats.norm(param_rows.norms(updates)).astype(jnp.float32)
        taken = now | rerun
        if recording:
            weight_norm = row["params"].weight_norm
            row["updates"] = jax.lax.cond(
                taken,
                lambda: _recorder.update_stats(param_rows, updates, weight_norm, opt_state),
                lambda: no_updates,
            )
            slot = jnp.where(rerun, capacity - 1, index // program.record_every)
            rows = _put(rows, slot, {"step": index, **row}, taken)
        skipped = _recorder.guard_skips(opt_state) > skips
        watched = jnp.stack([loss.astype(jnp.float32), grad_norm, update_norm])
        spike, averages = _recorder.spike_onsets(averages, index, watched, **_SPIKE)
        out = (loss, accuracy, grad_norm, update_norm, row_grad_norms[layers], finite, index)
        out += (taken, rerun, skipped, spike)
        return (params, rest_after, opt_state, index + 1, rows, averages, rerun_done), out

    def chunk(carry, chunk_batches):
        carry, records = jax.lax.scan(step, carry, chunk_batches)
        test = _evaluate(program, carry[0], carry[1], data.x_test, data.y_test)
        return carry, (records, test)

    n_evals = program.steps // program.eval_every
    initial_test = _evaluate(program, params, rest, data.x_test, data.y_test)
    carry = (params, rest, opt_state, jnp.zeros((), jnp.int32), rows)
    carry += (jnp.zeros((6,), jnp.float32), jnp.zeros((), bool))
    batches = minibatches(key, program.steps, n_train, program.batch_size)
    batches = batches.reshape(n_evals, program.eval_every, program.batch_size)
    carry, (records, tests) = jax.lax.scan(chunk, carry, batches)
    params, rest, opt_state, _, rows, _, _ = carry
    (loss, accuracy, grad_norm, update_norm, layer_norms, finite, index, *flags) = jax.tree.map(
        lambda a: a.reshape(program.steps, *a.shape[2:]), records
    )
    recorded, rerun, skipped, spike = flags
    first_bad = jnp.min(jnp.where(finite, program.steps, index))
    history = History(
        loss=loss,
        accuracy=accuracy,
        grad_norm=grad_norm,
        update_norm=update_norm,
        layer_grad_norms=layer_norms,
        eval_step=jnp.arange(n_evals + 1, dtype=jnp.int32) * program.eval_every,
        test_loss=jnp.concatenate([initial_test[0][None], tests[0]]),
        test_accuracy=jnp.concatenate([initial_test[1][None], tests[1]]),
        first_nonfinite_step=jnp.where(first_bad == program.steps, -1, first_bad),
        recorded=recorded,
        rerun=rerun,
        skipped=skipped,
        spike=spike.astype(jnp.int32),
        rows=rows,
        layers=program.layers,
    )
    return params, rest, opt_state, history


_fit_jit = jax.jit(_fit, static_argnums=0)


def train(
    model: nnx.Module,
    tx: optax.GradientTransformation,
    data: Any,
    *,
    steps: int,
    key: jax.Array,
    batch_size: int = 128,
    eval_every: int | None = None,
    opt_state: optax.OptState | None = None,
    record_every: int | None = None,
) -> History:
    """Train `model` in place with the Optax chain `tx` on minibatches of `data`.

    One jitted program runs every step: a minibatch of `batch_size` examples (epoch by epoch,
    see `minibatches`), the loss (softmax cross entropy for integer targets, mean squared error
    for float targets) and its gradient, the chain's update. Batch norm uses batch statistics
    and updates its running averages while training; evaluations run the model in `eval()` mode
    on the whole test set, at step 0 and after every `eval_every` steps. The model's parameters
    and other state (batch statistics, random streams) are updated in place.

    Args:
        model: any Flax NNX model mapping a batch of `x_train` to logits or predictions.
        tx: any `optax.GradientTransformation` (for example `jaxgrad.optim.make_optimizer`).
            The compiled training program is kept per `tx` object: pass the same object to
            train again without compiling (a new `optax.sgd(0.1)` compiles again: about
            4 s against 0.4 s for a 600-step run of a 20-layer MLP on a CPU).
        data: `jaxgrad.data.Dataset` or anything with x_train, y_train, x_test, y_test.
            Integer targets mean classification (softmax cross entropy on the model's
            logits), float targets regression (mean squared error).
        steps: number of updates.
        key: PRNG key for the minibatches.
        batch_size: examples per step, at most the number of training examples.
        eval_every: evaluate every this many steps (must divide `steps`); default: at the
            start and the end only.
        opt_state: the chain's state to continue from; default `tx.init(params)`.
        record_every: record the per-layer view (see the module docstring) every this many
            steps, from step 0; default `max(1, steps // 100)`, about 100 recorded steps.

    Returns:
        `History`; `history.recording()` is the run as `jaxgrad.recording` reads it, and
        `jaxgrad.diagnose(history)` its verdict.

    Raises:
        ValueError / TypeError: for a bad step count, batch size, evaluation interval or data,
            before anything is compiled.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> from flax import nnx
        >>> from jaxgrad import data, nn, train
        >>> x = jax.random.normal(jax.random.key(0), (64, 4))
        >>> y = (x[:, 0] > 0).astype(jnp.int32)  # the sign of the first feature
        >>> split = data.Dataset(x[:48], y[:48], x[48:], y[48:])
        >>> model = nn.MLP(4, 16, depth=2, out_features=2, rngs=nnx.Rngs(0))
        >>> history = train.train(model, optax.adam(1e-2), split, steps=40, batch_size=16,
        ...                       key=jax.random.key(1))
        >>> bool(history.loss[-5:].mean() < history.loss[:5].mean())
        True
        >>> history.test_accuracy.shape  # at the start and the end
        (2,)
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a Flax NNX module, got {type(model).__name__}")
    tx = _check_transformation(tx)
    arrays = _check_data(data)
    steps, batch_size, eval_every = _check_schedule(
        steps, batch_size, eval_every, arrays.x_train.shape[0]
    )
    _check_targets(model, arrays)
    key = _prng.check_key(key, single=True)
    record_every = _record_every(record_every, steps)
    program = _program(model, tx, arrays, steps, batch_size, eval_every, record_every, True)
    _, params, rest = nnx.split(model, nnx.Param, ...)
    opt_state = tx.init(params) if opt_state is None else opt_state
    params, rest, _, history = _fit_jit(program, params, rest, opt_state, arrays, key)
    nnx.update(model, params, rest)
    return history


# ----------------------------------------------------------------------------- many at once


class Grid(NamedTuple):
    """The configurations of `train_many`, one entry per point of the grid (flattened in
    C order over `shape`).

    Attributes:
        shape: the grid's shape: (seeds, then one axis per hyperparameter, in order).
        seeds: (points,) each point's seed.
        hyperparams: name -> (points,) each point's value, float32.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> from flax import nnx
        >>> from jaxgrad import data, nn, train
        >>> x = jax.random.normal(jax.random.key(0), (64, 4))
        >>> y = (x[:, 0] > 0).astype(jnp.int32)  # the sign of the first feature
        >>> split = data.Dataset(x[:48], y[:48], x[48:], y[48:])
        >>> make = lambda key: nn.MLP(4, 8, 2, 2, rngs=nnx.Rngs(key))
        >>> _, grid = train.train_many(
        ...     make, lambda learning_rate: optax.sgd(learning_rate), split, seeds=[0, 1],
        ...     hyperparams={"learning_rate": [0.01, 0.1]}, steps=2, batch_size=16)
        >>> grid.shape, grid.seeds.tolist()
        ((2, 2), [0, 0, 1, 1])
        >>> [round(v, 2) for v in grid.hyperparams["learning_rate"].tolist()]
        [0.01, 0.1, 0.01, 0.1]
    """

    shape: tuple[int, ...]
    seeds: np.ndarray
    hyperparams: dict[str, np.ndarray]


def _grid(seeds: Sequence[int], hyperparams: Mapping[str, Any]) -> Grid:
    seeds = np.asarray(seeds)
    if seeds.ndim != 1 or seeds.size == 0 or not np.issubdtype(seeds.dtype, np.integer):
        raise ValueError(f"seeds must be a non-empty sequence of ints, got {seeds!r}")
    axes = {}
    for name, values in hyperparams.items():
        values = np.asarray(values, np.float32)
        if values.ndim != 1 or values.size == 0 or np.any(np.isnan(values)):
            raise ValueError(
                f"hyperparams[{name!r}] must be a non-empty 1-D sequence of numbers (inf is "
                f"allowed, for example a clipping threshold that never clips; nan is not), "
                f"got {values!r}"
            )
        axes[name] = values
    shape = (seeds.size, *(v.size for v in axes.values()))
    points = list(itertools.product(range(seeds.size), *(range(v.size) for v in axes.values())))
    index = np.array(points).reshape(len(points), len(shape))
    flat_seeds = seeds[index[:, 0]]
    flat = {name: v[index[:, i + 1]] for i, (name, v) in enumerate(axes.items())}
    return Grid(shape, flat_seeds, flat)


def _call_with(fn: Callable[..., Any], *args: Any, **hp: Any) -> Any:
    """Call `fn` with the hyperparameters it names (all of them if it takes **kwargs)."""
    parameters = inspect.signature(fn).parameters.values()
    if not any(p.kind is p.VAR_KEYWORD for p in parameters):
        names = {p.name for p in parameters}
        hp = {name: value for name, value in hp.items() if name in names}
    return fn(*args, **hp)


def train_many(
    model_fn: Callable[..., nnx.Module],
    optimizer_fn: Callable[..., optax.GradientTransformation],
    data: Any,
    *,
    seeds: Sequence[int],
    hyperparams: Mapping[str, Sequence[float]] | None = None,
    steps: int,
    batch_size: int = 128,
    eval_every: int | None = None,
    chunk_size: int | None = None,
    record_every: int | None = None,
) -> tuple[History, Grid]:
    """Train one model per point of the grid seeds x hyperparams, vmapped in one program.

    `model_fn(key, **hp)` builds a model from a PRNG key and one value of each
    hyperparameter; `optimizer_fn(**hp)` builds its Optax chain. Each receives only the
    hyperparameters its signature names (all of them if it takes `**kwargs`). Both are traced under
    `jax.vmap`, so the hyperparameters arrive as traced scalars: use them in arithmetic
    (scale kernels by `jnp.sqrt(sigma_w2)`, pass a learning rate to `optax.sgd`), not in
    Python control flow or in factories that validate Python numbers. Seed s gives the model
    `model_fn(jax.random.key(s), ...)` and the minibatch key `jax.random.fold_in(key, 1)`,
    the same as `train(model, tx, data, key=jax.random.fold_in(jax.random.key(s), 1))`, up
    to float rounding: vmapped products round differently, and a run whose first steps are
    unstable can amplify that (a 20-layer ReLU network at SGD 0.1 on digits ends at test
    accuracy 0.65 one way and 0.0 the other).

    Args:
        model_fn: `(key, **hp) -> nnx.Module`; every point must give the same structure.
        optimizer_fn: `(**hp) -> optax.GradientTransformation`.
        data: as for `train`.
        seeds: integer seeds, the grid's first axis.
        hyperparams: name -> 1-D values, the grid's next axes in this order.
        steps, batch_size, eval_every: as for `train`.
        record_every: record the per-layer view every this many steps, as `train` does;
            default none (the per-step norms and `layer_grad_norms` are kept: a recorded
            step costs about what `jaxgrad.inspect` does, and compiling its pass about
            doubles a small grid's compile time). Only the scheduled steps are recorded (a
            first non-finite step off the schedule is seen in the per-step loss and norms,
            not measured again: under `vmap` that would measure every step).
        chunk_size: train at most this many configurations at once (`jax.lax.map` over
            chunks of a vmapped program) to bound memory; default all at once.

    Returns:
        (`History` whose fields have leading axes `grid.shape`, `Grid`).

    Example:
        >>> import jax.numpy as jnp, optax
        >>> from flax import nnx
        >>> from jaxgrad import data, nn, train
        >>> make = lambda key: nn.MLP(64, 32, 3, 10, activation="relu", rngs=nnx.Rngs(key))
        >>> history, grid = train.train_many(
        ...     make, lambda learning_rate: optax.sgd(learning_rate), data.digits(),
        ...     seeds=[0, 1], hyperparams={"learning_rate": [0.01, 0.1]}, steps=20)
        >>> history.test_accuracy.shape, grid.shape
        ((2, 2, 2), (2, 2))
    """
    arrays = _check_data(data)
    steps, batch_size, eval_every = _check_schedule(
        steps, batch_size, eval_every, arrays.x_train.shape[0]
    )
    grid = _grid(seeds, {} if hyperparams is None else hyperparams)
    n = int(np.prod(grid.shape))
    if chunk_size is not None:
        chunk_size = min(_positive_int("chunk_size", chunk_size), n)
    first = {name: float(v[0]) for name, v in grid.hyperparams.items()}
    # the structure only: nothing is drawn or computed outside the compiled program
    model = nnx.eval_shape(
        lambda: _call_with(model_fn, jax.random.key(int(grid.seeds[0])), **first)
    )
    tx = _check_transformation(_call_with(optimizer_fn, **first))
    _check_targets(model, arrays)
    record_every = _record_every(record_every, steps, default=False)
    program = _program(model, tx, arrays, steps, batch_size, eval_every, record_every, False)
    names = tuple(grid.hyperparams)
    history = _train_many_jit(
        program,
        model_fn,
        optimizer_fn,
        names,
        chunk_size,
        jnp.asarray(grid.seeds, jnp.uint32),
        tuple(jnp.asarray(grid.hyperparams[name]) for name in names),
        arrays,
    )
    history = jax.tree.map(lambda a: a.reshape(*grid.shape, *a.shape[1:]), history)
    return history, grid


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _train_many_jit(program, model_fn, optimizer_fn, names, chunk_size, seeds, values, arrays):
    def one(seed, values):
        hp = dict(zip(names, values, strict=True))
        key = jax.random.key(seed)
        model = _call_with(model_fn, key, **hp)
        _, params, rest = nnx.split(model, nnx.Param, ...)
        tx = _call_with(optimizer_fn, **hp)
        program_here = program._replace(tx=tx)
        opt_state = tx.init(params)
        *_, history = _fit(
            program_here, params, rest, opt_state, arrays, jax.random.fold_in(key, 1)
        )
        return history

    if chunk_size is None:
        return jax.vmap(one)(seeds, values)
    return jax.lax.map(lambda args: one(*args), (seeds, values), batch_size=chunk_size)


# ----------------------------------------------------------------------------- pre-training


class PretrainReport(NamedTuple):
    """Reconstruction losses of greedy layer-wise pre-training.

    Attributes:
        block_loss: (depth, steps) each hidden block's autoencoder loss at each step.
        input_loss: (steps,) the input projection's loss (empty when there is none).

    Example:
        >>> import jax
        >>> from flax import nnx
        >>> from jaxgrad import nn, train
        >>> model = nn.MLP(4, 8, depth=3, out_features=2, activation="sigmoid",
        ...                rngs=nnx.Rngs(0))
        >>> x = jax.random.normal(jax.random.key(0), (64, 4))
        >>> report = train.pretrain_layerwise(model, x, key=jax.random.key(1), steps=20,
        ...                                   batch_size=16)
        >>> report.block_loss.shape, report.input_loss.shape
        ((3, 20), (20,))
    """

    block_loss: jax.Array
    input_loss: jax.Array


def _affine(h: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    return h @ kernel + bias.reshape(1, -1)


def _autoencoder(phi, kernel, bias, h, key, phi_decoder, *, steps, batch_size, learning_rate):
    """Train the encoder phi(h W + b) of a tied-weight autoencoder to reconstruct `h` as
    phi(phi(h W + b) W^T + c) when `phi_decoder` (a traced bool), else phi(h W + b) W^T + c.

    Tied weights make the code itself carry the input's variations (an untied decoder could
    amplify a code that barely varies). The decoder ends in phi where `h` is itself an output
    of phi, as in Bengio et al. 2007: a sigmoid layer that must also decode through a sigmoid
    reconstructs best, in its linear regime, with gain a on its input where
    (a sigmoid'(0))^2 = 1, so its code keeps its input's variations and its Jacobian is about
    1; with a linear decoder the best gain satisfies a^2 sigmoid'(0) = 1 and every layer
    halves the variations it passes on (2^-19 over 20 layers). The error of each feature is
    measured in units of that feature's standard deviation over `h`: a layer whose input
    varies little across examples would otherwise reach a tiny plain squared error by
    reconstructing the mean.
    """
    variance = jnp.var(h, axis=0, keepdims=True)
    # a feature that is constant (a blank pixel) is weighted as one of 1% of the mean variance
    scale = jax.lax.rsqrt(variance + 0.01 * jnp.mean(variance) + jnp.finfo(h.dtype).tiny)

    def decode(code, w, c):
        reconstruction = _affine(code, w.T, c)
        return jnp.where(phi_decoder, phi(reconstruction), reconstruction)

    # a linear decoder's bias starts where the reconstruction's mean is the input's mean; a
    # decoder through phi starts at zero
    code = phi(_affine(h, kernel, bias))
    offset = jnp.mean(h, axis=0) - jnp.mean(_affine(code, kernel.T, jnp.zeros_like(h[0])), 0)
    params = (kernel, bias, jnp.where(phi_decoder, jnp.zeros_like(offset), offset))
    tx = optax.adam(learning_rate)

    def loss_fn(params, hb):
        w, b, c = params
        error = decode(phi(_affine(hb, w, b)), w, c) - hb
        return jnp.mean(jnp.square(error * scale))

    def step(carry, step_key):
        params, opt_state = carry
        batch = jax.random.permutation(step_key, h.shape[0])[:batch_size]
        loss, grads = jax.value_and_grad(loss_fn)(params, h[batch])
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    keys = jax.random.split(key, steps)
    (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), keys)
    return params[0], params[1], losses


@functools.partial(jax.jit, static_argnames=("phi", "steps", "batch_size"))
def _pretrain_jit(input_params, kernels, biases, x, key, *, phi, steps, batch_size, learning_rate):
    options = {"steps": steps, "batch_size": batch_size, "learning_rate": learning_rate}
    input_key, key = jax.random.split(key)
    h = x
    input_loss = jnp.zeros((0,), jnp.float32)
    if input_params is not None:  # the input projection is linear: a linear autoencoder
        w, b, input_loss = _autoencoder(
            lambda z: z, *input_params, h, input_key, jnp.array(False), **options
        )
        input_params = (w, b)
        h = _affine(h, w, b)

    def layer(h, args):
        kernel, bias, layer_key, phi_decoder = args
        kernel, bias, losses = _autoencoder(phi, kernel, bias, h, layer_key, phi_decoder, **options)
        return phi(_affine(h, kernel, bias)), (kernel, bias, losses)

    depth = kernels.shape[0]
    keys = jax.random.split(key, depth)
    # the first block's input (x, or the linear input projection's output) is not an output
    # of phi, so only the blocks above it decode through phi
    phi_decoder = jnp.arange(depth) > 0
    _, (kernels, biases, losses) = jax.lax.scan(layer, h, (kernels, biases, keys, phi_decoder))
    return input_params, kernels, biases, PretrainReport(losses, input_loss)


def pretrain_layerwise(
    model: _nn.MLP,
    x: jax.Array,
    *,
    key: jax.Array,
    steps: int = 200,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
) -> PretrainReport:
    """Greedy layer-wise pre-training of a `jaxgrad.nn.MLP` with autoencoders, in place.

    Layer by layer from the input up, each hidden layer h -> phi(h W + b) is trained (Adam,
    `steps` minibatches) as the encoder of a tied-weight autoencoder to reconstruct its own
    input h, computed by the layers below it, which are already trained and now frozen.
    Every block but the first gets its input from phi, and decodes through phi as well,
    phi(phi(h W + b) W^T + c), as Bengio et al. 2007 decode sigmoid codes through a sigmoid;
    the first block, whose input is x or the input projection's output, decodes linearly,
    phi(h W + b) W^T + c. Decoding through phi keeps each layer's code as varied as its
    input, so a deep sigmoid stack keeps its input's information and its gradient. The
    reconstruction error of each input feature is measured relative to its standard
    deviation over the examples, so a layer whose input barely varies still has to pass its
    variations on. The linear input projection, when the model has one, is pre-trained
    first as a linear autoencoder. The readout is left alone: fine-tune the whole network
    afterwards with `train`. All hidden layers go through one compiled `jax.lax.scan`.

    Args:
        model: a plain `jaxgrad.nn.MLP` (norm=None, residual=False).
        x: unlabelled inputs, (n, in_features).
        key: PRNG key for the minibatches.
        steps: Adam steps per layer.
        batch_size: examples per step, at most n.
        learning_rate: Adam's learning rate.

    Returns:
        `PretrainReport` with the reconstruction loss of every layer at every step.

    Raises:
        TypeError / ValueError: for another kind of model, normalized or residual blocks,
            or a bad step count, batch size or learning rate.

    Example:
        >>> import jax
        >>> from flax import nnx
        >>> from jaxgrad import nn, train
        >>> model = nn.MLP(4, 8, depth=3, out_features=2, activation="sigmoid",
        ...                rngs=nnx.Rngs(0))
        >>> x = jax.random.normal(jax.random.key(0), (64, 4))
        >>> report = train.pretrain_layerwise(model, x, key=jax.random.key(1), steps=50,
        ...                                   batch_size=16)
        >>> bool((report.block_loss[:, -1] < report.block_loss[:, 0]).all())  # each block learned
        True

    References:
        Bengio, Lamblin, Popovici and Larochelle 2007, "Greedy Layer-Wise Training of Deep
        Networks" (autoencoder variant of Hinton et al. 2006).
    """
    if not isinstance(model, _nn.MLP):
        raise TypeError(f"pretrain_layerwise takes a jaxgrad.nn.MLP, got {type(model).__name__}")
    if model.norm is not None or model.residual:
        raise ValueError(
            "pretrain_layerwise needs plain blocks (norm=None, residual=False), got "
            f"norm={model.norm!r}, residual={model.residual}"
        )
    steps = _positive_int("steps", steps)
    batch_size = _positive_int("batch_size", batch_size)
    learning_rate = _init._positive("learning_rate", learning_rate)
    x = jnp.asarray(x)
    model.check_input(x)
    if x.ndim != 2 or batch_size > x.shape[0]:
        raise ValueError(
            f"x must be (n, in_features) with n >= batch_size ({batch_size}), got {x.shape}"
        )
    linear = model.blocks.linear
    input_params = None
    if model.input_layer is not None:
        input_params = (model.input_layer.kernel[...], model.input_layer.bias[...])
    input_params, kernels, biases, report = _pretrain_jit(
        input_params,
        linear.kernel[...],
        linear.bias[...],
        x,
        key,
        phi=model.blocks.activation,
        steps=steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
    )
    if input_params is not None:
        model.input_layer.kernel[...] = input_params[0]
        model.input_layer.bias[...] = input_params[1]
    linear.kernel[...] = kernels
    linear.bias[...] = biases
    return report
