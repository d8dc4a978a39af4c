"""Training Flax NNX models with any Optax chain, in one compiled program, while watching the
gradient of every layer.

`train(model, tx, data, steps=...)` runs the whole training, every step and every evaluation,
as one jitted `jax.lax.scan`, updates the model in place and returns a `History`: loss,
accuracy, the global gradient norm and the gradient norm of each layer at every step, and
test loss and accuracy at every evaluation. A loss that turns inf or nan is a result, not an
error: training goes on and `History.first_nonfinite_step` says when it happened.

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
from jaxgrad import nn as _nn
from jaxgrad import prng as _prng
from jaxgrad import stats as _stats
from jaxgrad.nn import _positive_int

# ----------------------------------------------------------------------------- results


class History(NamedTuple):
    """What happened during training. With `train_many`, every field has the grid's leading
    axes in front.

    Attributes:
        loss: (steps,) training loss of each step's batch, before that step's update.
        accuracy: (steps,) accuracy on that batch (nan for regression).
        grad_norm: (steps,) global norm of the gradient of all parameters.
        layer_grad_norms: (steps, layers) Frobenius norm of the gradient of each layer's
            kernel, in the order of `layer_names(model)`.
        eval_step: (evals,) the step after which each evaluation was taken (0: at init).
        test_loss: (evals,) loss on the whole test set.
        test_accuracy: (evals,) accuracy on the whole test set (nan for regression).
        first_nonfinite_step: () the first step whose loss or gradient was inf or nan, -1 if
            none was.
    """

    loss: jax.Array
    accuracy: jax.Array
    grad_norm: jax.Array
    layer_grad_norms: jax.Array
    eval_step: jax.Array
    test_loss: jax.Array
    test_accuracy: jax.Array
    first_nonfinite_step: jax.Array


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


def _is_stacked(model: nnx.Module) -> bool:
    return hasattr(model, "blocks") and hasattr(model, "depth")


def _order(path: tuple) -> tuple[int, tuple]:
    first = str(path[0])
    rank = {"input_layer": 0, "blocks": 1, "readout": 3}.get(first, 2)
    return rank, tuple(str(p) for p in path)


def _kernel_paths(model: nnx.Module, params: nnx.State) -> list[tuple]:
    paths = [path for path, _ in nnx.to_flat_state(params) if str(path[-1]) == "kernel"]
    if not paths:
        raise ValueError(f"{type(model).__name__} has no parameter named 'kernel' to watch")
    return sorted(paths, key=_order)


def layer_names(model: nnx.Module) -> list[str]:
    """The names of the layers whose gradient norms `History.layer_grad_norms` holds.

    A layer is a parameter named `kernel` (the weights of `nnx.Linear` and `nnx.Conv`);
    kernels under the stacked `blocks` of `jaxgrad.nn.MLP` and `jaxgrad.nn.ResidualMLP` count
    as one layer per block ("blocks[3]"; all of a block's kernels together). Order: the input
    projection, the blocks from first to last, other kernels by path, the readout.
    """
    _, params, _ = nnx.split(model, nnx.Param, ...)
    names = []
    blocks_seen = False
    for path in _kernel_paths(model, params):
        if _is_stacked(model) and str(path[0]) == "blocks":
            if not blocks_seen:
                names += [f"blocks[{i}]" for i in range(model.depth)]
                blocks_seen = True
        else:
            names.append("/".join(str(p) for p in path[:-1]) or "kernel")
    return names


def _layer_grad_norms(grads: nnx.State, paths: list[tuple], stacked: bool) -> jax.Array:
    flat = dict(nnx.to_flat_state(grads))
    norms, block_norms = [], []
    for path in paths:
        g = jnp.asarray(flat[path][...], jnp.float32)
        if stacked and str(path[0]) == "blocks":
            if not block_norms:
                norms.append(None)  # placeholder: all block kernels land at the first one
            block_norms.append(_stats.norm(g.reshape(g.shape[0], -1), axis=1))
        else:
            norms.append(_stats.norm(g).reshape(1))
    if block_norms:
        # a block's norm over all its kernels: the norm of their norms
        norms[norms.index(None)] = _stats.norm(jnp.stack(block_norms), axis=0)
    return jnp.concatenate(norms)


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


class _Program(NamedTuple):
    """Everything static about one training run (hashable, a jit static argument)."""

    graphdef: Any
    eval_graphdef: Any
    tx: Any
    kernel_paths: tuple
    stacked: bool
    steps: int
    batch_size: int
    eval_every: int


def _program(model: nnx.Module, tx: optax.GradientTransformation, steps, batch_size, eval_every):
    graphdef, params, _ = nnx.split(model, nnx.Param, ...)
    evaluator = nnx.clone(model)
    evaluator.eval()
    eval_graphdef = nnx.split(evaluator, nnx.Param, ...)[0]
    return _Program(
        graphdef,
        eval_graphdef,
        tx,
        tuple(_kernel_paths(model, params)),
        _is_stacked(model),
        steps,
        batch_size,
        eval_every,
    )


def _evaluate(program: _Program, params, rest, x, y):
    model = nnx.merge(program.eval_graphdef, params, rest)
    return _loss_and_accuracy(model(x), y)


def minibatches(key: jax.Array, steps: int, n_train: int, batch_size: int) -> jax.Array:
    """The training examples of every step, (steps, batch_size), drawn epoch by epoch.

    The steps read consecutive slices of a stream of epochs; each epoch is the permutation
    `jax.random.permutation(jax.random.split(key, epochs)[e], n_train)`, so every example is
    seen once per epoch, a step's examples are distinct unless its slice straddles two
    epochs, and the batches do not depend on `eval_every`. Drawn once before the loop, one
    permutation per epoch (not per step).
    """
    epochs = -(-steps * batch_size // n_train)
    keys = jax.random.split(key, epochs)
    stream = jax.vmap(lambda k: jax.random.permutation(k, n_train))(keys).reshape(-1)
    return stream[: steps * batch_size].reshape(steps, batch_size)


def _fit(program: _Program, params, rest, opt_state, data: _data.Dataset, key):
    """The whole training as nested scans: evaluations outside, steps inside."""
    n_train = data.x_train.shape[0]

    def step(carry, batch):
        params, rest, opt_state, index = carry
        xb, yb = data.x_train[batch], data.y_train[batch]

        def loss_fn(params):
            # fresh Variables at this trace level, so batch norm may update its statistics
            model = nnx.merge(program.graphdef, params, jax.tree.map(jnp.asarray, rest))
            loss, accuracy = _loss_and_accuracy(model(xb), yb)
            return loss, (accuracy, nnx.split(model, nnx.Param, ...)[2])

        (loss, (accuracy, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = program.tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        grad_norm = _stats.global_norm(grads)
        layer_norms = _layer_grad_norms(grads, list(program.kernel_paths), program.stacked)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        record = (loss, accuracy, grad_norm, layer_norms, finite, index)
        return (params, rest, opt_state, index + 1), record

    def chunk(carry, chunk_batches):
        carry, records = jax.lax.scan(step, carry, chunk_batches)
        test = _evaluate(program, carry[0], carry[1], data.x_test, data.y_test)
        return carry, (records, test)

    n_evals = program.steps // program.eval_every
    initial_test = _evaluate(program, params, rest, data.x_test, data.y_test)
    carry = (params, rest, opt_state, jnp.zeros((), jnp.int32))
    batches = minibatches(key, program.steps, n_train, program.batch_size)
    batches = batches.reshape(n_evals, program.eval_every, program.batch_size)
    carry, (records, tests) = jax.lax.scan(chunk, carry, batches)
    params, rest, opt_state, _ = carry
    loss, accuracy, grad_norm, layer_norms, finite, index = jax.tree.map(
        lambda a: a.reshape(program.steps, *a.shape[2:]), records
    )
    first_bad = jnp.min(jnp.where(finite, program.steps, index))
    history = History(
        loss=loss,
        accuracy=accuracy,
        grad_norm=grad_norm,
        layer_grad_norms=layer_norms,
        eval_step=jnp.arange(n_evals + 1, dtype=jnp.int32) * program.eval_every,
        test_loss=jnp.concatenate([initial_test[0][None], tests[0]]),
        test_accuracy=jnp.concatenate([initial_test[1][None], tests[1]]),
        first_nonfinite_step=jnp.where(first_bad == program.steps, -1, first_bad),
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
        data: `jaxgrad.data.Dataset` or anything with x_train, y_train, x_test, y_test.
            Integer targets mean classification (softmax cross entropy on the model's
            logits), float targets regression (mean squared error).
        steps: number of updates.
        key: PRNG key for the minibatches.
        batch_size: examples per step, at most the number of training examples.
        eval_every: evaluate every this many steps (must divide `steps`); default: at the
            start and the end only.
        opt_state: the chain's state to continue from; default `tx.init(params)`.

    Returns:
        `History`.

    Raises:
        ValueError / TypeError: for a bad step count, batch size, evaluation interval or data,
            before anything is compiled.
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
    program = _program(model, tx, steps, batch_size, eval_every)
    _, params, rest = nnx.split(model, nnx.Param, ...)
    opt_state = tx.init(params) if opt_state is None else opt_state
    params, rest, _, history = _fit_jit(program, params, rest, opt_state, arrays, key)
    nnx.update(model, params, rest)
    return history


# ----------------------------------------------------------------------------- many at once


class Grid(NamedTuple):
    """The configurations of `train_many`, one entry per point of the grid (flattened in
    C order over `shape`)."""

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
) -> tuple[History, Grid]:
    """Train one model per point of the grid seeds x hyperparams, vmapped in one program.

    `model_fn(key, **hp)` builds a model from a PRNG key and one value of each
    hyperparameter; `optimizer_fn(**hp)` builds its Optax chain. Each receives only the
    hyperparameters its signature names (all of them if it takes `**kwargs`). Both are traced under
    `jax.vmap`, so the hyperparameters arrive as traced scalars: use them in arithmetic
    (scale kernels by `jnp.sqrt(sigma_w2)`, pass a learning rate to `optax.sgd`), not in
    Python control flow or in factories that validate Python numbers. Seed s gives the model
    `model_fn(jax.random.key(s), ...)` and the minibatch key `jax.random.fold_in(key, 1)`,
    the same as `train(model, tx, data, key=jax.random.fold_in(jax.random.key(s), 1))`.

    Args:
        model_fn: `(key, **hp) -> nnx.Module`; every point must give the same structure.
        optimizer_fn: `(**hp) -> optax.GradientTransformation`.
        data: as for `train`.
        seeds: integer seeds, the grid's first axis.
        hyperparams: name -> 1-D values, the grid's next axes in this order.
        steps, batch_size, eval_every: as for `train`.
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
    program = _program(model, tx, steps, batch_size, eval_every)
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
