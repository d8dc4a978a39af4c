"""The `jaxgrad` command.

    jaxgrad demo                 the main results on built-in defaults, as a report
    jaxgrad sweep CONFIG.toml    run a sweep, resumable, results as Parquet parts
    jaxgrad plot RESULTS         figures from a sweep's results
    jaxgrad gain NAME            the gains of an activation: PyTorch's table, computed, measured
    jaxgrad phase ACTIVATION     the critical line and phase diagram of mean-field theory
    jaxgrad spectrum ACTIVATION  Jacobian spectra of a random network against depth

Every subcommand has --help. Bad input is refused with a one-line reason and exit status 2
before any computation.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import jax

from jaxgrad import activations, init

EXAMPLES = """examples:
  jaxgrad demo
  jaxgrad sweep sweep.toml --out runs/tanh
  jaxgrad plot runs/tanh --kind heatmap
  jaxgrad gain leaky_relu 0.2
  jaxgrad phase tanh --sigma-b2 0.05
  jaxgrad spectrum tanh --weights orthogonal --q-star 0.015625 --depth 2 8 32"""


class UsageError(Exception):
    """Bad input found before any computation: printed as one line, exit status 2."""


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    head = "  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True))
    return "\n".join([head, "-" * len(head), *lines])


def cmd_demo(args: argparse.Namespace) -> int:
    from jaxgrad import report

    out = Path(args.out)
    print(f"jaxgrad demo: writing the report to {out}/ ...")
    result = report.build_report(out)
    for section in result.sections:
        print()
        print(f"{section.title}: {section.text}")
        print()
        print(_table(section.header, section.rows))
    print()
    print(f"report: {out / 'report.html'} and {out / 'report.md'} ({result.seconds:.0f} s)")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from jaxgrad import sweep

    try:
        config = sweep.Sweep.from_toml(args.config)
    except (ValueError, TypeError) as error:
        raise UsageError(f"bad sweep configuration: {error}") from None
    out = Path(args.out) if args.out else Path(args.config).with_suffix("")
    total = len(sweep.plan(config))
    print(
        f"sweep: {config.size} networks in {len(config.groups())} programs, {total} chunks -> "
        f"{out}/parts"
    )
    frame = sweep.run(config, out=out, progress=not args.no_progress)
    print(
        f"{len(frame)} rows ({frame[['seed', 'sigma_w2', 'sigma_b2']].drop_duplicates().shape[0]}"
        f" settings) in {out}"
    )
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    import numpy as np

    from jaxgrad import plot
    from jaxgrad.store import ResultStore

    results = Path(args.results)
    if not (results / "parts").is_dir():
        raise UsageError(f"{results} holds no sweep results (no parts/ folder)")
    frame = ResultStore(results).read()
    if frame.empty:
        raise UsageError(f"{results} holds no sweep results yet")
    out = Path(args.out) if args.out else results / f"{args.kind}.png"
    if args.kind == "heatmap":
        key = frame.iloc[0][["activation", "init", "width", "norm", "residual", "sigma_b2"]]
        mask = np.ones(len(frame), bool)
        for name, value in key.items():
            mask &= (frame[name] == value).to_numpy()
        chosen = frame[mask]
        index = ["seed", "sigma_w2", "depth"]
        first = chosen[chosen.layer == 1].set_index(index)["act_grad_norm"]
        last = chosen[chosen.layer == chosen.depth].set_index(index)
        ratio = (first / last["act_grad_norm"]).groupby(["sigma_w2", "depth"]).mean()
        table = np.log10(ratio.unstack("sigma_w2"))
        xi_c = last.groupby("sigma_w2")["xi_c"].first().loc[table.columns].to_numpy()
        plot.gradient_heatmap(
            table.columns.to_numpy(), table.index.to_numpy(), table.to_numpy(), out, xi_c=xi_c
        )
        described = ", ".join(
            f"{name}={getattr(value, 'item', lambda v=value: v)()}" for name, value in key.items()
        )
        print(f"heatmap of {described} -> {out}")
    else:
        deepest = frame[frame.depth == frame.depth.max()]
        curves = {}
        for keys, rows in deepest.groupby(["activation", "init", "sigma_w2", "sigma_b2"]):
            if len(curves) == 8:
                break
            curves[", ".join(str(k) for k in keys)] = rows[rows.seed == rows.seed.min()]
        plot.layer_profiles(
            curves, out, fields=("act_std", "act_grad_norm"), relative_to_last=("act_grad_norm",)
        )
        print(f"layer profiles of {len(curves)} configurations -> {out}")
    return 0


def cmd_phase(args: argparse.Namespace) -> int:
    import jax.numpy as jnp
    import numpy as np

    from jaxgrad import theory

    rows = []
    for b2 in args.sigma_b2:
        critical = float(theory.critical_sigma_w2(args.activation, b2))
        rows.append([f"{b2:g}", f"{critical:.5f}"])
    print(f"critical line of {args.activation} (chi1 = 1):")
    print(_table(["sigma_b2", "critical sigma_w2"], rows))
    if args.out:
        from jaxgrad import plot

        w2 = jnp.linspace(args.sigma_w2_range[0], args.sigma_w2_range[1], 25)
        b2 = jnp.linspace(0.0, max(args.sigma_b2), 11)
        diagram = theory.phase_diagram(args.activation, w2, b2)
        critical = jax.vmap(lambda v: theory.critical_sigma_w2(args.activation, v))(b2)
        plot.phase_diagram(diagram, args.out, critical_sigma_w2=np.asarray(critical))
        print(f"phase diagram -> {args.out}")
    return 0


def cmd_spectrum(args: argparse.Namespace) -> int:
    from flax import nnx

    from jaxgrad import jacobian, nn, theory

    if args.q_star is not None:
        sigma_w2, sigma_b2 = theory.critical_point_for_q_star(args.activation, args.q_star)
    else:
        sigma_w2, sigma_b2 = args.sigma_w2, args.sigma_b2
    width, depths = args.width, tuple(sorted(set(args.depth)))
    if args.weights == "orthogonal":
        kernel_init = init.orthogonal(math.sqrt(sigma_w2))
    else:
        kernel_init = init.normal(math.sqrt(sigma_w2 / width))
    bias_init = init.normal(math.sqrt(sigma_b2)) if sigma_b2 > 0 else None
    model = nn.MLP(
        width,
        width,
        max(depths),
        activation=args.activation,
        kernel_init=kernel_init,
        bias_init=bias_init,
        rngs=nnx.Rngs(params=jax.random.key(args.seed)),
    )
    q = float(theory.q_star(args.activation, sigma_w2, sigma_b2))
    phi = activations.get(args.activation)
    x = phi(math.sqrt(q) * jax.random.normal(jax.random.key(args.seed + 1), (width,)))
    profile = jacobian.depth_profile(model, x, jax.random.key(args.seed), spectra_at=depths)
    summary = jax.device_get(jacobian.spectrum_summary(profile.spectra))
    rows = []
    for index, depth in enumerate(depths):
        predicted = theory.jacobian_spectrum(
            args.activation, sigma_w2, sigma_b2, depth, args.weights
        )
        rows.append(
            [
                str(depth),
                f"{float(summary.mean_sq[index]):.4g}",
                f"{float(summary.var_sq[index]):.4g}",
                f"{float(predicted.var_sq):.4g}",
                f"{float(summary.max[index]):.4g}",
                f"{float(summary.isometry_score[index]):.3f}",
            ]
        )
    print(
        f"{args.activation}, {args.weights} weights, width {width}, sigma_w2 {sigma_w2:.5g}, "
        f"sigma_b2 {sigma_b2:.3g} (q* = {q:.4g})"
    )
    print(_table(["depth", "mean s^2", "var s^2", "theory var", "max s", "isometry"], rows))
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


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _existing_file(text: str) -> str:
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return text


def build_parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="jaxgrad",
        description="See, measure and cure vanishing and exploding gradients.",
        formatter_class=raw,
        epilog=EXAMPLES,
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = sub.add_parser(
        "demo",
        help="the main results on built-in defaults, as a report",
        description="Seed experiment, phase diagram, gradient sweep and "
        "Jacobian spectra; writes report.html and report.md.",
        epilog="example:\n  jaxgrad demo --out jaxgrad-out",
        formatter_class=raw,
    )
    demo.add_argument("--out", default="jaxgrad-out", help="report folder (default jaxgrad-out)")
    demo.set_defaults(run=cmd_demo)

    sweep = sub.add_parser(
        "sweep",
        help="run a sweep from a TOML file",
        description="Run a grid of random networks; resumable.",
        epilog="example:\n  jaxgrad sweep sweep.toml --out runs/tanh\n\n"
        'sweep.toml:\n  depth = [10, 50, 100]\n  activation = ["tanh"]\n'
        "  sigma_w2 = [1.0, 1.5, 2.0, 3.0]\n  sigma_b2 = 0.05\n  seed = [0, 1]",
        formatter_class=raw,
    )
    sweep.add_argument("config", type=_existing_file, help="a TOML file of Sweep fields")
    sweep.add_argument("--out", help="results folder (default: the config's name)")
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar")
    sweep.set_defaults(run=cmd_sweep)

    plot = sub.add_parser(
        "plot",
        help="figures from a sweep's results",
        description="Draw a sweep's results.",
        epilog="examples:\n  jaxgrad plot runs/tanh\n"
        "  jaxgrad plot runs/tanh --kind heatmap --out heat.png",
        formatter_class=raw,
    )
    plot.add_argument("results", help="a folder written by `jaxgrad sweep`")
    plot.add_argument("--kind", choices=("profiles", "heatmap"), default="profiles")
    plot.add_argument("--out", help="PNG path (default: RESULTS/KIND.png)")
    plot.set_defaults(run=cmd_plot)

    gain = sub.add_parser(
        "gain",
        help="gains of an activation",
        description="PyTorch's table gain, the Gauss-Hermite gains and the measured gain.",
        epilog="examples:\n  jaxgrad gain tanh\n  jaxgrad gain leaky_relu 0.2",
        formatter_class=raw,
    )
    gain.add_argument("name", type=_activation_name, help="an activation name")
    gain.add_argument("param", type=float, nargs="?", default=None, help="leaky_relu slope")
    gain.set_defaults(run=cmd_gain)

    phase = sub.add_parser(
        "phase",
        help="critical line and phase diagram",
        description="Mean-field critical sigma_w2 for each sigma_b2.",
        epilog="examples:\n  jaxgrad phase tanh\n"
        "  jaxgrad phase erf --sigma-b2 0 0.05 0.1 --out phase.png",
        formatter_class=raw,
    )
    phase.add_argument("activation", type=_activation_name)
    phase.add_argument(
        "--sigma-b2", type=_nonnegative_float, nargs="+", default=[0.0, 0.01, 0.05, 0.1, 0.2, 0.3]
    )
    phase.add_argument("--sigma-w2-range", type=_nonnegative_float, nargs=2, default=[1.0, 4.0])
    phase.add_argument("--out", help="write a phase-diagram PNG here")
    phase.set_defaults(run=cmd_phase)

    spectrum = sub.add_parser(
        "spectrum",
        help="Jacobian spectra against depth",
        description="Singular values of d h_L / d h_0 of a random MLP.",
        epilog="examples:\n  jaxgrad spectrum tanh --q-star 0.015625\n"
        "  jaxgrad spectrum relu --sigma-w2 2 --weights gaussian",
        formatter_class=raw,
    )
    spectrum.add_argument("activation", type=_activation_name)
    spectrum.add_argument("--weights", choices=("orthogonal", "gaussian"), default="orthogonal")
    spectrum.add_argument("--sigma-w2", type=_nonnegative_float, default=1.0)
    spectrum.add_argument("--sigma-b2", type=_nonnegative_float, default=0.0)
    spectrum.add_argument(
        "--q-star",
        type=_nonnegative_float,
        default=None,
        help="use the critical point with this q* instead",
    )
    spectrum.add_argument("--width", type=_positive, default=200)
    spectrum.add_argument("--depth", type=_positive, nargs="+", default=[2, 8, 32])
    spectrum.add_argument("--seed", type=int, default=0)
    spectrum.set_defaults(run=cmd_spectrum)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UsageError as error:
        print(f"jaxgrad {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
