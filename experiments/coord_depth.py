"""A residual MLP's activations and updates grow with depth when its branches are added at
full strength, and stay flat when each is multiplied by 1/sqrt(L) (depth-muP).

Reproduces the depth claim of Yang, Yu, Zhu and Hayou 2023, "Tensor Programs VI:
Feature Learning in Infinite-Depth Neural Networks", and Bordelon, Noci, Li, Hanin and
Pehlevan 2023, "Depthwise Hyperparameter Transfer in Residual Networks": a residual
network h_l = h_{l-1} + a W2 phi(W1 h_{l-1}) with L blocks, trained a few steps with Adam,
checked across depths with `jaxgrad.scaling.coord_check` (the model and settings of
`scaling.CoordConfig`: 16 Gaussian features to 16 Gaussian targets, relu, width 128).

- "sp": a = 1, `optax.adam`.
- "depth_mup": a = sqrt(L_base / L), muP in width (`MuReadout`, zero initialized) and
  `scaling.mup_adam`, whose learning rate for the stacked blocks is also multiplied by
  sqrt(L_base / L) (Tensor Programs VI's Adam rule); L_base is the smallest depth.

Claim checked: under "sp" the last block's output, its change and the logits grow with
depth (each block adds a variance of the order of the previous one's, so the scale grows
geometrically); under "depth_mup" their slope against log depth is near 0 ("stable").
Writes coord_depth.json and the figures to --out.

Measured with `time .venv/bin/python experiments/coord_depth.py --quick` (depths 2, 8, 32;
2 seeds; 3 steps) on 2 CPU cores shared with other jobs (load average about 10): 133 s wall,
39 s CPU. Slope against log depth at steps 0 / 1 / 2 (change is zero at step 0):

    sp         last block's output  mean |x| +2.15 / +4.07 / +3.36   change  - / +4.15 / +3.32
               logits               mean |x| +2.12 / +4.21 / +3.30   change  - / +4.11 / +3.12
    depth_mup  last block's output  mean |x| +0.07 / +0.09 / +0.09   change  - / (0) / +0.07
               logits               mean |x|  (0) / +0.03 / -0.01    change  - / +0.03 / -0.01

("(0)": zero at every depth, the zero-initialized readout at step 0 and, at step 1, the
blocks, which get no gradient through it yet.) Under sp the scale grows geometrically with
depth (no power law: the fitted exponent depends on the range), under depth_mup every slope
is within 0.1 of 0; the blocks' update rms shrinks as depth^-0.51 under depth_mup, the
sqrt(L_base / L) of its Adam rule, while the update of the block's output stays flat.

Usage: python experiments/coord_depth.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from jaxgrad import plot, scaling
from jaxgrad.scaling import config as coord_config

WATCHED = ("body.blocks[-1].outer", "readout")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few minutes")
    parser.add_argument("--out", type=Path, default=Path("experiments/out"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    depths, seeds, steps = ((2, 8, 32), 2, 3) if args.quick else ((2, 4, 8, 16, 32, 64), 4, 5)
    results = {"depths": list(depths), "seeds": seeds, "steps": steps, "width": 128}
    for parametrization in ("sp", "depth_mup"):
        config = scaling.CoordConfig(
            parametrization=parametrization,
            widths=(128,),
            depths=depths,
            residual=True,
            seeds=seeds,
            steps=steps,
        )
        start = time.perf_counter()
        check = coord_config.run(config)
        table = scaling.slopes(check, against="depth")
        seconds = time.perf_counter() - start
        plot.coord_check(
            check, "mean_abs", against="depth", path=args.out / f"coord_depth_{parametrization}.png"
        )
        summary = {}
        print(f"\n{parametrization} ({seconds:.0f} s): slope against log depth")
        for layer in WATCHED:
            for statistic in ("mean_abs", "change"):
                per_step = [table.get(layer, statistic, step)[0] for step in range(steps)]
                words = table.get(layer, statistic, steps - 1)[1]
                summary[f"{layer} {statistic}"] = {"slopes": per_step, "verdict": words}
                shown = " ".join("   nan" if np.isnan(s) else f"{s:+6.2f}" for s in per_step)
                print(f"  {layer:<22} {statistic:<9} steps 0..{steps - 1}: {shown}  ({words})")
        for layer in ("body.blocks[-1].outer.kernel", "readout.kernel"):
            slope, words = table.get(layer, "update_rms", steps - 1)
            summary[f"{layer} update_rms"] = {"slope": slope, "verdict": words}
            print(f"  {layer:<29} update rms: {slope:+.2f} ({words})")
        results[parametrization] = {"seconds": seconds, "slopes": summary}
    (args.out / "coord_depth.json").write_text(json.dumps(results, indent=1))
    print(f"\nwrote {args.out / 'coord_depth.json'} and the figures")


if __name__ == "__main__":
    main()
