"""One tiny trained run for the test modules that use a trained model (trained once per session:
a module-scoped fixture calls :func:`tiny_run`)."""

from __future__ import annotations

import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TRAINED: dict[str, str] = {}


def tiny_run(tmp_path_factory) -> str:
    """The workdir of a finished ``experiments/default.py:tiny`` run (1 s windows, 2 s clips)."""
    if "workdir" not in _TRAINED:
        from speechmusic_jax.config import load_experiment
        from speechmusic_jax.training import loop

        cfg = load_experiment(os.path.join(REPO, "experiments", "default.py"), "tiny")
        workdir = str(tmp_path_factory.mktemp("tiny_trained") / "run")
        loop.fit(cfg, workdir, log=lambda _: None)
        _TRAINED["workdir"] = workdir
    return _TRAINED["workdir"]
