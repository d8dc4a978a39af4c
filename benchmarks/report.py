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


SECTIONS = {"probe_speed": probe_speed, "compile_time": compile_time}


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
