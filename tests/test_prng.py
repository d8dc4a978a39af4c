"""The fused threefry: known-answer vectors, and bits and samples equal to JAX's threefry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgrad import init, prng

# Random123's known-answer vectors for Threefry-2x32 with 20 rounds (Salmon et al. 2011):
# (key, counter) -> output.
KNOWN_ANSWERS = [
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
]

SHAPES = [(), (1,), (7,), (3, 5), (2, 3, 4), (64, 33)]


@pytest.mark.parametrize(("key", "count", "expected"), KNOWN_ANSWERS)
def test_threefry2x32_matches_the_known_answers(key, count, expected):
    words = [jnp.uint32(v) for v in (*key, *count)]
    out = jax.jit(prng.threefry2x32)(*words)
    assert (int(out[0]), int(out[1])) == expected


def test_threefry2x32_matches_jax_on_arrays():
    counts = jax.random.bits(jax.random.key(3), (2, 1000), jnp.uint32)
    key = jax.random.key_data(jax.random.key(11))
    mine = prng.threefry2x32(key[0], key[1], counts[0], counts[1])
    theirs = jax.extend.random.threefry_2x32(key, counts.reshape(-1)).reshape(2, 1000)
    np.testing.assert_array_equal(np.stack(mine), theirs)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [jnp.uint8, jnp.uint16, jnp.uint32])
def test_bits_equal_jax_threefry(shape, dtype):
    key = jax.random.fold_in(jax.random.key(5), 9)
    mine = jax.random.bits(prng.fast_key(key), shape, dtype)
    assert mine.dtype == dtype
    np.testing.assert_array_equal(mine, jax.random.bits(key, shape, dtype))


def test_64_bit_words_equal_jax_threefry():
    with jax.enable_x64(True):
        key = jax.random.key(2)
        mine = jax.random.bits(prng.fast_key(key), (5, 6), jnp.uint64)
        np.testing.assert_array_equal(mine, jax.random.bits(key, (5, 6), jnp.uint64))
        normal = jax.random.normal(prng.fast_key(key), (100,), jnp.float64)
        np.testing.assert_array_equal(normal, jax.random.normal(key, (100,), jnp.float64))


def test_equal_without_partitionable_threefry():
    """With JAX's original (non-partitionable) threefry the draw falls back to it."""
    with jax.threefry_partitionable(False):
        key = jax.random.key(4)
        np.testing.assert_array_equal(
            jax.random.normal(prng.fast_key(key), (40, 3)), jax.random.normal(key, (40, 3))
        )


SAMPLERS = {
    "normal": lambda k: jax.random.normal(k, (50, 40)),
    "uniform": lambda k: jax.random.uniform(k, (50, 40), minval=-2.0, maxval=3.0),
    "truncated_normal": lambda k: jax.random.truncated_normal(k, -2.0, 2.0, (300,)),
    "bernoulli": lambda k: jax.random.bernoulli(k, 0.3, (300,)),
    "randint": lambda k: jax.random.randint(k, (300,), 0, 17),
    "permutation": lambda k: jax.random.permutation(k, 257),
    "orthogonal": lambda k: jax.random.orthogonal(k, 16),
    "split_then_normal": lambda k: jax.random.normal(jax.random.split(k, 3)[2], (9,)),
    "fold_in_then_uniform": lambda k: jax.random.uniform(jax.random.fold_in(k, 77), (9,)),
}


@pytest.mark.parametrize("name", SAMPLERS)
def test_samplers_draw_the_same_numbers(name):
    key = jax.random.key(8)
    sample = jax.jit(SAMPLERS[name])
    np.testing.assert_array_equal(sample(prng.fast_key(key)), sample(key))


def test_split_and_fold_in_keep_the_key_data():
    key = jax.random.key(1)
    fast = prng.fast_key(key)
    np.testing.assert_array_equal(
        jax.random.key_data(jax.random.split(fast, 4)),
        jax.random.key_data(jax.random.split(key, 4)),
    )
    np.testing.assert_array_equal(
        jax.random.key_data(jax.random.fold_in(fast, 3)),
        jax.random.key_data(jax.random.fold_in(key, 3)),
    )


def test_vmapped_draws_over_layer_keys_equal_jax():
    """The shape of a model's stacked kernels: one key per layer, vmapped."""
    keys = jax.random.split(jax.random.key(6), 12)

    def draw(k):
        return jax.random.normal(k, (20, 30))

    mine = jax.jit(jax.vmap(lambda k: draw(prng.fast_key(k))))(keys)
    np.testing.assert_array_equal(mine, jax.vmap(draw)(keys))


def test_fast_key_wraps_threefry_keys_only():
    typed = jax.random.key(0)
    assert jax.random.key_impl(prng.fast_key(typed)) == prng.FUSED_THREEFRY
    raw = jax.random.PRNGKey(0)
    wrapped = prng.fast_key(raw)
    assert jnp.issubdtype(wrapped.dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(jax.random.key_data(wrapped), raw)
    np.testing.assert_array_equal(jax.random.normal(wrapped, (5,)), jax.random.normal(raw, (5,)))
    fast = prng.fast_key(typed)
    assert prng.fast_key(fast) is fast
    other = jax.random.key(0, impl="rbg")
    assert prng.fast_key(other) is other
    batch = prng.fast_key(jax.random.split(typed, 3))
    assert batch.shape == (3,)


def test_is_threefry_names_the_keys_whose_draws_vmap_exactly():
    typed = jax.random.key(0)
    assert prng.is_threefry(typed)
    assert prng.is_threefry(prng.fast_key(typed))
    assert prng.is_threefry(jax.random.PRNGKey(0))
    assert prng.is_threefry(jax.random.split(typed, 3))
    assert not prng.is_threefry(jax.random.key(0, impl="rbg"))
    assert not prng.is_threefry(jax.random.key(0, impl="unsafe_rbg"))
    assert not prng.is_threefry(jnp.zeros((3,), jnp.uint32))  # not a (..., 2) key
    assert not prng.is_threefry(jnp.zeros((2,), jnp.float32))


INITIALIZERS = {
    "normal": (init.normal(0.05), (40, 30)),
    "uniform": (init.uniform(-1.0, 2.0), (40, 30)),
    "trunc_normal": (init.trunc_normal(), (40, 30)),
    "xavier_uniform": (init.xavier_uniform(5 / 3), (40, 30)),
    "kaiming_normal": (init.kaiming_normal(), (40, 30)),
    "orthogonal": (init.orthogonal(), (40, 30)),
    "sparse": (init.sparse(0.3), (40, 30)),
    "delta_orthogonal": (init.delta_orthogonal(), (3, 3, 8, 8)),
}


@pytest.mark.parametrize("name", INITIALIZERS)
def test_initializers_draw_what_the_plain_key_draws(name, monkeypatch):
    """jaxgrad's initializers draw through fast_key; with it replaced by the identity they
    draw from JAX's threefry itself, and the numbers must not change."""
    initializer, shape = INITIALIZERS[name]
    key = jax.random.key(12)
    wrapped = []
    fast_key = prng.fast_key
    monkeypatch.setattr(prng, "fast_key", lambda k: wrapped.append(k) or fast_key(k))
    fast = initializer(key, shape)
    assert wrapped, f"{name} did not draw through prng.fast_key"
    monkeypatch.setattr(prng, "fast_key", lambda k: k)
    np.testing.assert_array_equal(fast, initializer(key, shape))
