"""Small datasets to train on: scikit-learn's digits, a random teacher network, the adding problem.

Each function returns a `Dataset`, a NamedTuple of four arrays and nothing else, so it is a
pytree that `jax.jit`, `jax.vmap` and `jax.device_put` take as it is. Inputs are float32.
Targets tell the task by their dtype: int32 class labels of shape `(n,)` for classification,
float32 values of shape `(n, outputs)` for regression (see `Dataset.is_classification`).
The number of classes is not stored, since an int field would become a traced leaf under
jit and has no batch axis under vmap; it is `DIGITS_NUM_CLASSES` for `digits` and
`out_features` for `teacher`.

Every split is a deterministic function of its `seed` or `key`.

Example:
    >>> import jax
    >>> from jaxgrad import data
    >>> digits = data.digits()
    >>> digits.x_train.shape, digits.y_train.dtype, digits.is_classification
    ((1438, 64), dtype('int32'), True)
    >>> adding = data.adding_problem(jax.random.key(0), n_train=32, n_test=8, length=50)
    >>> adding.x_train.shape, adding.y_train.shape
    ((32, 50, 2), (32, 1))

References:
    Alpaydin and Kaynak 1998, "Optical Recognition of Handwritten Digits" (UCI; the digits
    set bundled with scikit-learn). Hochreiter and Schmidhuber 1997, "Long Short-Term Memory"
    (the adding problem, their Experiment 4). Le et al. 2015, "A Simple Way to Initialize
    Recurrent Networks of Rectified Linear Units". Saad and Solla 1995, "On-line learning in
    soft committee machines" (the teacher-student setting).
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxgrad import activations as _act
from jaxgrad import init as _init
from jaxgrad.nn import _positive_int

DIGITS_NUM_CLASSES = 10
DIGITS_NUM_FEATURES = 64
# E[(u1 + u2 - 1)^2] for u1, u2 ~ U(0, 1): the variance of the sum, 2 * (1 / 12).
ADDING_BASELINE_MSE = 1.0 / 6.0
TASKS = ("classification", "regression")


class Dataset(NamedTuple):
    """A train/test split: four arrays, so the whole split is a pytree.

    Attributes:
        x_train: float32 inputs, `(n_train, *feature_shape)`.
        y_train: int32 labels `(n_train,)` (classification) or float32 targets
            `(n_train, outputs)` (regression).
        x_test: float32 inputs, `(n_test, *feature_shape)`.
        y_test: targets of the test inputs, like `y_train`.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> from jaxgrad import data
        >>> split = data.Dataset(jnp.zeros((3, 2)), jnp.zeros(3, jnp.int32),
        ...                      jnp.zeros((1, 2)), jnp.zeros(1, jnp.int32))
        >>> jax.tree.map(jnp.shape, split)  # a pytree of four arrays
        Dataset(x_train=(3, 2), y_train=(3,), x_test=(1, 2), y_test=(1,))
    """

    x_train: jax.Array
    y_train: jax.Array
    x_test: jax.Array
    y_test: jax.Array

    @property
    def is_classification(self) -> bool:
        """True when the targets are integer class labels; static, so usable under jit."""
        return bool(jnp.issubdtype(self.y_train.dtype, jnp.integer))


# ----------------------------------------------------------------------------- validation


def _fraction(name: str, value: object) -> float:
    value = _init._real(name, value)
    if not 0 < value < 1:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    return value


def _nonnegative_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------- digits


@functools.lru_cache(maxsize=1)
def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits as read-only (float64 (1797, 64), int64 (1797,)) arrays."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    features = np.asarray(bunch.data, dtype=np.float64)
    labels = np.asarray(bunch.target, dtype=np.int64)
    features.flags.writeable = False
    labels.flags.writeable = False
    return features, labels


def _stratified_split(
    labels: np.ndarray, num_test: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test), each in random order, with every class split in proportion.

    The test set has exactly `num_test` samples. Each class's share is
    `num_test * count / n`; a class gets the floor of its share, and the samples left over
    go one each to the classes with the largest remainders (ties to the smaller label), so
    every class is within one sample of its exact share.
    """
    classes, counts = np.unique(labels, return_counts=True)
    quotas = counts * (num_test / labels.size)
    per_class = np.floor(quotas).astype(np.int64)
    leftover = num_test - int(per_class.sum())
    by_remainder = np.argsort(-(quotas - per_class), kind="stable")
    per_class[by_remainder[:leftover]] += 1
    train_parts, test_parts = [], []
    for label, take in zip(classes, per_class, strict=True):
        members = rng.permutation(np.flatnonzero(labels == label))
        test_parts.append(members[:take])
        train_parts.append(members[take:])
    return rng.permutation(np.concatenate(train_parts)), rng.permutation(np.concatenate(test_parts))


def _standardizer(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature (mean, scale): scale is the std, or 1 where a feature is constant."""
    mean = features.mean(axis=0)
    std = features.std(axis=0)
    constant = std <= 10 * np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0)
    return mean, np.where(constant, 1.0, std)


def digits(test_fraction: float = 0.2, seed: int = 0, standardize: bool = True) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits, split into train and test sets.

    1797 images of 64 pixels (values 0 to 16) in 10 classes, read from the copy that ships
    with scikit-learn (no download; loaded once per process). The split is stratified: each
    class goes to the test set in proportion `test_fraction`, chosen by numpy's PCG64
    generator seeded with `seed`. With `standardize`, every pixel is shifted and scaled by
    the training set's mean and standard deviation (ddof 0), and the test set by the same
    statistics, so no test information leaks into the inputs. Pixels that are constant over
    the training set (at least three are 0 in every image) keep a scale of 1, so they become
    0 rather than NaN.

    Args:
        test_fraction: fraction of samples held out, in (0, 1); the test set has
            round(test_fraction * 1797) samples, and each part needs at least one.
        seed: int >= 0 for numpy's random generator.
        standardize: standardize the pixels with the training statistics; otherwise the
            raw pixel values, as float32.

    Returns:
        A `Dataset` with x float32 `(n, 64)` and y int32 `(n,)` labels in 0..9, each part
        in random order.

    Raises:
        ValueError: a `test_fraction` outside (0, 1) or leaving a part empty, or a bad `seed`.

    Example:
        >>> split = digits(test_fraction=0.25, seed=1)
        >>> split.x_train.shape, split.x_test.shape
        ((1348, 64), (449, 64))

    References:
        Alpaydin and Kaynak 1998, "Optical Recognition of Handwritten Digits", UCI Machine
        Learning Repository (scikit-learn's `load_digits` is its test set).
    """
    test_fraction = _fraction("test_fraction", test_fraction)
    seed = _nonnegative_int("seed", seed)
    features, labels = _load_digits()
    num_test = round(test_fraction * labels.size)
    if not 0 < num_test < labels.size:
        raise ValueError(
            f"test_fraction={test_fraction} gives {num_test} test samples out of "
            f"{labels.size}; choose a fraction that leaves both parts non-empty"
        )
    train_index, test_index = _stratified_split(labels, num_test, np.random.default_rng(seed))
    x_train, x_test = features[train_index], features[test_index]
    if standardize:
        mean, scale = _standardizer(x_train)
        x_train, x_test = (x_train - mean) / scale, (x_test - mean) / scale
    return Dataset(
        x_train=jnp.asarray(x_train, jnp.float32),
        y_train=jnp.asarray(labels[train_index], jnp.int32),
        x_test=jnp.asarray(x_test, jnp.float32),
        y_test=jnp.asarray(labels[test_index], jnp.int32),
    )


# ----------------------------------------------------------------------------- teacher


def _teacher_kernels(
    draws: jax.Array, in_features: int, width: int, depth: int, out_features: int, gain: float
) -> list[jax.Array]:
    """The teacher's kernels cut from standard normal `draws`, in order, scaled to
    N(0, gain^2 / fan_in) for the hidden layers and N(0, 1 / fan_in) for the readout."""
    sizes = [in_features] + [width] * depth + [out_features]
    kernels, start = [], 0
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        std = (gain if index < depth else 1.0) / math.sqrt(fan_in)
        kernels.append(std * draws[start : start + fan_in * fan_out].reshape(fan_in, fan_out))
        start += fan_in * fan_out
    return kernels


def _num_teacher_weights(in_features: int, width: int, depth: int, out_features: int) -> int:
    sizes = [in_features] + [width] * depth + [out_features]
    return sum(fan_in * fan_out for fan_in, fan_out in itertools.pairwise(sizes))


def _teacher_apply(
    kernels: list[jax.Array], activation: _act.Activation, x: jax.Array
) -> jax.Array:
    """The teacher MLP (no biases): activation after every layer but the readout."""
    *hidden, readout = kernels
    for kernel in hidden:
        x = activation(x @ kernel)
    return x @ readout


def teacher(
    key: jax.Array,
    n_train: int = 1024,
    n_test: int = 256,
    *,
    in_features: int = 32,
    width: int = 64,
    depth: int = 2,
    out_features: int = 10,
    activation: str | _act.Activation = "tanh",
    task: str = "classification",
    gain: float | None = None,
) -> Dataset:
    """A random teacher MLP labels standard Gaussian inputs: a task a student can fit exactly.

    The teacher has `depth` hidden layers of `width` units with `activation`, and a linear
    readout to `out_features` outputs. Hidden kernels are N(0, gain^2 / fan_in) with the
    activation's variance-preserving gain by default (`jaxgrad.init.computed_gain`: sqrt(2)
    for relu, He et al.; 1 for linear, LeCun), so the teacher's signal neither saturates nor
    dies with depth; the readout is N(0, 1 / fan_in); there are no biases. The teacher's
    outputs are then shifted so each has mean 0 over the training inputs, so that no class
    wins merely because the activation has a nonzero mean; for regression they are also
    scaled to standard deviation 1 there (a constant predictor then has training MSE 1 per
    output). Shift and scale are fitted on the training inputs only and applied to both parts.

    The kernels, the training inputs and the test inputs are consecutive parts of one normal
    draw from `key`. Compiled once per configuration (an activation is matched by identity),
    so a second call with a new key is cheap; pure and traceable, so it also runs under
    `jax.jit` or `jax.vmap` over keys, with every other argument static.

    Args:
        key: PRNG key; the whole dataset is a deterministic function of it.
        n_train, n_test: numbers of samples, >= 1 (n_train >= 2 for regression).
        in_features: input dimension, >= 1.
        width: hidden units per layer, >= 1.
        depth: number of hidden layers, >= 0 (0 gives a linear teacher).
        out_features: number of classes (classification) or outputs (regression), >= 1;
            classification needs >= 2.
        activation: a name from `jaxgrad.activations.names()` or an elementwise callable.
        task: "classification" (labels = argmax of the teacher's outputs) or "regression"
            (targets = the teacher's standardized outputs).
        gain: hidden-layer weight gain; None for `computed_gain(activation)`.

    Returns:
        A `Dataset` with x float32 `(n, in_features)` and y int32 `(n,)` labels in
        `[0, out_features)` or float32 `(n, out_features)` targets.

    Raises:
        ValueError: a size below its minimum, an unknown task or activation, a gain <= 0.

    Example:
        >>> import jax
        >>> split = teacher(jax.random.key(0), n_train=64, n_test=16, out_features=4)
        >>> split.x_train.shape, split.y_train.shape, split.y_train.dtype
        ((64, 32), (64,), dtype('int32'))

    References:
        Saad and Solla 1995, "On-line learning in soft committee machines". He et al. 2015,
        "Delving Deep into Rectifiers" (the gain).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    n_train = _positive_int("n_train", n_train)
    n_test = _positive_int("n_test", n_test)
    in_features = _positive_int("in_features", in_features)
    width = _positive_int("width", width)
    depth = _nonnegative_int("depth", depth)
    out_features = _positive_int("out_features", out_features)
    if task == "classification" and out_features < 2:
        raise ValueError(f"classification needs out_features >= 2 classes, got {out_features}")
    if task == "regression" and n_train < 2:
        raise ValueError(f"regression needs n_train >= 2 to standardize targets, got {n_train}")
    phi = _act.resolve(activation)
    gain = _default_gain(phi) if gain is None else _init._positive("gain", gain)
    return _teacher_split(
        key,
        n_train=n_train,
        n_test=n_test,
        in_features=in_features,
        width=width,
        depth=depth,
        out_features=out_features,
        activation=phi,
        task=task,
        gain=gain,
    )


@functools.lru_cache(maxsize=64)
def _default_gain(activation: _act.Activation) -> float:
    """`computed_gain(activation)`, once per activation, a Python float even under jit."""
    with jax.ensure_compile_time_eval():
        return _init.computed_gain(activation)


@functools.partial(
    jax.jit,
    static_argnames=(
        "n_train",
        "n_test",
        "in_features",
        "width",
        "depth",
        "out_features",
        "activation",
        "task",
        "gain",
    ),
)
def _teacher_split(
    key: jax.Array,
    *,
    n_train: int,
    n_test: int,
    in_features: int,
    width: int,
    depth: int,
    out_features: int,
    activation: _act.Activation,
    task: str,
    gain: float,
) -> Dataset:
    """`teacher` after validation, compiled once per configuration."""
    # One draw for weights and inputs: each random-number kernel takes XLA a good fraction of
    # a second to compile on a CPU, far longer than it takes to run.
    num_weights = _num_teacher_weights(in_features, width, depth, out_features)
    num_inputs = (n_train + n_test) * in_features
    draws = jax.random.normal(key, (num_weights + num_inputs,), jnp.float32)
    kernels = _teacher_kernels(draws[:num_weights], in_features, width, depth, out_features, gain)
    inputs = draws[num_weights:].reshape(n_train + n_test, in_features)
    x_train, x_test = inputs[:n_train], inputs[n_train:]
    out_train = _teacher_apply(kernels, activation, x_train)
    out_test = _teacher_apply(kernels, activation, x_test)
    shift = jnp.mean(out_train, axis=0, keepdims=True)
    if task == "classification":
        y_train = jnp.argmax(out_train - shift, axis=-1).astype(jnp.int32)
        y_test = jnp.argmax(out_test - shift, axis=-1).astype(jnp.int32)
    else:
        std = jnp.std(out_train, axis=0, keepdims=True)
        scale = jnp.where(std > 0, std, 1.0)
        y_train, y_test = (out_train - shift) / scale, (out_test - shift) / scale
    return Dataset(x_train, y_train, x_test, y_test)


# ----------------------------------------------------------------------------- adding problem


def _adding_sequences(uniforms: jax.Array, length: int) -> tuple[jax.Array, jax.Array]:
    """Adding-problem sequences `(n, length, 2)` and targets `(n, 1)` from U(0, 1) draws
    `(n, length + 2)`: the first `length` columns are the values, the last two place the
    markers (floor(u * k) is uniform on 0..k-1 up to float32 resolution, 2^-23, far finer
    than any sequence length)."""
    half = length // 2
    values = uniforms[:, :length]
    first = jnp.floor(uniforms[:, length] * half).astype(jnp.int32)
    second = half + jnp.floor(uniforms[:, length + 1] * (length - half)).astype(jnp.int32)
    # u < 1, but u * k can round up to k in float32: clamp into the half.
    first, second = jnp.minimum(first, half - 1), jnp.minimum(second, length - 1)
    steps = jnp.arange(length)[None, :]
    markers = ((steps == first[:, None]) | (steps == second[:, None])).astype(jnp.float32)
    target = jnp.sum(values * markers, axis=1, keepdims=True)
    return jnp.stack([values, markers], axis=-1), target


def adding_problem(key: jax.Array, n_train: int, n_test: int, length: int = 100) -> Dataset:
    """The adding problem: remember two marked numbers across a long sequence and add them.

    Each sequence has `length` steps of two channels: channel 0 holds values drawn
    uniformly from [0, 1); channel 1 is a marker that is 1 at exactly two steps, one drawn
    uniformly from the first half (steps `[0, length // 2)`) and one from the second half
    (`[length // 2, length)`), and 0 elsewhere. The target is the sum of the two marked
    values, so it lies in [0, 2) with mean 1. Predicting the constant 1 gives an MSE of
    `ADDING_BASELINE_MSE` = 1/6 ~ 0.167 (the variance of a sum of two U(0, 1)); a recurrent
    network has learned something only once it beats that. The first marker can be up to
    `length - 1` steps before the end, so the gradient that carries it must survive that
    many steps.

    Compiled once per sizes, so a second call with a new key is cheap; pure and traceable,
    so it also runs under `jax.jit` or `jax.vmap` over keys, with the sizes static.

    Args:
        key: PRNG key; the dataset is a deterministic function of it.
        n_train, n_test: numbers of sequences, >= 1.
        length: sequence length T, >= 2.

    Returns:
        A `Dataset` with x float32 `(n, length, 2)` (batch, time, channel) and y float32
        `(n, 1)`: a regression target with one output, like `teacher(task="regression")`.

    Raises:
        ValueError: a size below its minimum.

    Example:
        >>> import jax
        >>> split = adding_problem(jax.random.key(0), n_train=4, n_test=2, length=10)
        >>> split.x_train[..., 1].sum(axis=1).tolist()
        [2.0, 2.0, 2.0, 2.0]

    References:
        Hochreiter and Schmidhuber 1997, "Long Short-Term Memory", Experiment 4 (the task,
        there with values in [-1, 1] and a rescaled target). Le et al. 2015, "A Simple Way to
        Initialize Recurrent Networks of Rectified Linear Units", sec. 4.1 (values in [0, 1],
        the plain sum as target).
    """
    n_train = _positive_int("n_train", n_train)
    n_test = _positive_int("n_test", n_test)
    length = _positive_int("length", length)
    if length < 2:
        raise ValueError(f"length must be >= 2 (one marker in each half), got {length}")
    return _adding_split(key, n_train, n_test, length)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _adding_split(key: jax.Array, n_train: int, n_test: int, length: int) -> Dataset:
    """`adding_problem` after validation, compiled once per sizes."""
    # One draw for both parts: each random-number kernel is slow for XLA to compile on a CPU.
    uniforms = jax.random.uniform(key, (n_train + n_test, length + 2), jnp.float32)
    x_train, y_train = _adding_sequences(uniforms[:n_train], length)
    x_test, y_test = _adding_sequences(uniforms[n_train:], length)
    return Dataset(x_train, y_train, x_test, y_test)
