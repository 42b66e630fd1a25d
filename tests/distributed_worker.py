"""One process of a test run over several (tests/test_distributed.py starts it as a script).

    python tests/distributed_worker.py WORKDIR OUT.json [--coordinator=HOST:PORT --processes=N
        --process_id=I] [--epochs=E] [--stop_after=K] [--init_from=DIR] [--stem_lr_scale=S]
        [--augment=1] [--cache=device]

Trains ``experiments/default.py:tiny`` in WORKDIR (every process the same arguments, as a user
would start them) and writes what this process's ``fit`` returned to OUT.json, with the
process's index and the devices it saw, so that the test can compare the processes' views.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("out")
    parser.add_argument("--coordinator")
    parser.add_argument("--processes", type=int)
    parser.add_argument("--process_id", type=int)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--stop_after", type=int)
    parser.add_argument("--init_from", default="")
    parser.add_argument("--stem_lr_scale", type=float, default=1.0)
    parser.add_argument("--augment", type=int, default=0)  # 1: noise, filters, gain on device
    parser.add_argument("--cache", default="none")
    args = parser.parse_args()

    from speechmusic_jax import distributed

    distributed.initialize(distributed.Launch("auto", args.coordinator, args.processes,
                                              args.process_id), log=lambda _: None)
    import jax

    from speechmusic_jax.config import load_experiment
    from speechmusic_jax.training import loop

    cfg = load_experiment(os.path.join(REPO, "experiments", "default.py"), "tiny")
    cfg.train.epochs = args.epochs
    cfg.train.init_from = args.init_from
    cfg.train.stem_lr_scale = args.stem_lr_scale
    cfg.data.cache = args.cache
    if args.augment:
        a = cfg.data.augment
        a.noise_prob, a.noise_colours, a.lowpass_prob, a.gain_db = 0.8, (0.0, 1.0), 0.5, 6.0
    summary = loop.fit(cfg, args.workdir, log=lambda _: None, stop_after=args.stop_after,
                       progress=False)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"process_index": jax.process_index(), "process_count": jax.process_count(),
                   "device_count": jax.device_count(), "summary": summary}, f)


if __name__ == "__main__":
    sys.exit(main())
