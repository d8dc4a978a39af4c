"""Ready optimizer chains: clipping, penalties, the optimizer, the constraint, a monitor."""

from __future__ import annotations

import optax

from jaxgrad import init as _init
from jaxgrad.optim._checks import _learning_rate, _optional
from jaxgrad.optim.clipping import clip_by_global_norm, clip_by_value
from jaxgrad.optim.monitoring import monitor as _monitor
from jaxgrad.optim.penalties import _max_norm_constraint, add_l1

OPTIMIZERS = ("sgd", "momentum", "rmsprop", "adam", "adamw")


# ----------------------------------------------------------------------------- ready chains


def make_optimizer(
    name: str,
    learning_rate: optax.ScalarOrSchedule,
    *,
    clip_value: float | None = None,
    clip_norm: float | None = None,
    weight_decay: float | None = None,
    l1: float | None = None,
    max_norm: float | None = None,
    monitor: bool = False,
) -> optax.GradientTransformation:
    """A ready optimizer chain: clipping, penalties, the optimizer, then the constraint.

    The chain, each part present only when its argument is given:

    1. `clip_by_value(clip_value)`, then `clip_by_global_norm(clip_norm)`: on the raw
       gradient of the loss, as Keras' clipvalue/clipnorm and PyTorch's clipping before
       `step()` do;
    2. `add_l1(l1)`: the L1 subgradient, then `optax.add_decayed_weights(weight_decay)`:
       coupled L2 weight decay added to the gradient before the optimizer, as PyTorch's
       `weight_decay` argument does (for every name but "adamw"). Penalties are added after
       clipping, so clipping bounds the data gradient only;
    3. the optimizer with `learning_rate`: "sgd" (`optax.sgd`), "momentum" (`optax.sgd` with
       momentum 0.9), "rmsprop" (`optax.rmsprop`, decay 0.9, eps 1e-8), "adam" (`optax.adam`)
       or "adamw" (`optax.adamw`, decoupled decay `weight_decay`; None keeps optax's default
       1e-4);
    4. `max_norm(max_norm)`: the per-unit constraint on kernels, last, so it holds after
       every step.

    With `monitor=True` the whole chain is wrapped in `monitor(inner=chain)`: it records the
    raw gradient norms and the ratios of the final updates to the weights
    (read them with `monitor_state`).

    Weight decay and L1 apply to every parameter, biases included; for another choice build
    the chain yourself with `optax.masked`. For exact zeros under L1, use `l1_proximal`.

    Args:
        name: one of `OPTIMIZERS`.
        learning_rate: a number >= 0, an optax schedule, or a jax scalar (a traced one too,
            e.g. under `jax.vmap` over learning rates; only a concrete one is validated).
        clip_value: the bound for `clip_by_value`, > 0.
        clip_norm: the bound for `clip_by_global_norm`, > 0.
        weight_decay: the L2 weight decay coefficient, >= 0.
        l1: the L1 penalty coefficient, >= 0.
        max_norm: the bound for the `max_norm` constraint, > 0.
        monitor: wrap the chain in `monitor`.

    Returns:
        An `optax.GradientTransformation` (its `update` needs params when `l1`, `max_norm`,
        `weight_decay` or `monitor` is used).

    Raises:
        ValueError: an unknown name (the message lists the valid ones) or a hyperparameter
            out of range (the message names it and its value).

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import optax
        >>> opt = make_optimizer("momentum", 0.1, clip_norm=1.0, max_norm=1.2)
        >>> params = {"kernel": jnp.ones((2, 2)), "bias": jnp.zeros(2)}
        >>> state = opt.init(params)
        >>> grads = {"kernel": jnp.full((2, 2), -100.0), "bias": jnp.ones(2)}
        >>> updates, state = jax.jit(opt.update)(grads, state, params)
        >>> params = optax.apply_updates(params, updates)
        >>> [round(x, 4) for x in jnp.linalg.norm(params["kernel"], axis=0).tolist()]
        [1.2, 1.2]

    References:
        Polyak 1964, "Some methods of speeding up the convergence of iteration methods"
        (momentum); Tieleman and Hinton 2012, "Lecture 6.5 - RMSProp", COURSERA: Neural
        Networks for Machine Learning; Kingma and Ba 2015, "Adam: A Method for Stochastic
        Optimization"; Pascanu, Mikolov and Bengio 2013, "On the difficulty of training
        recurrent neural networks" (clipping); Loshchilov and Hutter 2019, "Decoupled Weight
        Decay Regularization" (adamw against coupled decay); Srivastava et al. 2014,
        "Dropout: A Simple Way to Prevent Neural Networks from Overfitting" (max-norm).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid names are: {', '.join(OPTIMIZERS)}")
    learning_rate = _learning_rate("learning_rate", learning_rate)
    clip_value = _optional("clip_value", clip_value, _init._positive)
    clip_norm = _optional("clip_norm", clip_norm, _init._positive)
    weight_decay = _optional("weight_decay", weight_decay, _init._nonnegative)
    l1 = _optional("l1", l1, _init._nonnegative)
    max_norm = _optional("max_norm", max_norm, _init._positive)
    if not isinstance(monitor, bool):
        raise TypeError(f"monitor must be a bool, got {monitor!r}")

    parts = []
    if clip_value is not None:
        parts.append(clip_by_value(clip_value))
    if clip_norm is not None:
        parts.append(clip_by_global_norm(clip_norm))
    if l1 is not None:
        parts.append(add_l1(l1))
    if weight_decay is not None and name != "adamw":
        parts.append(optax.add_decayed_weights(weight_decay))
    if name == "sgd":
        parts.append(optax.sgd(learning_rate))
    elif name == "momentum":
        parts.append(optax.sgd(learning_rate, momentum=0.9))
    elif name == "rmsprop":
        parts.append(optax.rmsprop(learning_rate))
    elif name == "adam":
        parts.append(optax.adam(learning_rate))
    elif weight_decay is None:
        parts.append(optax.adamw(learning_rate))
    else:
        parts.append(optax.adamw(learning_rate, weight_decay=weight_decay))
    if max_norm is not None:
        parts.append(_max_norm_constraint(max_norm))
    chain = optax.chain(*parts)
    return _monitor(chain) if monitor else chain
