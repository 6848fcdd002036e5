"""Does the estimator remember its training images? For each checkpoint of an image-folder run in
a principal space (the ``images`` preset), the mean estimated ratio r = q~/p (App. C) on the
training images, on the held-out images and on flowed particles, all as the run's coefficients.
A healthy estimator gives r near 1 on both kinds of data; r on held-out images far above r on
training images means it has learnt the training images themselves. Prints one JSON line per
checkpoint.

    python benchmarks/estimator_memory.py RUN [--particles 1000]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv: list[str] | None = None) -> list[dict]:
    import torch

    from fdrl.data.principal import PrincipalImages, build_run_data
    from fdrl.model import FDRL
    from fdrl.config import load_config

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--particles", type=int, default=1000)
    args = ap.parse_args(argv)
    if not (args.run / "config.yaml").is_file():
        raise SystemExit(f"{args.run}: not a run directory (no config.yaml)")
    data = build_run_data(load_config(str(args.run / "config.yaml")).data.spec)
    if not isinstance(data, PrincipalImages) or data.held_out() is None:
        raise SystemExit(f"{args.run}: not an image-folder run in a principal space with a held-out part")
    sets = {"train": data.samples, "heldout": data.space.encode_all(data.held_out())}
    rows = []
    for checkpoint in sorted((args.run / "checkpoints").glob("ckpt_*.pt")):
        model = FDRL.load(args.run, checkpoint=checkpoint)
        with torch.no_grad():
            mean_r = {name: float(model.objective.ratio(model.estimator(x)).mean())
                      for name, x in {**sets, "particles": model.particles(args.particles)}.items()}
        rows.append({"checkpoint": checkpoint.name, **{f"r_{k}": round(v, 3) for k, v in mean_r.items()}})
        print(json.dumps(rows[-1]))
    return rows


if __name__ == "__main__":
    main()
