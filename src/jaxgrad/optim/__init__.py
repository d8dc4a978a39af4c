"""Optax gradient transformations against vanishing and exploding gradients, and ready chains.

Every public factory validates its hyperparameters when called and returns an
`optax.GradientTransformation` with pure `init`/`update` and a `NamedTuple` state whose
structure (and dtypes) are fixed by `init`, so the transforms compose with `optax.chain`,
run under `jax.jit` without retracing and under `jax.vmap` (over gradients, or over a traced
hyperparameter). Layouts are JAX/Flax's: a dense kernel is `(in, out)`, a convolution kernel
`(*spatial, in, out)`.

- Clipping: `clip_by_value` (Keras' clipvalue), `clip_by_global_norm` (Pascanu et al. 2013,
  or PyTorch's `clip_grad_norm_` with `eps`), `clip_by_layer_norm` (per parameter leaf) and
  `adaptive_clip` (unit-wise AGC, Brock et al. 2021).
- Regularization: `add_l1` (the L1 subgradient added to the gradient), `l1_proximal` (exact
  soft-thresholding after the step). L2 is weight decay: `optax.add_decayed_weights` before
  the learning-rate scaling (coupled, PyTorch's `weight_decay`) or `optax.adamw` (decoupled,
  Loshchilov and Hutter 2019); `make_optimizer` uses them.
- Constraints: `max_norm` (Keras' MaxNorm), which projects the parameters after the update.
- Monitoring: `monitor` measures per-parameter gradient, update and weight norms, their
  ratios and Adam's moments every k updates (it works inside `nnx.Optimizer`);
  `monitor_states` finds every monitor of a chain by name; `guard` skips an update with
  non-finite gradients or a norm spike and records what it skipped.
- `make_optimizer` builds a ready chain for "sgd", "momentum", "rmsprop", "adam", "adamw".

Transforms that rewrite the parameters (`l1_proximal`, `max_norm`) see the step
`p + u` only once the learning rate has been applied, so they belong at the end of a chain.

A "unit" (for `adaptive_clip` and `max_norm`) is one output feature: a kernel's slice along
its last axis, whose norm runs over all the other axes (axis 0 of a dense `(in, out)` kernel,
axes 0..2 of a `(kh, kw, in, out)` convolution kernel). A vector or scalar (a bias, a norm
scale) is a single unit, as in optax's `unitwise_norm` and the NFNet reference code.

Example:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> from jaxgrad import optim
    >>> params = {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}
    >>> opt = optim.make_optimizer("adam", 1e-3, clip_norm=1.0, monitor=True)
    >>> state = opt.init(params)
    >>> grads = {"kernel": jnp.full((3, 2), 10.0), "bias": jnp.ones(2)}
    >>> updates, state = opt.update(grads, state, params)
    >>> params = optax.apply_updates(params, updates)
    >>> round(float(optim.monitor_state(state).global_grad_norm), 3)
    24.536

References:
    Pascanu, Mikolov and Bengio 2013, "On the difficulty of training recurrent neural
    networks". Brock, De, Smith and Simonyan 2021, "High-Performance Large-Scale Image
    Recognition Without Normalization". Srivastava et al. 2014, "Dropout: A Simple Way to
    Prevent Neural Networks from Overfitting" (max-norm constraints). Duchi and Singer 2009,
    "Efficient Online and Batch Learning Using Forward Backward Splitting" (the L1 proximal
    step). Loshchilov and Hutter 2019, "Decoupled Weight Decay Regularization".
"""

from jaxgrad.optim.chains import OPTIMIZERS as OPTIMIZERS
from jaxgrad.optim.chains import make_optimizer as make_optimizer
from jaxgrad.optim.clipping import ClipByGlobalNormState as ClipByGlobalNormState
from jaxgrad.optim.clipping import adaptive_clip as adaptive_clip
from jaxgrad.optim.clipping import clip_by_global_norm as clip_by_global_norm
from jaxgrad.optim.clipping import clip_by_layer_norm as clip_by_layer_norm
from jaxgrad.optim.clipping import clip_by_value as clip_by_value
from jaxgrad.optim.monitoring import SKIP_NONFINITE as SKIP_NONFINITE
from jaxgrad.optim.monitoring import SKIP_SPIKE as SKIP_SPIKE
from jaxgrad.optim.monitoring import GuardState as GuardState
from jaxgrad.optim.monitoring import MonitorState as MonitorState
from jaxgrad.optim.monitoring import guard as guard
from jaxgrad.optim.monitoring import guard_states as guard_states
from jaxgrad.optim.monitoring import leaf_names as leaf_names
from jaxgrad.optim.monitoring import monitor as monitor
from jaxgrad.optim.monitoring import monitor_state as monitor_state
from jaxgrad.optim.monitoring import monitor_states as monitor_states
from jaxgrad.optim.penalties import L1ProximalState as L1ProximalState
from jaxgrad.optim.penalties import add_l1 as add_l1
from jaxgrad.optim.penalties import l1_proximal as l1_proximal
from jaxgrad.optim.penalties import max_norm as max_norm
