"""Collect benchmarks/results/*.json into the tables of benchmarks/README.md.

Usage: python benchmarks/report.py   (after running the benchmark scripts)
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def machine_line(result: dict) -> str:
    machine = result["machine"]
    extra = f", torch {result['torch']}" if "torch" in result else ""
    return (
        f"_{machine['device']}, {machine['cpu_count']} CPUs, jax {machine['jax']}{extra}; "
        f"{machine['platform']}_"
    )


def probe_speed(result: dict) -> list[str]:
    lines = [
        "### Seed experiment with per-layer gradient norms (`probe_speed.py`)",
        "",
        machine_line(result),
        "",
        *quick_note(result),
        "Every sample in a fresh process that imports one library (`_timing.isolated`).",
        "",
        "| depth | width | batch | jaxgrad probe (ms) | jax.grad through scan (ms) "
        "| PyTorch eager (ms) | probe vs PyTorch |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["rows"]:
        seconds = row["seconds"]
        torch_ms = f"{1e3 * seconds['torch_eager']:.1f}" if "torch_eager" in seconds else "-"
        speedup = row.get("speedup_vs_torch", {}).get("jaxgrad_probe")
        lines.append(
            f"| {row['depth']} | {row['width']} | {row['batch']} "
            f"| {1e3 * seconds['jaxgrad_probe']:.1f} | {1e3 * seconds['jaxgrad_autodiff']:.1f} "
            f"| {torch_ms} | {f'{speedup:.2f}x' if speedup else '-'} |"
        )
    built = [row for row in result["rows"] if "with_build" in row]
    if built:
        lines += [
            "",
            "The whole script, building the network with its initializer and then the pass: "
            "`jaxgrad.propagate` against PyTorch from `manual_seed` on (`nn.Linear` "
            "construction, `nn.init`, the pass). `propagate` as called (Xavier uniform "
            "weights, redrawn in each scan) and with `redraw=False` (drawn once, stored).",
            "",
            "| depth | width | batch | jaxgrad propagate (ms) | stored, redraw=False (ms) "
            "| PyTorch eager (ms) | propagate vs PyTorch | redrawn vs stored |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row in built:
            seconds = row["with_build"]["seconds"]
            stored = seconds.get("jaxgrad_propagate_stored")
            ratio = row["with_build"].get("redrawn_vs_stored")
            lines.append(
                f"| {row['depth']} | {row['width']} | {row['batch']} "
                f"| {1e3 * seconds['jaxgrad_propagate']:.1f} "
                f"| {f'{1e3 * stored:.1f}' if stored else '-'} "
                f"| {1e3 * seconds['torch_eager']:.1f} "
                f"| {row['with_build']['speedup_vs_torch']:.2f}x "
                f"| {f'{ratio:.2f}x' if ratio else '-'} |"
            )
    return lines


def compile_time(result: dict) -> list[str]:
    lines = [
        "### Compile time against depth (`compile_time.py`)",
        "",
        machine_line(result),
        "",
        "| method | depth | compile (s) | relative to depth 10 |",
        "| --- | --- | --- | --- |",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['method']} | {row['depth']} | {row['seconds']:.2f} "
            f"| {row['ratio_to_10']:.2f}x |"
        )
    return lines


def quick_note(result: dict) -> list[str]:
    return ["_A `--quick` run: fewer cases and rounds._", ""] if result.get("quick") else []


def sweep_speed(result: dict) -> list[str]:
    seed = result["seed_sweep"]
    seconds = seed["seconds"]
    speedup = seed.get("speedup_vs_torch", {})
    labels = {
        "engine": "jaxgrad sweep engine (a chunk program per seed)",
        "sweep_run": "`sweep.run` end to end (DataFrame, theory columns)",
        "torch_eager": "PyTorch eager (`nn.Linear` loop per configuration)",
    }
    count = seed["configurations"]
    lines = [
        "### Sweep throughput (`sweep_speed.py`)",
        "",
        machine_line(result),
        "",
        *quick_note(result),
        f"A {count}-configuration sigma_w x seed sweep, depth {seed['depth']}, width "
        f"{seed['width']}, batch {seed['batch']}, tanh, with per-layer stds and gradient norms "
        "(every sample in a fresh process that imports one library, `_timing.isolated`):",
        "",
        "| method | seconds | configurations/s | speedup vs PyTorch |",
        "| --- | --- | --- | --- |",
    ]
    for name, label in labels.items():
        if name in seconds:
            ratio = speedup.get(name)
            lines.append(
                f"| {label} | {seconds[name]:.2f} | {count / seconds[name]:.1f} "
                f"| {f'{ratio:.1f}x' if ratio else '-'} |"
            )
    if "torch_build_fraction" in seed:
        lines += [
            "",
            f"PyTorch spends {100 * seed['torch_build_fraction']:.0f}% of its time building and "
            "initializing the layers.",
        ]
    lines += [
        "",
        "Vmapped chunk program against Python loops over the same points (points per second):",
        "",
        "| depth | width | batch | points | vmapped | loop, vmap size 1 "
        "| loop, weights drawn once | vmapped vs vmap-1 loop | vmapped vs weights-once loop |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["throughput"]:
        rate, ratio = row["points_per_second"], row["vmapped_over"]
        lines.append(
            f"| {row['depth']} | {row['width']} | {row['batch']} | {row['points']} "
            f"| {rate['vmapped']:.2f} | {rate['loop_vmap1']:.2f} "
            f"| {rate['loop_shared_weights']:.2f} | {ratio['loop_vmap1']:.2f}x "
            f"| {ratio['loop_shared_weights']:.2f}x |"
        )
    return lines


def gflops(result: dict) -> list[str]:
    lines = [
        "### Achieved GFLOP/s, forward plus backward (`gflops.py`)",
        "",
        machine_line(result),
        "",
        *quick_note(result),
        f"Peak: a float32 {result['peak_size']} x {result['peak_size']} `jnp.dot`, timed in "
        "the same rounds. GFLOP/s of the counted products (see the script's docstring); "
        "fraction of that peak in parentheses.",
        "",
        "| width | batch | depth | points | GFLOP per call | peak GFLOP/s | engine "
        "| engine, 16 points | engine without weight draw | products alone "
        "| weight draw, share of engine time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["rows"]:
        rate, fraction, seconds = row["gflops"], row["fraction_of_peak"], row["seconds"]
        cells = " | ".join(
            f"{rate[name]:.0f} ({100 * fraction[name]:.0f}%)" if name in rate else "-"
            for name in ("engine", "engine_16", "engine_compute", "products")
        )
        draw = 1 - seconds["engine_compute"] / seconds["engine"]
        lines.append(
            f"| {row['width']} | {row['batch']} | {row['depth']} | {row['points']} "
            f"| {row['flops']['total'] / 1e9:.1f} | {rate['peak']:.0f} | {cells} "
            f"| {100 * draw:.0f}% |"
        )
    met = result.get("target_met", {})
    if met:
        labels = {
            "engine": "engine (4 points)",
            "engine_16": "engine (16 points)",
            "engine_compute": "engine without weight draw",
        }
        verdict = ", ".join(
            f"{labels[name]} {'met' if value else 'not met'}" for name, value in met.items()
        )
        lines += ["", f"Target >= 70% of peak at width >= 512: {verdict}."]
    return lines


def jacobian_speed(result: dict) -> list[str]:
    lines = [
        "### Jacobian spectra against naive jacrev + SVD (`jacobian_speed.py`)",
        "",
        machine_line(result),
        "",
        *quick_note(result),
        "Milliseconds; speedups against naive `jax.jacrev` + `jnp.linalg.svd`, jitted (for "
        "`depth_profile`: the naive method run at each of the depths).",
        "",
        "| width | depth | naive (ms) | exact (ms) | exact speedup | Lanczos top-10 (ms) "
        "| Lanczos speedup | naive at 4 depths (ms) | `depth_profile` (ms) | profile speedup |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["rows"]:
        ms = {name: 1e3 * value for name, value in row["seconds"].items()}
        speedup = row["speedup_vs_naive"]
        lines.append(
            f"| {row['width']} | {row['depth']} | {ms['naive']:.1f} | {ms['exact']:.1f} "
            f"| {speedup['exact']:.2f}x | {ms['lanczos']:.1f} | {speedup['lanczos']:.2f}x "
            f"| {ms['naive_profile']:.1f} | {ms['profile']:.1f} | {speedup['profile']:.2f}x |"
        )
    return lines


def transpose_product(result: dict) -> list[str]:
    lines = [
        "### The reverse scan's transposed product (`transpose_product.py`)",
        "",
        machine_line(result),
        "",
        *quick_note(result),
        f"`rows @ kernel.T` over {result['layers']} stacked kernels: XLA's own product "
        "against `(kernel @ rows.T).T` with optimization barriers (`times_transpose`'s route "
        "for 2 to 32 rows). Milliseconds per call.",
        "",
        "| width | rows | plain (ms) | kernel on the left (ms) | kernel on the left, speedup |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in result["rows"]:
        ms = {name: 1e3 * value for name, value in row["seconds"].items()}
        lines.append(
            f"| {row['width']} | {row['rows']} | {ms['plain']:.2f} | {ms['kernel_left']:.2f} "
            f"| {row['speedup']:.2f}x |"
        )
    return lines


def prng_speed(result: dict) -> list[str]:
    lines = [
        "### Weight draws: JAX's threefry against the fused threefry (`prng_speed.py`)",
        "",
        machine_line(result),
        "",
        *quick_note(result),
        "The same numbers bit for bit (checked before timing); milliseconds per draw.",
        "",
        "| draw | numbers | threefry (ms) | fused (ms) | fused speedup | fused ns a number |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["rows"]:
        ms = {name: 1e3 * value for name, value in row["seconds"].items()}
        per = 1e6 * ms["fused"] / row["numbers"]
        lines.append(
            f"| {row['what']} | {row['numbers'] / 1e6:.1f} M | {ms['threefry']:.1f} "
            f"| {ms['fused']:.1f} | {row['speedup']:.2f}x | {per:.2f} |"
        )
    return lines


SECTIONS = {
    "probe_speed": probe_speed,
    "compile_time": compile_time,
    "sweep_speed": sweep_speed,
    "gflops": gflops,
    "jacobian_speed": jacobian_speed,
    "transpose_product": transpose_product,
    "prng_speed": prng_speed,
}


def main() -> None:
    lines: list[str] = []
    for name, render in SECTIONS.items():
        path = HERE / "results" / f"{name}.json"
        if path.exists():
            lines += [*render(json.loads(path.read_text())), ""]
    readme = HERE / "README.md"
    text = readme.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    readme.write_text(f"{head}{BEGIN}\n" + "\n".join(lines) + f"\n{END}{tail}")
    print(f"updated {readme}")


if __name__ == "__main__":
    main()
