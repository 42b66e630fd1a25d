"""Our side of ``benchmark --compare=torch``, in a process of its own like PyTorch's.

    python -m speechmusic_jax.compare_worker --config=CONFIG.json --batch=B
        [--threads=N] [--host_memory=keep|release]

builds the config's model (``config.json`` as a run writes it), compiles its train step and its
eval step ahead for batch B on one device, and serves timing requests on stdin
(:mod:`speechmusic_jax.worker_protocol`: ``info``, ``train N``, ``infer N BATCH``, ``quit``) on
a fixed random batch, blocked on every step. The allocator policy and the cores are set before
JAX starts: XLA's CPU thread pool takes one thread per core the process may run on, so
``--threads=N`` pins the process to N cores, and ``info`` reports the pool's size as it is,
the ahead-of-time compile times, the step's FLOPs, and the float32 matmul rate measured at that
moment (the peak that the step's FLOP rate is put against).
"""

from __future__ import annotations

import argparse
import sys

from speechmusic_jax import worker_protocol
from speechmusic_jax.host_memory import apply as apply_host_memory

XLA_POOL_THREAD = "tf_XLAEigen"  # the name XLA's CPU intra-op threads carry (Linux)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True, help="the resolved config, as JSON")
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads, on as many "
                        "cores (0: every core, XLA's default)")
    parser.add_argument("--host_memory", choices=["keep", "release"], default="release")
    args = parser.parse_args()
    host_memory = apply_host_memory(args.host_memory)  # before JAX allocates
    cores = worker_protocol.pin_threads(args.threads) if args.threads else None

    import jax
    import jax.numpy as jnp
    import numpy as np

    from speechmusic_jax import parallel, timing, utilisation
    from speechmusic_jax.trained_run import config_from_json
    from speechmusic_jax.training import builder

    built = builder.build(config_from_json(args.config), steps_per_epoch=100)
    mesh = parallel.make_mesh(jax.devices()[:1])
    state = parallel.put_replicated(jax.tree.map(jnp.array, built.state), mesh)
    train_step = builder.compile_train_step(built, state, mesh, batch_size=args.batch)
    eval_step = builder.compile_eval_step(built, built.state, mesh, batch_size=args.batch)
    rng = np.random.default_rng(0)
    batch = parallel.put_batch(
        (rng.standard_normal((args.batch, built.segment), dtype=np.float32),
         np.arange(args.batch, dtype=np.int32) % built.spec.num_classes,
         np.ones((args.batch,), np.float32)), mesh)
    key = jax.random.key(0)
    held = {"state": state}

    def one_step() -> None:
        held["state"], m = train_step.fn(held["state"], *batch, key)
        jax.block_until_ready(m)

    def infer(n: int, size: int) -> list[float]:
        if size != args.batch:
            raise ValueError(f"this process is compiled for batch {args.batch}, not {size}")
        predict = builder.predictor(built, held["state"], eval_step.fn)
        return worker_protocol.timed(lambda: jax.block_until_ready(predict(batch[0])), n)

    def info() -> dict:
        return {"params": built.params_trainable, "jax": jax.__version__,
                "compile_s": {"train": train_step.compile_s, "infer": eval_step.compile_s},
                "train_flops": train_step.flops,
                "threads": {"requested": args.threads or None,
                            "in_effect": worker_protocol.threads_named(XLA_POOL_THREAD),
                            "cores": cores},
                "host_memory": host_memory, **timing.device_info(),
                # the float32 matmul rate here and now, for the step's share of the peak
                "matmul_flops_per_s": utilisation.matmul_probe("float32")}

    worker_protocol.serve(info, lambda n: worker_protocol.timed(one_step, n), infer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
