"""List what exists: model presets, optimizers, learning-rate schedules, experiment files and
data sources, one per line with a note.

    python -m speechmusic_jax.list presets|optimizers|schedules|experiments|sources
"""

from __future__ import annotations

import os
from typing import Any

WHAT = ("presets", "optimizers", "schedules", "experiments", "sources")


def rows(what: str) -> list[tuple[str, str]]:
    if what == "presets":
        import jax
        from flax import nnx

        from speechmusic_jax.config import base_config
        from speechmusic_jax.models.conv1d import build_model, count_params
        from speechmusic_jax.models.presets import PRESET_NOTES, PRESETS, resolve_spec

        out = []
        for name in PRESETS:
            c = base_config()
            c.model.preset = name
            spec = resolve_spec(c.model, 2)
            # Shapes only: the parameters are counted without initialising (or compiling) them.
            shapes = jax.eval_shape(lambda spec=spec: nnx.state(build_model(spec, 0), nnx.Param))
            n = count_params(shapes)
            hears = spec.receptive_field()
            out.append((name, f"{n:>10,} params (2 classes); min input {spec.min_input_length()}"
                              f" samples; hears {hears} samples ({hears / spec.sample_rate:.2f} s)"
                              f" at once; {PRESET_NOTES.get(name, '')}"))
        return out
    if what == "optimizers":
        from speechmusic_jax.training.optim import OPTIMIZERS

        return [(name, note) for name, (_, note) in sorted(OPTIMIZERS.items())]
    if what == "schedules":
        from speechmusic_jax.training.optim import SCHEDULES

        return sorted(SCHEDULES.items())
    if what == "sources":
        from speechmusic_jax.data.sources import SOURCE_KINDS

        return sorted(SOURCE_KINDS.items())
    if what == "experiments":
        from speechmusic_jax.cli import default_experiment

        folder = os.path.dirname(default_experiment())
        out = []
        for root, _, files in os.walk(folder):
            for f in sorted(files):
                if f.endswith(".py") and not f.startswith("_"):
                    path = os.path.join(root, f)
                    out.append((os.path.relpath(path), _first_doc_line(path)))
        return sorted(out)
    raise ValueError(f"unknown list {what!r}; choose one of {', '.join(WHAT)}")


def _first_doc_line(path: str) -> str:
    import ast

    with open(path, encoding="utf-8") as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


USAGE = f"python -m speechmusic_jax.list {'|'.join(WHAT)}"


def define_flags() -> dict[str, Any]:
    return {}  # the list to print is the one argument


def main(flags: dict[str, Any], args: list[str]) -> int:
    from speechmusic_jax import cli

    del flags
    if len(args) != 1 or args[0] not in WHAT:
        wrong = "one list at a time" if len(args) > 1 else f"expected one of {', '.join(WHAT)}"
        raise cli.UsageError(f"{wrong}: {USAGE}")
    items = rows(args[0])
    width = max(len(k) for k, _ in items)
    for name, note in items:
        print(f"{name:<{width}}  {note}")
    return 0


if __name__ == "__main__":
    from speechmusic_jax import cli

    cli.run_main(define_flags, main)
