"""Tests of jaxgrad.data: digits, the teacher task and the adding problem.

References are independent of the code under test: scikit-learn's raw digits and a float64
numpy standardization, least squares for a linear teacher, a numpy recomputation of the
adding-problem targets and the closed-form baseline MSE 1/6.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits

from jaxgrad import data
from jaxgrad.init import computed_gain

NUM_DIGITS = 1797


def _raw_digits():
    bunch = load_digits()
    return bunch.data.astype(np.float64), bunch.target.astype(np.int64)


def _sorted_rows(features, labels):
    """Rows of [features, label] in lexicographic order: a multiset of samples."""
    table = np.concatenate([np.asarray(features, np.float64), np.asarray(labels)[:, None]], 1)
    return table[np.lexsort(table.T[::-1])]


def _assert_same(first, second):
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _differs(first, second):
    pairs = zip(first, second, strict=True)
    return any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in pairs)


# ----------------------------------------------------------------------------- Dataset


def test_dataset_is_a_pytree_of_four_arrays_that_jit_takes():
    split = data.adding_problem(jax.random.key(0), n_train=500, n_test=100, length=7)
    assert len(jax.tree.leaves(split)) == 4

    @jax.jit
    def constant_one_mse(dataset):
        return jnp.mean((dataset.y_test - 1.0) ** 2), dataset.is_classification

    mse, is_classification = constant_one_mse(split)
    np.testing.assert_allclose(mse, np.mean((np.asarray(split.y_test) - 1.0) ** 2), rtol=1e-6)
    assert not is_classification


# ----------------------------------------------------------------------------- digits


@pytest.mark.parametrize("test_fraction", [0.2, 0.25, 0.5, 0.9])
def test_digits_shapes_dtypes_and_sizes(test_fraction):
    split = data.digits(test_fraction=test_fraction)
    num_test = round(test_fraction * NUM_DIGITS)
    assert split.x_train.shape == (NUM_DIGITS - num_test, data.DIGITS_NUM_FEATURES)
    assert split.x_test.shape == (num_test, data.DIGITS_NUM_FEATURES)
    assert split.y_train.shape == (NUM_DIGITS - num_test,)
    assert split.y_test.shape == (num_test,)
    assert split.x_train.dtype == split.x_test.dtype == jnp.float32
    assert split.y_train.dtype == split.y_test.dtype == jnp.int32
    assert split.is_classification
    labels = np.concatenate([np.asarray(split.y_train), np.asarray(split.y_test)])
    assert set(labels.tolist()) == set(range(data.DIGITS_NUM_CLASSES))


def test_digits_split_is_deterministic_in_seed_and_differs_across_seeds():
    _assert_same(data.digits(seed=3), data.digits(seed=3))
    assert _differs(data.digits(seed=3), data.digits(seed=4))


@pytest.mark.parametrize("seed", [0, 7])
def test_digits_parts_are_disjoint_and_cover_the_raw_data(seed):
    features, labels = _raw_digits()
    split = data.digits(seed=seed, standardize=False)
    rows = np.concatenate([np.asarray(split.x_train), np.asarray(split.x_test)])
    targets = np.concatenate([np.asarray(split.y_train), np.asarray(split.y_test)])
    # Same multiset of (image, label) as scikit-learn's: nothing lost, nothing duplicated.
    np.testing.assert_array_equal(_sorted_rows(rows, targets), _sorted_rows(features, labels))


def test_stratified_split_indices_are_disjoint_and_complete():
    _, labels = _raw_digits()
    train, test = data._stratified_split(labels, 359, np.random.default_rng(0))
    assert test.size == 359
    assert np.intersect1d(train, test).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(NUM_DIGITS))


@pytest.mark.parametrize("test_fraction", [0.2, 0.5])
def test_digits_split_preserves_class_balance(test_fraction):
    _, labels = _raw_digits()
    split = data.digits(test_fraction=test_fraction, seed=1)
    counts = np.bincount(labels, minlength=10)
    test_counts = np.bincount(np.asarray(split.y_test), minlength=10)
    # Each class within 1.5 samples of its exact share (rounding of the total moves it < 0.5).
    np.testing.assert_array_less(np.abs(test_counts - test_fraction * counts), 1.5)


def test_digits_train_features_are_standardized_without_nan():
    split = data.digits(seed=2)
    x_train, x_test = np.asarray(split.x_train, np.float64), np.asarray(split.x_test)
    assert np.isfinite(x_train).all()
    assert np.isfinite(x_test).all()
    raw_train = np.asarray(data.digits(seed=2, standardize=False).x_train, np.float64)
    constant = raw_train.std(axis=0) == 0
    assert constant.sum() >= 3  # pixels that are blank in every training image
    np.testing.assert_allclose(x_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(x_train[:, ~constant].std(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(x_train[:, constant], 0.0)


def test_digits_test_set_uses_the_training_statistics():
    raw = data.digits(seed=5, standardize=False)
    raw_train, raw_test = np.asarray(raw.x_train, np.float64), np.asarray(raw.x_test, np.float64)
    mean, std = raw_train.mean(axis=0), raw_train.std(axis=0)
    reference = (raw_test - mean) / np.where(std == 0, 1.0, std)
    split = data.digits(seed=5)
    np.testing.assert_array_equal(np.asarray(split.y_test), np.asarray(raw.y_test))
    np.testing.assert_allclose(np.asarray(split.x_test), reference, rtol=1e-6, atol=1e-6)
    # The test set's own statistics would differ: proof that they were not used.
    assert np.abs(reference.mean(axis=0)).max() > 1e-3


def test_digits_raw_values_are_the_pixel_counts():
    split = data.digits(standardize=False)
    values = np.unique(np.asarray(split.x_train))
    np.testing.assert_array_equal(values, np.arange(17.0))


def test_digits_loads_once_and_protects_the_cache():
    data.digits()
    misses = data._load_digits.cache_info().misses
    data.digits(seed=9)
    assert data._load_digits.cache_info().misses == misses
    features, _ = data._load_digits()
    with pytest.raises(ValueError, match="read-only"):
        features[0, 0] = 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"test_fraction": 0.0}, "test_fraction must be in (0, 1), got 0.0"),
        ({"test_fraction": 1.0}, "test_fraction must be in (0, 1), got 1.0"),
        ({"test_fraction": 1.5}, "test_fraction must be in (0, 1), got 1.5"),
        ({"test_fraction": float("nan")}, "test_fraction must be finite, got nan"),
        ({"test_fraction": 1e-4}, "test_fraction=0.0001 gives 0 test samples out of 1797"),
        ({"test_fraction": 0.9999}, "gives 1797 test samples out of 1797"),
        ({"seed": -1}, "seed must be an int >= 0, got -1"),
        ({"seed": 1.5}, "seed must be an int >= 0, got 1.5"),
    ],
)
def test_digits_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        data.digits(**kwargs)


# ----------------------------------------------------------------------------- teacher
# Each distinct configuration compiles once, so the tests share a few.


@pytest.fixture(scope="module")
def default_teacher():
    return data.teacher(jax.random.key(1))


@pytest.mark.parametrize(
    ("kwargs", "y_shape", "y_dtype"),
    [
        ({}, (1024,), jnp.int32),
        ({"task": "regression", "out_features": 5}, (1024, 5), jnp.float32),
    ],
)
def test_teacher_shapes_and_dtypes(kwargs, y_shape, y_dtype):
    split = data.teacher(jax.random.key(1), **kwargs)
    assert split.x_train.shape == (1024, 32)
    assert split.x_test.shape == (256, 32)
    assert split.x_train.dtype == split.x_test.dtype == jnp.float32
    assert split.y_train.shape == y_shape
    assert split.y_test.shape == (256, *y_shape[1:])
    assert split.y_train.dtype == split.y_test.dtype == y_dtype
    assert split.is_classification == (y_dtype == jnp.int32)


def test_teacher_is_deterministic_in_key_and_differs_across_keys(default_teacher):
    _assert_same(data.teacher(jax.random.key(1)), default_teacher)
    other = data.teacher(jax.random.key(2))
    assert all(_differs([a], [b]) for a, b in zip(default_teacher, other, strict=True))


@pytest.mark.parametrize(("activation", "depth"), [("tanh", 2), ("relu", 6)])
def test_teacher_labels_use_most_classes(activation, depth):
    split = data.teacher(jax.random.key(1), activation=activation, depth=depth)
    for labels in (split.y_train, split.y_test):
        labels = np.asarray(labels)
        assert labels.min() >= 0
        assert labels.max() < 10
    counts = np.bincount(np.asarray(split.y_train), minlength=10)
    assert (counts > 0).sum() >= 8, counts
    assert counts.max() < 0.4 * counts.sum(), counts  # no class dominates


def test_linear_teacher_targets_are_an_exact_affine_map():
    """Reference: float64 least squares recovers the teacher and predicts the test targets."""
    split = data.teacher(
        jax.random.key(1), n_train=200, n_test=50, in_features=8, depth=3, out_features=3,
        activation="linear", task="regression",
    )  # fmt: skip
    x_train, x_test = (np.asarray(x, np.float64) for x in (split.x_train, split.x_test))
    design = np.concatenate([x_train, np.ones((200, 1))], axis=1)
    coefficients, *_ = np.linalg.lstsq(design, np.asarray(split.y_train, np.float64))
    np.testing.assert_allclose(design @ coefficients, split.y_train, atol=1e-5)
    prediction = np.concatenate([x_test, np.ones((50, 1))], axis=1) @ coefficients
    np.testing.assert_allclose(prediction, split.y_test, atol=1e-5)


def test_teacher_regression_targets_are_standardized_on_the_training_set():
    split = data.teacher(jax.random.key(1), task="regression", out_features=5)
    y_train = np.asarray(split.y_train, np.float64)
    np.testing.assert_allclose(y_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(y_train.std(axis=0), 1.0, atol=1e-5)
    assert np.isfinite(np.asarray(split.y_test)).all()
    assert _differs([split.y_test.mean(axis=0)], [np.zeros(5)])  # test targets are not refit


def test_teacher_default_gain_is_the_computed_gain(default_teacher):
    explicit = data.teacher(jax.random.key(1), gain=computed_gain("tanh"))
    _assert_same(explicit, default_teacher)
    assert _differs(data.teacher(jax.random.key(1), gain=0.5), default_teacher)


def test_teacher_under_jit_and_vmap_matches_eager(default_teacher):
    data._default_gain.cache_clear()  # the gain must come out a Python float while tracing
    _assert_same(jax.jit(data.teacher)(jax.random.key(1)), default_teacher)
    keys = jnp.stack([jax.random.key(2), jax.random.key(1)])
    stacked = jax.vmap(data.teacher)(keys)
    assert stacked.x_train.shape == (2, 1024, 32)
    _assert_same((leaf[1] for leaf in stacked), default_teacher)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_train": 0}, "n_train must be an int >= 1, got 0"),
        ({"n_test": 2.0}, "n_test must be an int >= 1, got 2.0"),
        ({"in_features": 0}, "in_features must be an int >= 1, got 0"),
        ({"width": -3}, "width must be an int >= 1, got -3"),
        ({"depth": -1}, "depth must be an int >= 0, got -1"),
        ({"out_features": 1}, "classification needs out_features >= 2 classes, got 1"),
        ({"task": "ranking"}, "task must be one of classification, regression, got 'ranking'"),
        ({"task": "regression", "n_train": 1}, "regression needs n_train >= 2"),
        ({"gain": 0.0}, "gain must be > 0, got 0.0"),
        ({"activation": "swoosh"}, "unknown activation 'swoosh'"),
    ],
)
def test_teacher_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        data.teacher(jax.random.key(1), **kwargs)


# ----------------------------------------------------------------------------- adding problem
# Sizes shared between tests, so each compiles once.
N_TRAIN, N_TEST = 500, 100


@pytest.mark.parametrize("length", [2, 7, 100])
def test_adding_problem_shapes_dtypes_and_values(length):
    split = data.adding_problem(jax.random.key(0), N_TRAIN, N_TEST, length)
    assert split.x_train.shape == (N_TRAIN, length, 2)
    assert split.x_test.shape == (N_TEST, length, 2)
    assert split.y_train.shape == (N_TRAIN, 1)
    assert split.y_test.shape == (N_TEST, 1)
    for array in split:
        assert array.dtype == jnp.float32
    assert not split.is_classification
    values = np.asarray(split.x_train[..., 0])
    assert values.min() >= 0.0
    assert values.max() < 1.0
    assert set(np.unique(np.asarray(split.x_train[..., 1])).tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("length", [2, 7, 100])
def test_adding_problem_has_one_marker_in_each_half(length):
    split = data.adding_problem(jax.random.key(0), N_TRAIN, N_TEST, length)
    half = length // 2
    for x in (split.x_train, split.x_test):
        markers = np.asarray(x[..., 1])
        np.testing.assert_array_equal(markers.sum(axis=1), 2.0)
        np.testing.assert_array_equal(markers[:, :half].sum(axis=1), 1.0)
        np.testing.assert_array_equal(markers[:, half:].sum(axis=1), 1.0)


@pytest.mark.parametrize("length", [7, 100])
def test_adding_problem_target_is_the_sum_of_the_marked_values(length):
    split = data.adding_problem(jax.random.key(0), N_TRAIN, N_TEST, length)
    for x, y in ((split.x_train, split.y_train), (split.x_test, split.y_test)):
        x = np.asarray(x)
        first = np.argmax(x[..., 1], axis=1)  # the first marked step
        second = length - 1 - np.argmax(x[:, ::-1, 1], axis=1)  # the last marked step
        rows = np.arange(x.shape[0])
        reference = x[rows, first, 0] + x[rows, second, 0]
        np.testing.assert_array_equal(np.asarray(y)[:, 0], reference)


@pytest.fixture(scope="module")
def large_adding():
    return data.adding_problem(jax.random.key(0), n_train=20_000, n_test=20_000, length=10)


def test_adding_problem_marker_positions_are_uniform_in_each_half(large_adding):
    counts = np.asarray(large_adding.x_train[..., 1]).sum(axis=0)  # 4000 expected at each step
    # 4000 +- 63 (binomial std); 5% is about 3 standard deviations.
    np.testing.assert_allclose(counts, 4000, rtol=0.05)


def test_constant_one_predictor_has_the_baseline_mse(large_adding):
    """E[(u1 + u2 - 1)^2] = 1/6; the standard error at n = 20000 is sqrt(7/180 / n) ~ 0.0014,
    so the tolerance 0.01 is about 7 standard errors."""
    assert pytest.approx(1 / 6) == data.ADDING_BASELINE_MSE
    for y in (large_adding.y_train, large_adding.y_test):
        y = np.asarray(y, np.float64)
        assert np.mean((y - 1.0) ** 2) == pytest.approx(data.ADDING_BASELINE_MSE, abs=0.01)
        assert np.mean(y) == pytest.approx(1.0, abs=0.01)


def test_adding_problem_is_deterministic_in_key_and_differs_across_keys():
    make = lambda k: data.adding_problem(k, N_TRAIN, N_TEST, 7)
    _assert_same(make(jax.random.key(0)), make(jax.random.key(0)))
    first, second = make(jax.random.key(0)), make(jax.random.key(1))
    assert all(_differs([a], [b]) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_train": 0}, "n_train must be an int >= 1, got 0"),
        ({"n_test": -1}, "n_test must be an int >= 1, got -1"),
        ({"length": 1}, "length must be >= 2 (one marker in each half), got 1"),
        ({"length": 0}, "length must be an int >= 1, got 0"),
        ({"length": 2.5}, "length must be an int >= 1, got 2.5"),
    ],
)
def test_adding_problem_rejects_bad_arguments(kwargs, message):
    arguments = {"n_train": 4, "n_test": 4, **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        data.adding_problem(jax.random.key(0), **arguments)
