"""What a sweep's trial records say, by the rules of AlgoPerf (Dahl et al. 2023) and beyond.

Every seed is a *study*: within one seed an arm tunes its ``budget`` points and the point with
the best validation score (``select``) is its pick; the arm's scores are the pick's test
accuracy and macro F1, as mean ± sample std (ddof=1) over seeds. A trial that failed or diverged
keeps its place in the budget and ranks last.

* Time to target (AlgoPerf's external tuning): per seed, the fastest of the arm's trials to reach
  the validation target; the arm's figure is the median over seeds; a miss is infinity (so an arm
  that misses on more than half of the seeds scores infinity).
* Paired difference of two arms: per seed, pick minus pick (same split, same initial weights,
  same batches), mean with a Student-t 95% interval over seeds.
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

# Two-sided 95% Student-t quantiles by degrees of freedom (1 .. 30); the normal 1.96 beyond.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    return _T975[df - 1] if 1 <= df <= len(_T975) else 1.96


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
                      workload: str = "") -> dict[str, Any]:
    """Arm a minus arm b on ``metric`` of each seed's pick, paired by seed: mean, sample std,
    n, and a Student-t 95% interval (None with fewer than two seeds)."""
    a = picks([r for r in records if r["arm"] == arm_a and r["workload"] == workload
               and r["status"] not in ("pending", "failed")], select)
    b = picks([r for r in records if r["arm"] == arm_b and r["workload"] == workload
               and r["status"] not in ("pending", "failed")], select)
    seeds = sorted(set(a) & set(b))
    diffs = [value(a[s], metric) - value(b[s], metric) for s in seeds]
    finite = [d for d in diffs if math.isfinite(d)]
    m, s, n = mean_std(finite)
    ci = None
    if n >= 2 and m is not None and s is not None:
        half = t975(n - 1) * s / math.sqrt(n)
        ci = (m - half, m + half)
    return {"a": arm_a, "b": arm_b, "metric": metric, "workload": workload, "seeds": seeds,
            "differences": diffs, "mean": m, "std": s, "n": n, "ci95": ci}


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
