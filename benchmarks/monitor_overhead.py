"""What recording a training run costs: a plain jitted train step against the same step with
`jaxgrad.recording.Recorder`, recording every step and every 16 steps, and beside it the
PyTorch equivalent: the same model, a plain step against one with forward hooks and
gradient hooks computing the same per-layer norms (as `wandb.watch` and mup's coordinate
check do).

The JAX step is the standard Flax NNX one: `nnx.value_and_grad` of the loss, then
`nnx.Optimizer.update` with Adam. The recorded step replaces the first by
`recorder.value_and_grad` and adds `recorder.update`. Each timed call runs 16 consecutive
calls of the jitted step from Python, as a training loop does (so every-16 recording is
timed over its whole period), in Flax's functional form (`nnx.split` once, `jax.jit` of a
pure step with the state donated: `nnx.jit` re-flattens its arguments' graphs on every
call, several milliseconds for a recorder's, which the functional form pays once).

The PyTorch step is `loss.backward()` then `torch.optim.Adam.step()`. The hooked step
records what the Recorder records, on the recording steps: for every module that owns
parameters (and attention), forward hooks take the mean, std, rms, largest magnitude and
non-finite flag of its input and output and the dead fraction of its input, and a hook on
the output tensor takes ||dL/d(output)||; after the backward, each parameter's gradient and
weight norms; after the step, each parameter's update norm (a copy of the parameters is
taken before the step), update-to-weight ratio and the norms of Adam's two moments. Every
step, like the Recorder's defaults, the loss, the global gradient norm and the global update
norm. Everything stays in preallocated tensors (no `.item()`). PyTorch runs in a process of
its own (two libraries' thread pools in one process compete for the cores).

Models (the same in both libraries):

- (a) mlp: 20 hidden layers of width 256, ReLU, batch 128 (jaxgrad's `nn.MLP`: stacked,
  applied with `jax.lax.scan`);
- (b) resnet: a ResNet-style CNN: a stem convolution, 3 residual blocks of two 3x3
  convolutions of 32 channels with batch norm, 16 x 16 images, batch 16;
- (c) transformer: 4 pre-LN blocks (4 heads, width 128, MLP 512, gelu), a final layer norm,
  vocabulary 256, sequence 64, batch 4 (JAX: `nnx.MultiHeadAttention` stacked with
  `nnx.vmap` and applied with `nnx.scan`).

Timing: rounds alternate the candidates (plain, recorded every step, every 16 steps, ...);
a round's ratio is a candidate's time over the plain step's in the same round, and the
reported ratio is the median of the rounds' ratios, with their range. Wall-clock and
process CPU time are both recorded (on a shared machine the CPU time varies less), with
the load average before and after and the thread settings.

Goals (issue 16): every step at most 1.10x the plain step, every 16 steps at most 1.02x.

Usage: python benchmarks/monitor_overhead.py [--quick] [--models mlp,resnet,transformer]
       [--default-malloc]
Both libraries run with glibc's malloc thresholds raised (`_timing.keep_large_allocations`)
unless --default-malloc.
Needs torch (`pip install -e .[bench]`); `--no-torch` times JAX alone.
Writes benchmarks/results/monitor_overhead.json (monitor_overhead_quick.json with --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

STEPS_PER_CALL = 16
MODELS = ("mlp", "resnet", "transformer")


# ----------------------------------------------------------------------------- timing


def _sample(candidates: dict, *, rounds: int, repeats: int) -> dict:
    """Alternating rounds: per candidate, per round, the wall and CPU seconds per step."""
    for run in candidates.values():  # compile / warm up
        run()
        run()
    wall = {name: [] for name in candidates}
    cpu = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, run in candidates.items():
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(repeats):
                run()
            calls = repeats * STEPS_PER_CALL
            wall[name].append((time.perf_counter() - start_wall) / calls)
            cpu[name].append((time.process_time() - start_cpu) / calls)
    return {"wall": wall, "cpu": cpu}


def _summary(samples: dict) -> dict:
    """Medians per candidate and, against the plain step, the median and range of the
    rounds' ratios."""
    out = {}
    for clock, per_name in samples.items():
        plain = per_name["plain"]
        entry = {"seconds_per_step": {k: statistics.median(v) for k, v in per_name.items()}}
        ratios = {}
        for name, values in per_name.items():
            if name == "plain":
                continue
            rounds = [v / p for v, p in zip(values, plain, strict=True)]
            ratios[name] = {
                "median": statistics.median(rounds),
                "min": min(rounds),
                "max": max(rounds),
            }
        entry["ratio"] = ratios
        out[clock] = entry
    return out


def _loadavg() -> list[float]:
    try:
        with open("/proc/loadavg") as file:
            return [float(x) for x in file.read().split()[:3]]
    except OSError:
        return []


# ----------------------------------------------------------------------------- JAX


def jax_cases() -> dict:
    import jax
    import jax.numpy as jnp
    from _models import ResNet, Transformer
    from flax import nnx

    from jaxgrad import nn

    key = jax.random.key(0)
    vectors = jax.random.normal(key, (128, 256))
    images = jax.random.normal(key, (16, 16, 16, 3))
    tokens = jax.random.randint(key, (4, 64), 0, 256)
    labels = jax.random.randint(jax.random.fold_in(key, 1), (128,), 0, 10)
    return {
        "mlp": (
            lambda: nn.MLP(256, 256, 20, 10, activation="relu", rngs=nnx.Rngs(0)),
            (vectors, labels),
        ),
        "resnet": (lambda: ResNet(nnx.Rngs(0)), (images, labels[:16])),
        "transformer": (
            lambda: Transformer(256, 128, 4, 4, nnx.Rngs(0), final_norm=True),
            (tokens, jnp.roll(tokens, 1)),
        ),
    }


def _jax_loop(state, step, every: int | None = None):
    """16 calls of a jitted step on the split state, from Python (Flax's functional form:
    `nnx.split` once, `jax.jit` of a pure function, so that the host's dispatch costs the
    same for every candidate and is not what is timed). With `every`, the step takes a
    static `record` flag, True on every `every`-th call (two compiled programs)."""
    import jax

    if every is None:
        jitted = jax.jit(step, donate_argnums=0)
    else:
        static = jax.jit(step, donate_argnums=0, static_argnums=1)
        calls = [0]

        def jitted(state):
            record = calls[0] % every == 0
            calls[0] += 1
            return static(state, record)

    holder = [state]

    def run():
        for _ in range(STEPS_PER_CALL):
            holder[0], loss = jitted(holder[0])
        return jax.block_until_ready(loss)

    return run


def jax_plain(make_model, batch):
    import optax
    from _models import cross_entropy
    from flax import nnx

    model = make_model()
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))

    def step(state):
        model, optimizer = nnx.merge(graphdef, state)
        loss, grads = nnx.value_and_grad(cross_entropy)(model, batch)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), loss

    return _jax_loop(state, step)


def jax_recorded(
    make_model, batch, every: int, check_every_step: bool = True, static: bool = False
):
    import optax
    from _models import cross_entropy
    from flax import nnx

    from jaxgrad import recording

    model = make_model()
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    recorder = recording.Recorder(
        model, cross_entropy, batch, every=every, capacity=64, check_every_step=check_every_step
    )
    graphdef, state = nnx.split((model, optimizer, recorder))

    def step(state, record=None):
        model, optimizer, recorder = nnx.merge(graphdef, state)
        loss, grads = recorder.value_and_grad(model, batch, record=record)
        recorder.update(model, optimizer, optimizer.update(model, grads))
        return nnx.state((model, optimizer, recorder)), loss

    return _jax_loop(state, step, every if static else None)


def time_jax(name: str, rounds: int, repeats: int) -> dict:
    make_model, batch = jax_cases()[name]
    candidates = {
        "plain": jax_plain(make_model, batch),
        "every_step": jax_recorded(make_model, batch, 1),
        "every_16": jax_recorded(make_model, batch, 16),
        "every_16_static": jax_recorded(make_model, batch, 16, static=True),
        "every_16_no_step_checks": jax_recorded(make_model, batch, 16, check_every_step=False),
        "every_16_static_no_step_checks": jax_recorded(
            make_model, batch, 16, check_every_step=False, static=True
        ),
    }
    return _summary(_sample(candidates, rounds=rounds, repeats=repeats))


# ----------------------------------------------------------------------------- PyTorch


def torch_models():
    """The three models in PyTorch (defined here so that importing this script does not
    need torch)."""
    import torch
    from torch import nn

    def mlp():
        layers = []
        for _ in range(20):
            layers += [nn.Linear(256, 256), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(256, 10))

    class ResBlock(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(channels)
            self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
            self.bn2 = nn.BatchNorm2d(channels)

        def forward(self, x):
            h = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(x + self.bn2(self.conv2(h)))

    class ResNet(nn.Module):
        def __init__(self, channels=32, blocks=3):
            super().__init__()
            self.stem = nn.Conv2d(3, channels, 3, padding=1)
            self.blocks = nn.ModuleList([ResBlock(channels) for _ in range(blocks)])
            self.head = nn.Linear(channels, 10)

        def forward(self, x):
            h = torch.relu(self.stem(x))
            for block in self.blocks:
                h = block(h)
            return self.head(h.mean(dim=(2, 3)))

    class Block(nn.Module):
        def __init__(self, width, heads):
            super().__init__()
            self.ln1 = nn.LayerNorm(width)
            self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
            self.ln2 = nn.LayerNorm(width)
            self.up = nn.Linear(width, 4 * width)
            self.down = nn.Linear(4 * width, width)

        def forward(self, x):
            h = self.ln1(x)
            x = x + self.attn(h, h, h, need_weights=False)[0]
            return x + self.down(torch.nn.functional.gelu(self.up(self.ln2(x)), approximate="tanh"))

    class Transformer(nn.Module):
        def __init__(self, vocab=256, width=128, heads=4, depth=4):
            super().__init__()
            self.embed = nn.Embedding(vocab, width)
            self.blocks = nn.ModuleList([Block(width, heads) for _ in range(depth)])
            self.final = nn.LayerNorm(width)
            self.head = nn.Linear(width, vocab)

        def forward(self, tokens):
            x = self.embed(tokens)
            for block in self.blocks:
                x = block(x)
            return self.head(self.final(x))

    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 256, (4, 64), generator=generator)
    return {
        "mlp": (
            mlp,
            (torch.randn(128, 256, generator=generator), torch.randint(0, 10, (128,))),
        ),
        "resnet": (
            ResNet,
            (torch.randn(16, 3, 16, 16, generator=generator), torch.randint(0, 10, (16,))),
        ),
        "transformer": (Transformer, (tokens, torch.roll(tokens, 1, dims=1))),
    }


class TorchRecorder:
    """Forward and gradient hooks recording, every `every` steps, the per-layer statistics
    a `jaxgrad.recording.Recorder` records (attention's logits aside: PyTorch's fused
    attention does not expose them), into preallocated tensors; every step the loss and the
    global gradient and update norms."""

    def __init__(self, model, optimizer, every: int, check_every_step=True, capacity=64):
        import torch
        from torch import nn

        self.torch, self.optimizer, self.every = torch, optimizer, every
        self.check_every_step = check_every_step
        self.step = 0  # the host runs the loop: it knows the step without a synchronization
        self.recording = False
        self.before = None
        self.modules = [
            m
            for m in model.modules()
            if any(True for _ in m.parameters(recurse=False))
            or isinstance(m, nn.MultiheadAttention)
        ]
        self.params = [p for p in model.parameters() if p.requires_grad]
        nan = float("nan")
        # per module: input mean, std, rms, max_abs, nonfinite, dead; output the first 5;
        # ||dL/d(output)||
        self.module_rows = torch.full((capacity, len(self.modules), 12), nan)
        # per parameter: grad, weight, update norms, ratio, Adam's two moments
        self.param_rows = torch.full((capacity, len(self.params), 6), nan)
        self.step_rows = torch.full((4096, 3), nan)  # loss, grad norm, update norm
        self.row = 0
        for index, module in enumerate(self.modules):
            module.register_forward_hook(self._forward_hook(index))

    @staticmethod
    def _moments(torch, x):
        x = x.detach().float()
        mean = x.mean()
        std = x.std(correction=0)
        max_abs = x.abs().amax()
        nonfinite = ~(torch.isfinite(mean) & torch.isfinite(max_abs))
        return [mean, std, torch.hypot(mean, std), max_abs, nonfinite.float()]

    def _forward_hook(self, index):
        torch = self.torch

        def hook(module, inputs, output):
            if not self.recording:
                return
            out = output[0] if isinstance(output, tuple) else output
            x = inputs[0] if inputs else None
            stats = self.module_rows[self.row % len(self.module_rows), index]
            if x is not None and torch.is_floating_point(x):
                unit_axis = 1 if x.ndim == 4 else x.ndim - 1  # channels of NCHW, else last
                dims = [d for d in range(x.ndim) if d != unit_axis]
                dead = (x.detach().abs().amax(dim=dims) == 0).float().mean()
                stats[:6] = torch.stack([*self._moments(torch, x), dead])
            stats[6:11] = torch.stack(self._moments(torch, out))
            if out.requires_grad:

                def grad_hook(grad):
                    stats[11] = torch.linalg.vector_norm(grad.float())

                out.register_hook(grad_hook)

        return hook

    def before_step(self, loss):
        """After `loss.backward()`, before `optimizer.step()`."""
        torch = self.torch
        slot = self.step % len(self.step_rows)
        self.step_rows[slot, 0] = loss.detach()
        if not (self.recording or self.check_every_step):
            return
        grads = [p.grad for p in self.params]
        grad_norms = torch.stack(torch._foreach_norm(grads))
        self.step_rows[slot, 1] = torch.linalg.vector_norm(grad_norms)
        if self.recording:
            params = self.param_rows[self.row % len(self.param_rows)]
            params[:, 0] = grad_norms
            params[:, 1] = torch.stack(torch._foreach_norm([p.detach() for p in self.params]))
        self.before = torch._foreach_mul([p.detach() for p in self.params], 1.0)  # a copy

    def after_step(self):
        """After `optimizer.step()`."""
        torch = self.torch
        if self.before is None:
            self._next()
            return
        updates = torch._foreach_sub([p.detach() for p in self.params], self.before)
        update_norms = torch.stack(torch._foreach_norm(updates))
        self.step_rows[self.step % len(self.step_rows), 2] = torch.linalg.vector_norm(update_norms)
        if self.recording:
            params = self.param_rows[self.row % len(self.param_rows)]
            params[:, 2] = update_norms
            params[:, 3] = update_norms / params[:, 1]
            states = [self.optimizer.state[p] for p in self.params]
            params[:, 4] = torch.stack(torch._foreach_norm([s["exp_avg"] for s in states]))
            params[:, 5] = torch.stack(torch._foreach_norm([s["exp_avg_sq"] for s in states]))
            self.row += 1
        self.before = None
        self._next()

    def _next(self):
        self.step += 1
        self.recording = self.step % self.every == 0

    def start(self):
        self.recording = self.step % self.every == 0


def time_torch(name: str, rounds: int, repeats: int) -> dict:
    import torch

    make_model, (inputs, targets) = torch_models()[name]
    loss_fn = torch.nn.CrossEntropyLoss()

    def candidate(every: int | None, check_every_step: bool = True):
        torch.manual_seed(0)
        model = make_model()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        recorder = None
        if every is not None:
            recorder = TorchRecorder(model, optimizer, every, check_every_step)
        if recorder is not None:
            recorder.start()

        def run():
            for _ in range(STEPS_PER_CALL):
                optimizer.zero_grad(set_to_none=True)
                logits = model(inputs)
                loss = loss_fn(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
                loss.backward()
                if recorder is not None:
                    recorder.before_step(loss)
                optimizer.step()
                if recorder is not None:
                    recorder.after_step()
            return loss

        return run

    candidates = {
        "plain": candidate(None),
        "every_step": candidate(1),
        "every_16": candidate(16),
        "every_16_no_step_checks": candidate(16, check_every_step=False),
    }
    return _summary(_sample(candidates, rounds=rounds, repeats=repeats))


# ----------------------------------------------------------------------------- main


def _torch_in_its_own_process(
    name: str, rounds: int, repeats: int, threads: int, default_malloc: bool = False
) -> dict:
    command = [sys.executable, __file__, "--torch-worker", name, "--rounds", str(rounds)]
    command += ["--repeats", str(repeats), "--threads", str(threads)]
    if default_malloc:
        command.append("--default-malloc")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"torch worker for {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _print(library: str, name: str, result: dict) -> None:
    wall, cpu = result["wall"], result["cpu"]
    plain = cpu["seconds_per_step"]["plain"] * 1e3
    parts = [
        f"{k} {v['median']:.3f}x (wall {wall['ratio'][k]['median']:.3f}x)"
        for k, v in cpu["ratio"].items()
    ]
    print(f"{library} {name}: plain {plain:.2f} ms/step (cpu), " + ", ".join(parts), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and repeats")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset")
    parser.add_argument("--no-torch", action="store_true", help="time JAX alone")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads for XLA's and PyTorch's CPU kernels (default 1: steadier on a shared "
        "machine); XLA_FLAGS, where set, is left as it is",
    )
    parser.add_argument("--output", help="results file name (default monitor_overhead[_quick])")
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="keep glibc's malloc thresholds (default: raised, _timing.keep_large_allocations)",
    )
    parser.add_argument("--torch-worker", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    from _timing import keep_large_allocations  # (imports jax, whose backend starts later)

    malloc = "glibc defaults" if args.default_malloc else keep_large_allocations()
    if args.torch_worker:
        import torch

        torch.set_num_threads(args.threads)
        result = time_torch(args.torch_worker, args.rounds, args.repeats)
        result["threads"] = {"torch_num_threads": torch.get_num_threads()}
        result["torch"] = torch.__version__
        print(json.dumps(result))
        return
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = [name for name in names if name not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    rounds, repeats = (3, 1) if args.quick else (5, 1)
    if "XLA_FLAGS" not in os.environ and args.threads == 1:  # before jax is imported
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = flags

    import jax
    from _timing import write

    results: dict = {}
    payload = {
        "steps_per_call": STEPS_PER_CALL,
        "rounds": rounds,
        "repeats": repeats,
        "quick": args.quick,
        "threads": {
            "requested": args.threads,
            "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
            "jax_devices": [str(device) for device in jax.devices()],
            "cpu_count": os.cpu_count(),
        },
        "goals": {"every_step": 1.10, "every_16": 1.02},
        "clocks": "wall: perf_counter; cpu: process_time (all of the process's threads)",
        "malloc": malloc,
        "results": results,
    }
    output = args.output or ("monitor_overhead_quick" if args.quick else "monitor_overhead")
    for name in names:
        entry: dict = {"load_before": _loadavg()}
        entry["jax"] = time_jax(name, rounds, repeats)
        _print("jax", name, entry["jax"])
        if not args.no_torch:
            entry["torch"] = _torch_in_its_own_process(
                name, rounds, repeats, args.threads, args.default_malloc
            )
            _print("torch", name, entry["torch"])
        entry["load_after"] = _loadavg()
        results[name] = entry
        path = write(output, payload)  # after each model: a cut run keeps what it measured
        print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    main()
