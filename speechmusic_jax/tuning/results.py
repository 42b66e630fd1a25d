"""A sweep's results: the trial records, what they say per arm, and the files that show it.

``SweepResult`` is what ``run_sweep`` and ``compare_optimizers`` return. Its ``records`` are plain
dicts (one per trial, the columns of results.csv), so callers filter and aggregate them as they
like; ``arms()`` gives the per-arm summary (see :mod:`speechmusic_jax.tuning.analysis` for how
each figure is computed), ``best()`` each arm's best trial, ``comparison()`` the reference arm
(chosen on validation, or ``reference`` when the user names one) with every other arm against
it, ``verdict()`` what that says in words, ``paired()`` one paired difference, ``best_of_k()``
the budget curves, and ``write(folder)`` writes results.csv, results.md, results.json and the
figures. results.md and ``table()`` start with the verdict.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

from speechmusic_jax.io_utils import (
    atomic_write_json,
    atomic_write_text,
    check_output,
    read_json,
)
from speechmusic_jax.tuning import analysis, space, stats
from speechmusic_jax.tuning.records import LEADING, TRAILING

Log = Callable[[str], None]


@dataclasses.dataclass
class SweepResult:
    name: str
    records: list[dict]  # one per trial (see records.trial_record)
    swept: list[str]  # the swept fields, in column order
    select: str = "val_accuracy"
    target: tuple[str, float] | None = None
    budget: int | None = None  # points per arm
    description: str = ""
    data: str = ""  # the base config's data.spec
    reference: str | None = None  # the arm every other is compared with; None: by validation
    note: str = ""  # what the sweep is for (a smoke test says so), shown first
    left_out: list[str] = dataclasses.field(default_factory=list)  # arms left out, one line each
    clock: str = ""  # how the trials were clocked (spec.clock_text), when not just by epoch

    def filter(self, predicate: Callable[[dict], bool] | None = None, **equal: Any
               ) -> SweepResult:
        """The records for which ``predicate`` holds and whose fields equal ``equal``
        (e.g. ``result.filter(arm="adamw", seed=0)``)."""
        keep = [r for r in self.records
                if (predicate is None or predicate(r))
                and all(r.get(k) == v for k, v in equal.items())]
        return dataclasses.replace(self, records=keep)

    def arms(self) -> list[dict]:
        """One summary per (workload, arm): mean ± std over seeds of each seed's pick, time to
        target, counts, best point."""
        return analysis.summarize(self.records, self.select)

    def best(self) -> dict[tuple[str, str], dict]:
        """(workload, arm) -> the arm's best trial by the validation score ``select``."""
        out = {}
        for key, recs in analysis.groups(self.records).items():
            done = [r for r in recs if r["status"] not in ("pending", "failed")]
            if done:
                out[key] = min(done, key=lambda r: analysis.rank_key(r, self.select))
        return out

    def paired(self, arm_a: str, arm_b: str, metric: str = "test_accuracy",
               workload: str = "") -> dict:
        return analysis.paired_difference(self.records, arm_a, arm_b, metric=metric,
                                          select=self.select, workload=workload)

    def best_of_k(self, report: str | None = None) -> dict[tuple[str, str], list[dict]]:
        return analysis.best_of_k_curves(self.records, self.select, self.budget, report)

    def profiles(self, metric: str = "steps_to_target") -> dict | None:
        """Performance profiles over workloads (None with fewer than two workloads)."""
        summaries = self.arms()
        workloads = {s["workload"] for s in summaries}
        if len(workloads) < 2:
            return None
        times: dict[str, dict[str, float]] = {}
        for s in summaries:
            times.setdefault(s["workload"], {})[s["arm"]] = s[metric]
        return analysis.performance_profiles(times)

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.records:
            out[r["status"]] = out.get(r["status"], 0) + 1
        return out

    # ---- text -------------------------------------------------------------------------------

    def table(self) -> str:
        """The per-arm table printed at the end of a sweep."""
        sel = self.select
        rows = [["workload", "arm", "done", sel, "test_accuracy", "test_f1_macro",
                 "steps_to_target", "s_to_target", "best point"]]
        multi = len({r["workload"] for r in self.records}) > 1
        entries = self.comparison()
        refs = {(e["workload"], e["reference"]) for e in entries}
        for s in self.arms():
            ref = " (ref)" if (s["workload"], s["arm"]) in refs else ""
            rows.append([s["workload"], s["arm"] + ref, _done(s), _pm(s, sel),
                         _pm(s, "test_accuracy"), _pm(s, "test_f1_macro"),
                         _ttt(s, "steps_to_target", "{:.0f}"),
                         _ttt(s, "seconds_to_target", "{:.1f}"), self._point_text(s)])
        if not multi:
            rows = [r[1:] for r in rows]
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                 for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        verdict = _verdict_text(entries)
        verdict = ("verdict:\n  " + verdict.replace("\n", "\n  ") if "\n" in verdict
                   else f"verdict: {verdict}")
        return "\n".join([*self._smoke(), verdict, *self.left_out, self._heading(), *lines,
                          *self._notes(), *self._smoke()])

    def _heading(self) -> str:
        c = self.counts
        parts = ", ".join(f"{n} {k}" for k, n in sorted(c.items()))
        data = f" on {self.data}" if self.data else ""
        return f"sweep {self.name}{data}: {len(self.records)} trials ({parts})"

    def _notes(self) -> list[str]:
        notes = [f"{self.select}, test accuracy and F1: each seed's best trial by {self.select} "
                 "(mean ± sample std over seeds)."]
        if self.target:
            notes.append(f"time to target ({self.target[0]} {_cmp(self.target[0])} "
                         f"{self.target[1]:g}): per seed the arm's fastest trial, median over "
                         "seeds (hits/seeds); training steps and seconds, validation and "
                         "compilation excluded, at the first evaluation point that meets it; "
                         "inf: missed" + (" (or met over the budget)" if "budget" in self.clock
                                          else "") + ".")
        if self.clock:
            notes.append(self.clock + ("" if "validation after every" in self.clock
                                       else "; validation at each epoch's end") + ".")
        if any(r.get("mode") not in (None, "alone") for r in self.records):
            notes.append("grouped trials (trained together in one program): their seconds "
                         "(to target, train s / trial; train_time_s and step_time_ms in "
                         "results.csv) are what each would take alone: its own steps at its "
                         "program's step time measured alone, plus the epoch's data waits; "
                         "the group's wall time of training is group_train_time_s.")
        return notes

    def _point_text(self, s: dict) -> str:
        trials = s.get("best_point_trials")
        if not trials:
            return "-"
        rec = next(r for r in self.records if r["trial"] == trials[0])
        tuned = [f for f in self.swept if f in rec and _is_tuned(self.records, s, f)]
        return ", ".join(f"{f.split('.')[-1]}={space.short(rec[f])}" for f in tuned) or "-"

    def comparison(self, metric: str = "test_accuracy") -> list[dict]:
        """Per workload: the reference arm, how it was chosen, each other arm against it
        (paired over seeds, Holm-corrected) and the verdict (see analysis.compare_to_reference)."""
        return analysis.compare_to_reference(self.records, self.select,
                                             reference=self.reference, metric=metric)

    def paired_table(self, metric: str = "test_accuracy") -> list[dict]:
        """Each arm against the reference, per workload (the comparisons of ``comparison()``)."""
        return [p for entry in self.comparison(metric) for p in entry["comparisons"]]

    def reference_rule(self) -> str:
        return ("named by the user" if self.reference is not None
                else f"best mean {analysis.select_words(self.select)}")

    def verdict(self) -> str:
        """What the comparison says, in words: one line (per workload)."""
        return _verdict_text(self.comparison())

    def _smoke(self) -> list[str]:
        return [f"note: {self.name}: {self.note}"] if self.note else []

    def markdown(self) -> str:
        sel = self.select
        multi = len({r["workload"] for r in self.records}) > 1
        entries = self.comparison()
        refs = {e["workload"]: e["reference"] for e in entries}
        lines = [f"# sweep {self.name}", ""]
        lines += [f"**Verdict.** {_verdict_text(entries)}".replace("\n", "  \n"), ""]
        if self.note:
            lines += [f"**Note:** {self.note}.", ""]
        lines += [f"- {line}" for line in self.left_out] + ([""] if self.left_out else [])
        if self.description:
            lines += [self.description, ""]
        lines += [self._heading(), "", "## Per arm", ""]
        head = (["workload"] if multi else []) + [
            "arm", "trials done", f"{sel} (pick)", "test accuracy",
            "test accuracy, pooled clips (95% Wilson)", "test macro F1",
            "steps to target", "seconds to target", "params", "train s / trial", "best point"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for s in self.arms():
            ref = " (reference)" if refs.get(s["workload"]) == s["arm"] else ""
            cells = ([s["workload"]] if multi else []) + [
                s["arm"] + ref, _done(s), _pm(s, sel), _pm(s, "test_accuracy"), _pooled(s),
                _pm(s, "test_f1_macro"), _ttt(s, "steps_to_target", "{:.0f}"),
                _ttt(s, "seconds_to_target", "{:.1f}"),
                f"{s['params_trainable']:,}" if s.get("params_trainable") else "-",
                f"{s['train_time_s_mean']:.1f}" if s.get("train_time_s_mean") else "-",
                self._point_text(s)]
            lines.append("| " + " | ".join(cells) + " |")
        lines += [""] + [f"- {n}" for n in self._notes()]
        pairs = [p for e in entries for p in e["comparisons"]]
        if pairs:
            m = {e["workload"]: len(e["comparisons"]) for e in entries}
            lines += ["", "## Paired differences in test accuracy against the reference (same "
                      "seeds: same split, initial weights and batches)", "",
                      "| " + ("workload | " if multi else "") + "arm − reference | mean | "
                      "per-seed differences | p (Holm) | interval | seeds |",
                      "|" + "---|" * (7 if multi else 6)]
            for p in pairs:
                mean = f"{p['mean']:+.3f}" if p["mean"] is not None else "-"
                per_seed = " ".join(f"{d:+.3f}" for d in p["differences"]) or "-"
                pv = f"{p['p_holm']:.3g}" if p["p_value"] is not None else "-"
                lines.append("| " + (f"{p['workload']} | " if multi else "")
                             + f"{p['a']} − {p['b']} | {mean} | {per_seed} | {pv} | "
                             f"{_interval(p)} | {p['n']} |")
            need = {e["workload"]: next((p["min_seeds"] for p in e["comparisons"]), None)
                    for e in entries}
            lines += ["", f"- Reference: {self.reference_rule()} (never a test score, which "
                      "would favour it in every comparison). p: the exact paired sign-flip "
                      "permutation test over seeds, Holm-corrected over the "
                      + _per_workload(m, "comparison(s)") + "; interval: the one that inverts "
                      "that test at the Bonferroni level 1 − 0.05/m (the intervals hold "
                      "together), always inside [−1, 1]. A difference is called at p (Holm) "
                      "≤ 0.05; with fewer seeds than the test needs to reach 0.05/m at all ("
                      + _per_workload(need, "seeds") + "), no claim is made and no interval "
                      "is given."]
        curves = self.best_of_k()
        if curves:
            ks = sorted({c["k"] for cs in curves.values() for c in cs})
            shown = sorted({1, 2, 4, ks[-1]} & set(ks))
            lines += ["", f"## Expected best {sel} after k trials (exact bootstrap over each "
                      "arm's trials)", "",
                      "| " + ("workload | " if multi else "") + "arm | "
                      + " | ".join(f"k={k}" for k in shown) + " |",
                      "|" + "---|" * (len(shown) + 1 + multi)]
            for (workload, arm), cs in curves.items():
                by_k = {c["k"]: c for c in cs}
                lines.append("| " + (f"{workload} | " if multi else "") + f"{arm} | " + " | ".join(
                    f"{by_k[k]['mean']:.3f} ± {by_k[k]['std']:.3f}" for k in shown) + " |")
        profiles = self.profiles()
        if profiles:
            lines += ["", "## Performance profiles (time to target in steps, over workloads)", "",
                      "| arm | score (area, 0-1) |", "|---|---|"]
            for arm, score in sorted(profiles["score"].items(), key=lambda kv: -kv[1]):
                lines.append(f"| {arm} | {score:.3f} |")
        lines += ["", "Figures: curves.png (validation curves of each arm's best trial), "
                  "budget.png (expected best after k trials), pareto.png (accuracy against "
                  "parameters and training time)" + (", profile.png" if profiles else "") + ".",
                  "Every trial's run is in trials/NNN/; results.csv has one row per trial."]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        columns = [*LEADING, *self.swept, *TRAILING]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(columns)
        for rec in self.records:
            w.writerow([_csv_cell(rec.get(c)) for c in columns])
        return buf.getvalue()

    def to_json(self) -> dict:
        entries = self.comparison()
        refs = {e["workload"]: e["reference"] for e in entries}
        return {"name": self.name, "note": self.note, "left_out": self.left_out,
                "select": self.select,
                "target": list(self.target) if self.target else None, "clock": self.clock,
                "budget": self.budget,
                "verdict": _verdict_text(entries),
                # one workload: the arm; several: workload -> arm
                "reference_arm": next(iter(refs.values()), None) if len(refs) <= 1 else refs,
                "reference_rule": self.reference_rule(),
                "interval_correction": {
                    "method": "holm-bonferroni", "alpha": stats.ALPHA,
                    "test": "exact paired sign-flip permutation test over seeds",
                    "p_values": "Holm-adjusted over each workload's comparisons with the "
                                "reference",
                    "intervals": "inverting the test at the Bonferroni level 1 - alpha/m "
                                 "(simultaneous); none below min_seeds",
                    "comparisons": {e["workload"]: len(e["comparisons"]) for e in entries},
                    "min_seeds": {e["workload"]: stats.min_seeds(len(e["comparisons"]))
                                  for e in entries}},
                "counts": self.counts, "arms": [_finite(s) for s in self.arms()],
                "paired": [_finite(p) for e in entries for p in e["comparisons"]],
                "best_of_k": [{"workload": w, "arm": a, "curve": _finite(c)}
                              for (w, a), c in self.best_of_k().items()],
                "profiles": _finite(self.profiles()),
                "records": [_finite(r) for r in self.records]}

    def write(self, folder: str, *, log: Log | None = None, plots: bool = True) -> None:
        """results.csv, results.md, results.json and the figures, in ``folder``; never over a
        file this program did not write."""
        os.makedirs(folder, exist_ok=True)
        checks = {"results.csv": lambda p: _head(p).startswith("trial,"),
                  "results.md": lambda p: _head(p).startswith("# sweep "),
                  "results.json": lambda p: {"name", "records", "best_of_k"} <= set(read_json(p))}
        for name, ours in checks.items():
            check_output(os.path.join(folder, name), overwrite=True, ours=ours, flag=name)
        atomic_write_text(os.path.join(folder, "results.csv"), self.csv())
        atomic_write_text(os.path.join(folder, "results.md"), self.markdown())
        atomic_write_json(os.path.join(folder, "results.json"), self.to_json())
        if plots:
            from speechmusic_jax.tuning import plots as plots_lib

            for name, draw in plots_lib.FIGURES.items():
                path = os.path.join(folder, name)
                try:
                    check_output(path, overwrite=True, ours=plots_lib.is_png, flag=name)
                    draw(self, path)
                except Exception as e:  # a figure must never cost the results
                    if log:
                        log(f"warning: could not draw {name} ({type(e).__name__}: {e})")


def _head(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read(64)


def _is_tuned(records: Sequence[dict], summary: dict, field: str) -> bool:
    values = {repr(r.get(field)) for r in records
              if r["arm"] == summary["arm"] and r["workload"] == summary["workload"]}
    return len(values) > 1


def _done(s: dict) -> str:
    extra = [f"{s[k]} {k}" for k in ("diverged", "failed", "pending") if s.get(k)]
    return f"{s['ok']}/{s['trials']}" + (f" ({', '.join(extra)})" if extra else "")


def _pm(s: dict, metric: str) -> str:
    m, sd = s.get(f"{metric}_mean"), s.get(f"{metric}_std")
    return "-" if m is None else f"{m:.3f} ± {sd:.3f}"


def _ttt(s: dict, metric: str, fmt: str) -> str:
    v = s.get(metric)
    if v is None:
        return "-"
    text = fmt.format(v) if math.isfinite(v) else "inf"
    return f"{text} ({s.get(metric + '_hits', 0)}/{s['seeds']})"


def _verdict_text(entries: list[dict]) -> str:
    multi = len(entries) > 1
    return "\n".join((f"{e['workload']}: " if multi else "") + e["verdict"] for e in entries)


def _pooled(s: dict) -> str:
    if s.get("test_accuracy_pooled") is None:
        return "-"
    lo, hi = s["test_accuracy_wilson95"]
    return f"{s['test_accuracy_pooled']:.3f} [{lo:.3f}, {hi:.3f}] of {s['test_clips']}"


def _interval(p: dict) -> str:
    if p["ci"] is None:
        return f"no claim with {p['n']} seeds" if p["n"] else "-"
    return f"[{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}] ({100 * p['ci_level']:.3g}%)"


def _per_workload(values: dict, unit: str) -> str:
    if len(values) == 1:
        return f"{next(iter(values.values()))} {unit}"
    return ", ".join(f"{w}: {v}" for w, v in values.items()) + f" {unit}"


def _cmp(metric: str) -> str:
    return "<=" if analysis.lower_is_better(metric) else ">="




def _csv_cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, list | tuple):
        return " ".join(str(x) for x in v)
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return v


def _finite(obj: Any) -> Any:
    """JSON-safe: infinities as the string "inf", tuples as lists, tuple keys joined."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else ("inf" if obj > 0 else "-inf" if obj < 0 else None)
    if isinstance(obj, dict):
        return {("/".join(k) if isinstance(k, tuple) else k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj
