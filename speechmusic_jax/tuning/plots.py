"""A sweep's figures: curves.png, budget.png, pareto.png and (several workloads) profile.png."""

from __future__ import annotations

import io
import math
import os
from typing import Any

from speechmusic_jax.io_utils import atomic_write_bytes, read_jsonl
from speechmusic_jax.tuning import analysis


def is_png(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    _pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _label(workload: str, arm: str, multi: bool) -> str:
    return f"{workload}/{arm}" if multi else arm


def _references(result: Any) -> set[tuple[str, str]]:
    """(workload, arm) of each workload's reference arm (the one the others are compared with)."""
    return {(e["workload"], e["reference"]) for e in result.comparison()
            if e["reference"] is not None}


def _style(key: tuple[str, str], refs: set[tuple[str, str]]) -> dict:
    """A reference arm's line: thicker, on top, and named so in the legend."""
    return {"lw": 3.0, "zorder": 3} if key in refs else {"lw": 1.3, "zorder": 2}


def curves(result: Any, path: str) -> None:
    """Validation accuracy and loss (per clip) against training steps, for each arm's best
    trial, overlaid: at every evaluation point (evals.jsonl; a run made before they existed:
    each epoch's end)."""
    plt = _pyplot()
    best = result.best()
    refs = _references(result)
    multi = len({w for w, _ in best}) > 1
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for (workload, arm), rec in best.items():
        rows = read_jsonl(os.path.join(rec["workdir"], "evals.jsonl"))
        if rows:
            steps = [r["step"] for r in rows]
        else:
            rows = read_jsonl(os.path.join(rec["workdir"], "metrics.jsonl"))
            steps = [r["epoch"] * (rec.get("steps_per_epoch") or 1) for r in rows]
        if not rows:
            continue
        label = (f"{_label(workload, arm, multi)} (trial {rec['trial']})"
                 + (", reference" if (workload, arm) in refs else ""))
        for ax, key in zip(axes, ("val_accuracy", "val_loss"), strict=True):
            ax.plot(steps, [r[key] for r in rows], "o-", ms=3, label=label,
                    **_style((workload, arm), refs))
    if result.target and result.target[0] in ("val_accuracy", "val_loss"):
        ax = axes[0] if result.target[0] == "val_accuracy" else axes[1]
        ax.axhline(result.target[1], color="grey", ls=":", lw=1, label="target")
    for ax, title in zip(axes, ("validation accuracy (per clip)", "validation loss (per clip)"),
                         strict=True):
        ax.set_xlabel("training steps")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(f"sweep {result.name}: each arm's best trial by {result.select}")
    _save(fig, path)


def budget(result: Any, path: str) -> None:
    """Expected best validation score after k trials (mean ± std), per arm."""
    plt = _pyplot()
    curves_ = result.best_of_k()
    refs = _references(result)
    multi = len({w for w, _ in curves_}) > 1
    fig, ax = plt.subplots(figsize=(6.5, 4.2), constrained_layout=True)
    for (workload, arm), cs in curves_.items():
        ks = [c["k"] for c in cs]
        m = [c["mean"] for c in cs]
        s = [c["std"] for c in cs]
        label = _label(workload, arm, multi) + (" (reference)" if (workload, arm) in refs
                                                 else "")
        line, = ax.plot(ks, m, "o-", ms=4, label=label, **_style((workload, arm), refs))
        ax.fill_between(ks, [a - b for a, b in zip(m, s, strict=True)],
                        [a + b for a, b in zip(m, s, strict=True)], color=line.get_color(),
                        alpha=0.15)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("trials of tuning budget (k)")
    ax.set_ylabel(f"expected best {result.select}")
    ax.set_title("expected best after k trials (bootstrap over each arm's trials; ± 1 std)",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def pareto(result: Any, path: str) -> None:
    """Test accuracy of each arm's picks (mean ± std over seeds) against trainable parameters
    (left out when every arm has the same count) and against training time per trial; every
    finished trial faint behind; the Pareto front of the arms marked."""
    plt = _pyplot()
    summaries = [s for s in result.arms() if s.get("test_accuracy_mean") is not None]
    multi = len({s["workload"] for s in summaries}) > 1
    panels = [("params_trainable", "trainable parameters"),
              ("train_time_s_mean", "training time per trial (s)")]
    if len({s.get("params_trainable") for s in summaries}) <= 1:
        panels = panels[1:]  # every arm the same network: parameters tell them nothing apart
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels) + 0.5, 4.2),
                             constrained_layout=True, squeeze=False)
    axes = axes[0]
    for ax, (cost, xlabel) in zip(axes, panels, strict=True):
        trial_cost = "params_trainable" if cost == "params_trainable" else "train_time_s"
        done = [r for r in result.records if analysis.ok(r) and r.get(trial_cost)
                and r.get("test_accuracy") is not None]
        ax.scatter([r[trial_cost] for r in done], [r["test_accuracy"] for r in done], s=8,
                   color="grey", alpha=0.3, label="trials")
        pts = [(s[cost], s["test_accuracy_mean"]) for s in summaries if s.get(cost)]
        shown = [s for s in summaries if s.get(cost)]
        for s in shown:
            ax.errorbar(s[cost], s["test_accuracy_mean"], yerr=s["test_accuracy_std"], fmt="o",
                        ms=6, capsize=3, label=_label(s["workload"], s["arm"], multi))
        front = analysis.pareto_front(pts)
        if front:
            ax.step([pts[i][0] for i in front], [pts[i][1] for i in front], "k--", lw=1,
                    where="post")
            ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "o", ms=13,
                    mfc="none", mec="black", label="Pareto front")
        if pts and all(p[0] > 0 for p in pts) and max(p[0] for p in pts) > 4 * min(
                p[0] for p in pts):
            ax.set_xscale("log")
            from matplotlib.ticker import NullFormatter

            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (per clip)")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="best")
    fig.suptitle(f"sweep {result.name}: accuracy against cost\n(arms: mean ± std over seeds of "
                 f"each seed's pick)", fontsize=10)
    _save(fig, path)


def profile(result: Any, path: str) -> None:
    """AlgoPerf performance profiles over the workloads (only with several workloads)."""
    profiles = result.profiles()
    if profiles is None:
        return
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2), constrained_layout=True)
    for arm, rho in profiles["rho"].items():
        ax.step(profiles["taus"], rho, where="post",
                label=f"{arm} (score {profiles['score'][arm]:.2f})")
    ax.set_xscale("log")
    ax.set_xlabel("tau: time to target within this factor of the fastest arm")
    ax.set_ylabel("fraction of workloads")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(1, math.ceil(max(profiles["taus"])))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"performance profiles over {len(profiles['workloads'])} workloads")
    _save(fig, path)


FIGURES = {"curves.png": curves, "budget.png": budget, "pareto.png": pareto,
           "profile.png": profile}
