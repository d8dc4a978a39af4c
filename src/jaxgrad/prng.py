"""Threefry random bits in one fused pass: the same numbers as `jax.random`, drawn faster.

JAX's threefry2x32 lowers on CPU to a rolled loop of five steps over whole arrays: every step
reads and writes two arrays of the draw's size, so drawing a stack of kernels larger than the
cache runs at memory speed (about 11 ns a number for 100 x 400 x 400 on a 2-core CPU). Here
the 20 rounds are written out as elementwise operations that XLA fuses into one pass, about
2.7 to 4.5 times faster there (`benchmarks/prng_speed.py`), and bit for bit the same bits:
counters are the flat index of each element, as in JAX's partitionable threefry
(`jax_threefry_partitionable`, on by default), so every `jax.random` sampler (`normal`,
`uniform`, `truncated_normal`, `permutation`, ...) returns exactly what it returns for the
plain key.

`fast_key(key)` re-wraps a threefry key's data with this implementation; keys of other
implementations pass through unchanged. jaxgrad's initializers draw from it, so models,
`propagate` and sweeps build their weights faster and unchanged.

Example:
    >>> import jax
    >>> from jaxgrad.prng import fast_key
    >>> key = jax.random.key(0)
    >>> bool((jax.random.normal(fast_key(key), (3, 4)) == jax.random.normal(key, (3, 4))).all())
    True

References:
    Salmon, Moraes, Dror and Shaw 2011, "Parallel random numbers: as easy as 1, 2, 3" (the
    Threefry-2x32 counter-based generator, 20 rounds, its rotation constants and key schedule).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import random as _jax_random

_THREEFRY = _jax_random.threefry_prng_impl
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)  # Threefry's key-schedule constant (Salmon et al. 2011)


def _rotate_left(x: jax.Array, bits: int) -> jax.Array:
    return (x << np.uint32(bits)) | (x >> np.uint32(32 - bits))


def threefry2x32(
    key0: jax.Array, key1: jax.Array, count0: jax.Array, count1: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Threefry-2x32 with 20 rounds of the counter words (count0, count1) under the key
    words (key0, key1), all uint32 and broadcast together: five groups of four rounds, a key
    injection after each group.

    Args:
        key0: the key's first word.
        key1: the key's second word.
        count0: the counter's first word.
        count1: the counter's second word.

    Returns:
        The two output words, uint32 arrays of the broadcast shape.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import prng
        >>> zero = jnp.uint32(0)
        >>> [hex(int(word)) for word in prng.threefry2x32(zero, zero, zero, zero)]
        ['0x6b200159', '0x99ba4efe']

    References:
        Salmon, Moraes, Dror and Shaw 2011, "Parallel random numbers: as easy as 1, 2, 3"
        (the known-answer value above is Random123's for a zero key and counter).
    """
    schedule = (key0, key1, key0 ^ key1 ^ _PARITY)
    x0, x1 = count0 + schedule[0], count1 + schedule[1]
    for group in range(5):
        for bits in _ROTATIONS[group % 2]:
            x0 = x0 + x1
            x1 = _rotate_left(x1, bits) ^ x0
        x0 = x0 + schedule[(group + 1) % 3]
        x1 = x1 + schedule[(group + 2) % 3] + np.uint32(group + 1)
    return x0, x1


def _random_bits(key: jax.Array, bit_width: int, shape: Sequence[int]) -> jax.Array:
    """`bit_width`-bit words of the given shape from one raw key (2,) uint32, equal to
    threefry2x32's: element i's words are threefry2x32(key, (i >> 32, i & 0xffffffff))."""
    size = math.prod(shape)
    if not jax.config.jax_threefry_partitionable or size >= 2**32:
        return _THREEFRY.random_bits(key, bit_width, shape)
    low = jax.lax.iota(jnp.uint32, size).reshape(shape)
    bits0, bits1 = threefry2x32(key[0], key[1], jnp.zeros_like(low), low)
    if bit_width == 64:
        wide = jnp.dtype("uint64")
        return (bits0.astype(wide) << wide.type(32)) | bits1.astype(wide)
    return (bits0 ^ bits1).astype(jnp.dtype(f"uint{bit_width}"))


FUSED_THREEFRY = _jax_random.define_prng_impl(
    key_shape=_THREEFRY.key_shape,
    seed=_THREEFRY.seed,
    split=_THREEFRY.split,
    random_bits=_random_bits,
    fold_in=_THREEFRY.fold_in,
    name="threefry2x32_fused",
    tag="fry_fused",
)
"""threefry2x32 with the bits drawn by `threefry2x32` in one fused pass; seeding, splitting
and folding in are JAX's own."""


def is_threefry(key: jax.Array) -> bool:
    """Whether `key` draws with threefry: a typed key of JAX's threefry or of
    `FUSED_THREEFRY`, or a raw uint32 (..., 2) key while threefry is JAX's default. Threefry
    draws are the same vmapped over keys as one key at a time (rbg keys' are not).

    Args:
        key: a PRNG key or an array of keys.

    Returns:
        A Python bool.

    Example:
        >>> import jax
        >>> from jaxgrad import prng
        >>> prng.is_threefry(jax.random.key(0)), prng.is_threefry(jax.random.key(0, impl="rbg"))
        (True, False)
    """
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        impl = jax.random.key_impl(key)
        return impl == _THREEFRY.name or impl == FUSED_THREEFRY
    return (
        key.dtype == jnp.uint32
        and key.ndim >= 1
        and key.shape[-1] == 2
        and jax.config.jax_default_prng_impl == _THREEFRY.name
    )


def check_key(key: object, name: str = "key", *, single: bool = False) -> jax.Array:
    """`key` if it is a PRNG key, else a TypeError naming what was given.

    A PRNG key is a typed key array (`jax.random.key(seed)`) or a legacy raw uint32 key
    (`jax.random.PRNGKey(seed)`, last axis the key's words). Only the type, dtype and shape
    are read, so traced keys (under `jax.jit` and `jax.vmap`) pass.

    Args:
        key: what was given.
        name: the argument's name, for the message.
        single: require exactly one key (a typed key of shape (), a raw key of one axis),
            not an array of keys.

    Returns:
        `key`, unchanged.

    Raises:
        TypeError: not a PRNG key (or, with `single`, more than one).

    Example:
        >>> import jax
        >>> from jaxgrad import prng
        >>> prng.check_key(jax.random.key(0)).shape
        ()
        >>> prng.check_key(3)
        Traceback (most recent call last):
        TypeError: key must be a PRNG key, jax.random.key(seed) (or a legacy ...); got int 3
    """
    if isinstance(key, jax.Array | np.ndarray):
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            if not single or key.ndim == 0:
                return key
        elif key.dtype == np.uint32 and key.ndim >= 1 and (not single or key.ndim == 1):
            return jnp.asarray(key)
        given = f"an array of dtype {key.dtype} and shape {tuple(key.shape)}"
    else:
        given = f"{type(key).__name__} {key!r}"
    one = "one PRNG key" if single else "a PRNG key"
    raise TypeError(
        f"{name} must be {one}, jax.random.key(seed) (or a legacy jax.random.PRNGKey(seed)); "
        f"got {given}"
    )


def fast_key(key: jax.Array) -> jax.Array:
    """The same key drawing the same numbers through `FUSED_THREEFRY`, when it is a threefry
    key (typed, or a raw uint32 (..., 2) key while threefry is JAX's default); any other key
    is returned as it is.

    Args:
        key: a PRNG key or an array of keys.

    Returns:
        A typed key array of the same shape whose draws equal `key`'s.

    Example:
        >>> import jax
        >>> from jaxgrad import prng
        >>> key = jax.random.key(0)
        >>> fused = jax.random.uniform(prng.fast_key(key), (5,))
        >>> bool((fused == jax.random.uniform(key, (5,))).all())
        True
    """
    if not is_threefry(key):
        return key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if jax.random.key_impl(key) == FUSED_THREEFRY:
            return key
        key = jax.random.key_data(key)
    return jax.random.wrap_key_data(key, impl=FUSED_THREEFRY)
