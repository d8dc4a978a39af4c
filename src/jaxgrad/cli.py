"""The `jaxgrad` command.

    jaxgrad demo             the seed experiment on built-in defaults, as a table
    jaxgrad gain NAME        the gains of an activation: PyTorch's table, computed, measured

Every subcommand has --help. Bad input is refused with a one-line reason and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import sys

import jax

from jaxgrad import activations, init
from jaxgrad.propagation import diagnose, seed_configs, seed_experiment

SEED_LAYERS = (1, 10, 50, 100)


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:.3g}"


def seed_table(depth: int, width: int, batch_size: int, seed: int) -> str:
    """The seed experiment as a text table."""
    stats = seed_experiment(jax.random.key(seed), depth=depth, width=width, batch_size=batch_size)
    layers = [layer for layer in SEED_LAYERS if layer <= depth]
    header = (
        ["", "network"]
        + [f"std@{layer}" for layer in layers]
        + ["non-finite from", "grad first/last", "verdict"]
    )
    rows = []
    for config in seed_configs(width):
        layer_stats = jax.device_get(stats[config.label])
        verdict = diagnose(layer_stats)
        nonfinite = int(layer_stats.first_nonfinite_layer)
        rows.append(
            [f"({config.label})", config.description]
            + [_fmt(float(layer_stats.act_std[layer - 1])) for layer in layers]
            + [str(nonfinite) if nonfinite > 0 else "-", _fmt(verdict.ratio), verdict.verdict]
        )
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    head = "  ".join(cell.ljust(w) for cell, w in zip(header, widths, strict=True))
    return "\n".join([head, "-" * len(head), *lines])


def cmd_demo(args: argparse.Namespace) -> int:
    print(
        f"Seed experiment: {args.depth} fully connected layers of width {args.width}, "
        f"batch {args.batch_size}, inputs N(0, 1); std of each layer's output, and the "
        "first layer's weight-gradient norm over the last layer's (random-projection loss)."
    )
    print()
    print(seed_table(args.depth, args.width, args.batch_size, args.seed))
    print()
    measured = float(init.empirical_gain("tanh", jax.random.key(args.seed)))
    print(
        f"tanh gain: measured std(x)/std(tanh(x)) = {measured:.4f}, "
        f"PyTorch's calculate_gain('tanh') = {init.calculate_gain('tanh'):.4f} (5/3), "
        f"computed (forward) = {init.computed_gain('tanh'):.4f}"
    )
    return 0


def cmd_gain(args: argparse.Namespace) -> int:
    name = args.name
    try:
        table = init.calculate_gain(name, args.param)
    except ValueError:
        table = None
    params = {"negative_slope": args.param} if name == "leaky_relu" and args.param else {}
    phi = activations.get(name, **params)
    forward = init.computed_gain(phi, "forward")
    backward = init.computed_gain(phi, "backward")
    measured = float(init.empirical_gain(phi, jax.random.key(0)))
    print(f"activation        {name}")
    print(f"calculate_gain    {'not in the table' if table is None else f'{table:.6f}'}")
    print(f"computed forward  {forward:.6f}   1/sqrt(E[phi(z)^2]), z ~ N(0, 1)")
    print(f"computed backward {backward:.6f}   1/sqrt(E[phi'(z)^2])")
    print(f"empirical         {measured:.6f}   std(x)/std(phi(x)), 100000 samples")
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _activation_name(text: str) -> str:
    try:
        activations.get(text)
    except (ValueError, TypeError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="jaxgrad",
        description="See, measure and cure vanishing and exploding gradients.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  jaxgrad demo\n  jaxgrad gain tanh\n  jaxgrad gain leaky_relu 0.2",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = sub.add_parser(
        "demo",
        help="the seed experiment on built-in defaults",
        description="Propagate a batch through deep networks (a) to (f) and print a table.",
        epilog="example:\n  jaxgrad demo --depth 50",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--depth", type=_positive, default=100, help="layers (default 100)")
    demo.add_argument("--width", type=_positive, default=400, help="units (default 400)")
    demo.add_argument("--batch-size", type=_positive, default=16, help="batch (default 16)")
    demo.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
    demo.set_defaults(run=cmd_demo)

    gain = sub.add_parser(
        "gain",
        help="gains of an activation",
        description="PyTorch's table gain, the Gauss-Hermite gains and the measured gain.",
        epilog="examples:\n  jaxgrad gain tanh\n  jaxgrad gain leaky_relu 0.2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gain.add_argument("name", type=_activation_name, help="an activation name")
    gain.add_argument("param", type=float, nargs="?", default=None, help="leaky_relu slope")
    gain.set_defaults(run=cmd_gain)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
