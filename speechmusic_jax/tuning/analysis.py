"""What a sweep's trial records say, by the rules of AlgoPerf (Dahl et al. 2023) and beyond.

Every seed is a *study*: within one seed an arm tunes its ``budget`` points and the point with
the best validation score (``select``) is its pick; the arm's scores are the pick's test
accuracy and macro F1, as mean ± sample std (ddof=1) over seeds. A trial that failed or diverged
keeps its place in the budget and ranks last.

* Time to target (AlgoPerf's external tuning): per seed, the fastest of the arm's trials to reach
  the validation target; the arm's figure is the median over seeds; a miss is infinity (so an arm
  that misses on more than half of the seeds scores infinity).
* The reference arm: the arm whose picks have the best mean validation score (``select``), or
  one the user names; never chosen on test scores, which would bias every comparison with it
  (the winner's curse).
* Paired difference of two arms: per seed, pick minus pick (same split, same initial weights,
  same batches); the exact sign-flip permutation test over seeds and the interval that inverts
  it (:mod:`speechmusic_jax.tuning.stats`: inside [-1, 1] for accuracies by construction).
  Each arm against the reference is one of m comparisons per workload: p-values Holm-adjusted,
  intervals at the Bonferroni level 1 - 0.05/m (they hold together); with fewer seeds than the
  test needs to reject at that level at all, no claim is made and no interval is given.
* Per-arm test accuracy: mean ± std over seeds, and a Wilson interval over the test clips of
  the picks pooled (clip-level noise only: the seeds' spread shows the rest).
* Expected best of k: the expected validation score of the best of k trials drawn at random
  (with replacement) from the arm's trial pool, computed exactly (Dodge et al. 2019, "Show your
  work"), with its standard deviation; k = 1 .. budget. An arm whose curve rises slowly needs
  more tuning.
* Performance profiles (several workloads): rho_a(tau) = the fraction of workloads on which arm
  a's time to target is within a factor tau of the fastest arm's; the score is the area under the
  profile over tau in [1, tau_max], normalised to [0, 1] (AlgoPerf's benchmark score).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from speechmusic_jax import config as config_lib
from speechmusic_jax.tuning import stats


def lower_is_better(metric: str) -> bool:
    return config_lib.MONITORS.get(metric) == "min" or metric.endswith("_loss") or \
        metric.endswith("to_target")


def ok(rec: dict) -> bool:
    """A trial whose result counts: it finished and did not diverge."""
    return rec.get("status") in ("completed", "stopped_early")


def value(rec: dict, metric: str) -> float:
    """The metric of a trial, with failed or diverged trials (and missing values) at the worst
    end: 0 for accuracies and F1, infinity for losses and times."""
    v = rec.get(metric)
    if not ok(rec) and not metric.endswith("to_target"):
        v = None
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return math.inf if lower_is_better(metric) else 0.0
    return float(v)


def rank_key(rec: dict, select: str) -> tuple:
    """Sort key, best first: the validation score, then fewer steps to target, then the trial."""
    v = value(rec, select)
    return (v if lower_is_better(select) else -v, value(rec, "steps_to_target"), rec["trial"])


def mean_std(values: Iterable[float]) -> tuple[float | None, float | None, int]:
    """(mean, sample std with ddof=1 (0 for one value), n) of the finite values."""
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return None, None, 0
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0, len(xs)


def median_with_inf(values: Sequence[float]) -> float:
    """Median where infinity counts as larger than everything (AlgoPerf's rule for misses)."""
    if not values:
        return math.inf
    xs = sorted(values)
    n = len(xs)
    mid = xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
    return mid


def groups(records: Sequence[dict]) -> dict[tuple[str, str], list[dict]]:
    """Records by (workload, arm), in order of first appearance."""
    out: dict[tuple[str, str], list[dict]] = {}
    for rec in records:
        out.setdefault((rec["workload"], rec["arm"]), []).append(rec)
    return out


def picks(records: Sequence[dict], select: str) -> dict[int, dict]:
    """Seed -> the best trial by ``select`` among ``records`` (one workload and arm)."""
    by_seed: dict[int, list[dict]] = {}
    for rec in records:
        by_seed.setdefault(rec["seed"], []).append(rec)
    return {seed: min(recs, key=lambda r: rank_key(r, select))
            for seed, recs in sorted(by_seed.items())}


def arm_summary(records: Sequence[dict], select: str) -> dict[str, Any]:
    """One arm (one workload): counts, picks' scores over seeds, time to target, best point."""
    done = [r for r in records if r["status"] not in ("pending", "failed")]
    chosen = picks(done, select) if done else {}
    out: dict[str, Any] = {
        "workload": records[0]["workload"], "arm": records[0]["arm"],
        "trials": len(records), "finished": len(done),
        "ok": sum(ok(r) for r in records),
        "diverged": sum(r["status"] == "diverged" for r in records),
        "failed": sum(r["status"] == "failed" for r in records),
        "pending": sum(r["status"] == "pending" for r in records),
        "seeds": len(chosen),
        "picked_trials": [r["trial"] for r in chosen.values()],
    }
    for metric in (select, "val_accuracy", "test_accuracy", "test_f1_macro"):
        m, s, n = mean_std(value(r, metric) for r in chosen.values())
        out[f"{metric}_mean"], out[f"{metric}_std"] = m, s
    pooled = stats.pooled_wilson([r.get("test_accuracy") if ok(r) else None
                                  for r in chosen.values()],
                                 [r.get("test_clips") or 0 for r in chosen.values()])
    out["test_accuracy_pooled"], out["test_accuracy_wilson95"], out["test_clips"] = (
        pooled if pooled else (None, None, 0))
    for metric in ("steps_to_target", "seconds_to_target"):
        per_seed = _fastest_per_seed(done, metric)
        out[metric] = median_with_inf(list(per_seed.values()))
        out[f"{metric}_hits"] = sum(math.isfinite(v) for v in per_seed.values())
    # the point with the best mean validation score over seeds: what to use next time
    by_point: dict[int, list[dict]] = {}
    for rec in done:
        by_point.setdefault(rec["point_index"], []).append(rec)
    if by_point:
        sign = 1.0 if lower_is_better(select) else -1.0
        best_point = min(by_point, key=lambda p: (sign * statistics.fmean(
            value(r, select) for r in by_point[p]), p))
        out["best_point_index"] = best_point
        out["best_point_trials"] = [r["trial"] for r in by_point[best_point]]
    params = [r["params_trainable"] for r in done if r.get("params_trainable")]
    out["params_trainable"] = params[0] if params else None
    out["train_time_s_mean"] = mean_std(r.get("train_time_s") for r in done if ok(r))[0]
    steps = [r["step_time_ms"] for r in done if r.get("step_time_ms")]
    out["step_time_ms_median"] = statistics.median(steps) if steps else None
    return out


def _fastest_per_seed(records: Sequence[dict], metric: str) -> dict[int, float]:
    out: dict[int, float] = {}
    for rec in records:
        v = rec.get(metric)
        v = math.inf if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
        out[rec["seed"]] = min(out.get(rec["seed"], math.inf), v)
    return out


def summarize(records: Sequence[dict], select: str) -> list[dict]:
    """One summary per (workload, arm), in the order the arms first appear."""
    return [arm_summary(recs, select) for recs in groups(records).values()]


def paired_difference(records: Sequence[dict], arm_a: str, arm_b: str, *,
                      metric: str = "test_accuracy", select: str = "val_accuracy",
                      workload: str = "", comparisons: int = 1,
                      alpha: float = stats.ALPHA) -> dict[str, Any]:
    """Arm a minus arm b on ``metric`` of each seed's pick, paired by seed: the per-seed
    differences, their mean and sample std, the sign-flip test's ``p_value`` and, as one of
    ``comparisons`` comparisons, the interval at level 1 - alpha/comparisons (``ci``; None with
    fewer seeds than ``min_seeds``, where the test could never reject; ``ci95`` is the same
    interval when ``comparisons`` is 1)."""
    a = picks([r for r in records if r["arm"] == arm_a and r["workload"] == workload
               and r["status"] not in ("pending", "failed")], select)
    b = picks([r for r in records if r["arm"] == arm_b and r["workload"] == workload
               and r["status"] not in ("pending", "failed")], select)
    seeds = sorted(set(a) & set(b))
    diffs = [value(a[s], metric) - value(b[s], metric) for s in seeds]
    finite = [d for d in diffs if math.isfinite(d)]
    m, s, n = mean_std(finite)
    need = stats.min_seeds(comparisons, alpha)
    bounded = metric.endswith(("accuracy", "f1", "_f1_macro"))
    bounds = (-1.0, 1.0) if bounded else (-math.inf, math.inf)
    ci = (stats.sign_flip_interval(finite, alpha / comparisons, bounds) if n >= need
          else None)
    return {"a": arm_a, "b": arm_b, "metric": metric, "workload": workload, "seeds": seeds,
            "differences": diffs, "mean": m, "std": s, "n": n,
            "p_value": stats.sign_flip_pvalue(finite) if n else None,
            "min_seeds": need, "ci": ci, "ci_level": 1 - alpha / comparisons,
            "ci95": ci if comparisons == 1 else None}


SELECT_WORDS = {"val_accuracy": "validation accuracy", "val_loss": "validation loss",
                "val_f1": "validation macro F1"}


def select_words(select: str) -> str:
    return SELECT_WORDS.get(select, select)


def reference_arm(summaries: Sequence[dict], select: str) -> str | None:
    """The arm (of one workload's summaries) whose seeds' picks have the best mean validation
    score ``select``; the first such arm on a tie; None when no arm has a score. Test scores
    play no part."""
    scored = [s for s in summaries if s.get(f"{select}_mean") is not None]
    if not scored:
        return None
    sign = 1.0 if lower_is_better(select) else -1.0
    return min(enumerate(scored), key=lambda t: (sign * t[1][f"{select}_mean"], t[0]))[1]["arm"]


def compare_to_reference(records: Sequence[dict], select: str, *, reference: str | None = None,
                         metric: str = "test_accuracy", alpha: float = stats.ALPHA
                         ) -> list[dict[str, Any]]:
    """Per workload: the reference arm (``reference`` if given, else by ``reference_arm``), how
    it was chosen, every other arm against it (``paired_difference`` with ``p_holm``, the
    Holm-adjusted p-value over the workload's comparisons, and ``differs``), and the verdict."""
    out = []
    summaries = summarize(records, select)
    for workload in dict.fromkeys(s["workload"] for s in summaries):
        arms = [s for s in summaries if s["workload"] == workload]
        ref = reference if reference is not None else reference_arm(arms, select)
        rule = "named by the user" if reference is not None else f"best mean {select_words(select)}"
        if ref is not None and ref not in {s["arm"] for s in arms}:
            raise ValueError(f"reference: no arm {ref!r} (arms: {[s['arm'] for s in arms]})")
        others = [s["arm"] for s in arms if s["arm"] != ref and s["seeds"]] if ref else []
        pairs = [paired_difference(records, arm, ref, metric=metric, select=select,
                                   workload=workload, comparisons=len(others), alpha=alpha)
                 for arm in others]
        adjusted = stats.holm([p["p_value"] if p["p_value"] is not None else 1.0
                               for p in pairs])
        for p, q in zip(pairs, adjusted, strict=True):
            p["p_holm"] = q
            p["differs"] = p["n"] >= p["min_seeds"] and q <= alpha
        ref_summary = next((s for s in arms if s["arm"] == ref), None)
        entry = {"workload": workload, "reference": ref, "rule": rule, "metric": metric,
                 "alpha": alpha, "comparisons": pairs}
        entry["verdict"] = verdict(entry, ref_summary, select)
        out.append(entry)
    return out


def verdict(entry: dict, ref_summary: dict | None, select: str) -> str:
    """One workload's comparison in words: which arm is the reference and why, and which arms
    differ from it on the test metric (or why no claim can be made)."""
    ref, pairs = entry["reference"], entry["comparisons"]
    what = entry["metric"].replace("_", " ")
    level = f"{100 * (1 - entry['alpha']):g} %"
    if ref is None:
        return "no arm has a finished trial yet: nothing to compare"
    if entry["rule"] == "named by the user":
        head = f"{ref} is the reference (named by the user)"
    else:
        head = f"{ref} has the best {select_words(select)}"
    if not pairs:
        return f"{head}; no other arm to compare it with"
    seeds = min(p["n"] for p in pairs)
    need = pairs[0]["min_seeds"]
    if seeds < need:
        return (f"{head}; no claim can be made with {seeds} seed{'s' * (seeds != 1)} about "
                f"how the other arms differ from it in {what}: a paired sign-flip test over "
                f"seeds needs at least {need} to reach {level} (Holm-corrected over "
                f"{len(pairs)} comparison{'s' * (len(pairs) != 1)}); run more seeds to "
                "separate them")
    better = [p for p in pairs if p["differs"] and p["mean"] > 0]
    worse = [p for p in pairs if p["differs"] and p["mean"] < 0]
    corrected = f"at {level} (Holm-corrected, {seeds} seeds)"
    if not better and not worse:
        return (f"{head}; no arm differs from it in {what} {corrected}: run more seeds to "
                "separate them")
    parts = []
    for group, word in ((worse, "lower"), (better, "higher")):
        if group:
            parts.append(", ".join(f"{p['a']} ({p['mean']:+.3f}, p = {p['p_holm']:.3g})"
                                   for p in group) + f" {'has' if len(group) == 1 else 'have'} "
                         f"{word} {what} than {ref}")
    rest = len(pairs) - len(better) - len(worse)
    tail = f"; the other {rest} do not differ from it" if rest else ""
    return f"{head}; {' and '.join(parts)} {corrected}{tail}"


def expected_best_of_k(values: Sequence[float], k: int, *,
                       report: Sequence[float] | None = None,
                       higher: bool = True) -> tuple[float, float]:
    """(mean, std) of ``report`` (default ``values``) at the best of k draws with replacement
    from ``values``: exactly, from the order statistics (Dodge et al. 2019)."""
    n = len(values)
    if n == 0 or k < 1:
        return math.nan, math.nan
    report = list(values if report is None else report)
    order = sorted(range(n), key=lambda i: values[i] if higher else -values[i])
    mean = second = 0.0
    for rank, i in enumerate(order, start=1):  # P(the best of k is the rank-th smallest)
        p = (rank / n) ** k - ((rank - 1) / n) ** k
        mean += p * report[i]
        second += p * report[i] ** 2
    return mean, math.sqrt(max(0.0, second - mean * mean))


def best_of_k_curves(records: Sequence[dict], select: str, budget: int | None = None,
                     report: str | None = None) -> dict[tuple[str, str], list[dict]]:
    """(workload, arm) -> [{k, mean, std}] for k = 1 .. budget (default: the arm's points): the
    expected ``report`` score (default ``select``) of the best-of-k trial by ``select``."""
    out = {}
    higher = not lower_is_better(select)
    for key, recs in groups(records).items():
        pool = [r for r in recs if r["status"] not in ("pending",)]
        if not pool:
            continue
        ks = budget or len({r["point_index"] for r in recs})
        vals = [value(r, select) for r in pool]
        rep = [value(r, report or select) for r in pool]
        out[key] = [dict(zip(("k", "mean", "std"),
                             (k, *expected_best_of_k(vals, k, report=rep, higher=higher)),
                             strict=True)) for k in range(1, ks + 1)]
    return out


def performance_profiles(times: dict[str, dict[str, float]], tau_max: float = 4.0,
                         points: int = 200) -> dict[str, Any]:
    """AlgoPerf's performance profiles from ``times[workload][arm]`` (time to target, infinity
    for a miss): taus, rho per arm, and the normalised area under each profile (the score)."""
    arms = sorted({a for per in times.values() for a in per})
    workloads = sorted(times)
    taus = [math.exp(math.log(tau_max) * i / (points - 1)) for i in range(points)]
    ratios: dict[str, list[float]] = {a: [] for a in arms}
    for w in workloads:
        best = min(times[w].values(), default=math.inf)
        for a in arms:
            t = times[w].get(a, math.inf)
            ratios[a].append(t / best if math.isfinite(t) and best > 0 else math.inf)
    rho = {a: [sum(r <= tau for r in ratios[a]) / len(workloads) for tau in taus] for a in arms}
    score = {}
    for a in arms:  # trapezoids over tau in [1, tau_max], divided by (tau_max - 1)
        area = sum((taus[i + 1] - taus[i]) * (rho[a][i] + rho[a][i + 1]) / 2
                   for i in range(points - 1))
        score[a] = area / (tau_max - 1)
    return {"taus": taus, "rho": rho, "score": score, "ratios": ratios, "workloads": workloads}


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (cost, score) that no other point beats on both (lower cost,
    higher score), sorted by cost."""
    idx = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in idx:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front
