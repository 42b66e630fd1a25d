"""The statistics of a sweep: picks per seed, time to target, paired intervals, best-of-k,
performance profiles, and the result files; on hand-made records with known answers."""

import itertools
import math
import random

import pytest

from speechmusic_jax.tuning import analysis, records
from speechmusic_jax.tuning.results import SweepResult


def rec(trial, arm, seed, point, val, test, steps=math.inf, status="completed", workload=""):
    return {"trial": trial, "workload": workload, "arm": arm, "seed": seed, "point_index": point,
            "status": status, "val_accuracy": val, "test_accuracy": test, "test_f1_macro": test,
            "steps_to_target": steps, "seconds_to_target": steps / 10, "train_time_s": 2.0,
            "params_trainable": 100 if arm == "a" else 1000, "workdir": "/nonexistent",
            "optimizer.learning_rate": 10.0 ** -(point + 1)}


RECORDS = [
    # arm a: point 0 is the better one on every seed
    rec(0, "a", 0, 0, 0.90, 0.80, 40), rec(1, "a", 0, 1, 0.70, 0.95, 80),
    rec(2, "a", 1, 0, 0.92, 0.84, 30), rec(3, "a", 1, 1, 0.60, 0.60),
    rec(4, "a", 2, 0, 0.88, 0.82, 50), rec(5, "a", 2, 1, 0.91, 0.70, 20),
    # arm b: one diverged trial, otherwise lower
    rec(6, "b", 0, 0, 0.80, 0.75), rec(7, "b", 0, 1, None, None, status="diverged"),
    rec(8, "b", 1, 0, 0.85, 0.79, 60), rec(9, "b", 1, 1, 0.50, 0.50),
    rec(10, "b", 2, 0, 0.81, 0.76), rec(11, "b", 2, 1, 0.82, 0.77),
]


def test_each_seed_picks_its_best_trial_by_validation_and_reports_its_test():
    picks = analysis.picks([r for r in RECORDS if r["arm"] == "a"], "val_accuracy")
    assert {s: r["trial"] for s, r in picks.items()} == {0: 0, 1: 2, 2: 5}
    s = analysis.arm_summary([r for r in RECORDS if r["arm"] == "a"], "val_accuracy")
    assert s["test_accuracy_mean"] == pytest.approx((0.80 + 0.84 + 0.70) / 3)
    assert s["test_accuracy_std"] == pytest.approx(
        math.sqrt(sum((x - s["test_accuracy_mean"]) ** 2 for x in (0.80, 0.84, 0.70)) / 2))
    assert s["best_point_index"] == 0  # mean validation 0.90 against 0.737


def test_time_to_target_is_the_median_over_seeds_of_the_fastest_trial():
    a = analysis.arm_summary([r for r in RECORDS if r["arm"] == "a"], "val_accuracy")
    assert a["steps_to_target"] == 30  # per seed: 40, 30, 20 -> median 30
    assert a["steps_to_target_hits"] == 3
    b = analysis.arm_summary([r for r in RECORDS if r["arm"] == "b"], "val_accuracy")
    assert b["steps_to_target"] == math.inf  # hits on one seed of three
    assert b["steps_to_target_hits"] == 1
    assert (b["diverged"], b["ok"]) == (1, 5)


def test_time_to_target_from_epoch_rows():
    rows = [{"epoch": 1, "val_accuracy": 0.6, "examples_per_s": 80.0},
            {"epoch": 2, "val_accuracy": 0.91, "examples_per_s": 40.0},
            {"epoch": 3, "val_accuracy": 0.95, "train_time_s": 9.0}]
    # 10 steps of 8 examples an epoch: 1 s, then 2 s of training
    assert records.time_to_target(rows, ("val_accuracy", 0.9), 10, 8) == (20.0, 3.0)
    assert records.time_to_target(rows, ("val_accuracy", 0.99), 10, 8) == (math.inf, math.inf)
    loss_rows = [{"epoch": 1, "val_loss": 0.5, "train_time_s": 1.0},
                 {"epoch": 2, "val_loss": 0.2, "train_time_s": 1.0}]
    assert records.time_to_target(loss_rows, ("val_loss", 0.3), 5, 8) == (10.0, 2.0)


def test_paired_difference_pairs_by_seed_with_an_exact_test():
    p = analysis.paired_difference(RECORDS, "a", "b")
    # picks: a -> 0.80, 0.84, 0.70; b -> 0.75 (seed 0), 0.79 (seed 1), 0.77 (seed 2)
    diffs = [0.80 - 0.75, 0.84 - 0.79, 0.70 - 0.77]
    assert p["differences"] == pytest.approx(diffs)
    assert p["mean"] == pytest.approx(sum(diffs) / 3)
    # sign patterns of (+.05, +.05, -.07) with a sum at least 0.03: (+,+,-) and (+,+,+)... of 8
    assert p["p_value"] == pytest.approx(1.0)
    # 3 seeds: the test can never reject (its smallest p is 2/8), so no interval is given
    assert p["min_seeds"] == 6 and p["ci"] is None and p["ci95"] is None


def _seeds(n, diffs_a, diffs_b):
    """Three arms over n seeds, one point each: val and test accuracy per seed."""
    out = []
    for seed in range(n):
        for arm, (val, test) in (("ref", (0.90, 0.80)), ("up", diffs_a[seed]),
                                 ("down", diffs_b[seed])):
            out.append(rec(len(out), arm, seed, 0, val, test))
    return out


def test_the_reference_is_chosen_on_validation_never_on_test():
    rng = random.Random(0)
    for _ in range(20):
        n = 4
        recs = _seeds(n, [(0.85, 0.9)] * n, [(0.80, 0.95)] * n)
        for r in recs:  # random validation scores; the test scores are then shuffled
            r["val_accuracy"] = round(rng.uniform(0.5, 1.0), 3)
        expected = analysis.reference_arm(analysis.summarize(recs, "val_accuracy"),
                                          "val_accuracy")
        means = {arm: sum(r["val_accuracy"] for r in recs if r["arm"] == arm) / n
                 for arm in ("ref", "up", "down")}
        assert expected == max(means, key=means.get)
        tests = [r["test_accuracy"] for r in recs]
        for _ in range(5):
            rng.shuffle(tests)
            shuffled = [dict(r, test_accuracy=t) for r, t in zip(recs, tests, strict=True)]
            result = SweepResult("demo", shuffled, [])
            assert result.to_json()["reference_arm"] == expected
            assert result.to_json()["reference_rule"] == "best mean validation accuracy"
    named = SweepResult("demo", recs, [], reference="down").to_json()
    assert (named["reference_arm"], named["reference_rule"]) == ("down", "named by the user")
    with pytest.raises(ValueError, match="no arm 'nope'"):
        SweepResult("demo", recs, [], reference="nope").verdict()


def test_no_interval_leaves_the_possible_range():
    rng = random.Random(1)
    for n in (3, 6, 7, 9, 12):
        for _ in range(10):
            recs = _seeds(n, [(0.80, rng.choice((0.0, 1.0))) for _ in range(n)],
                          [(0.70, rng.random()) for _ in range(n)])
            for p in SweepResult("demo", recs, []).paired_table():
                assert p["ci"] is None if n < p["min_seeds"] else p["ci"] is not None
                if p["ci"]:
                    assert -1.0 <= p["ci"][0] <= p["ci"][1] <= 1.0
                    assert min(p["differences"]) <= p["ci"][0]
                    assert p["ci"][1] <= max(p["differences"])


def test_the_verdict_names_the_arms_that_differ_after_holm():
    n = 8  # two comparisons: the test needs 7 seeds
    better = [(0.85, 0.80 + 0.05 + 0.01 * s) for s in range(n)]  # higher test on every seed
    same = [(0.80, 0.80 + (0.02 if s % 2 else -0.02)) for s in range(n)]
    result = SweepResult("demo", _seeds(n, better, same), [])
    entry = result.comparison()[0]
    assert entry["reference"] == "ref"
    up, down = entry["comparisons"]
    assert up["differs"] and up["p_holm"] == pytest.approx(2 * 2 / 2 ** n)
    assert not down["differs"] and down["p_holm"] == 1.0
    assert up["ci"][0] > 0 and up["ci_level"] == pytest.approx(1 - 0.05 / 2)
    text = result.verdict()
    assert text.startswith("ref has the best validation accuracy; up (+0.085, p = 0.0156) has "
                           "higher test accuracy than ref at 95 % (Holm-corrected, 8 seeds)")
    assert "the other 1 do not differ" in text
    assert result.markdown().split("\n")[2].startswith("**Verdict.** ref has the best")
    assert result.table().startswith("verdict: ref has the best")
    few = SweepResult("demo", _seeds(3, better[:3], same[:3]), []).verdict()
    assert "no claim can be made with 3 seeds" in few and "at least 7" in few


def test_expected_best_of_k_is_the_exact_bootstrap_expectation():
    values = [0.5, 0.9, 0.7, 0.6]
    report = [1.0, 2.0, 3.0, 4.0]
    for k in (1, 2, 3):
        mean, std = analysis.expected_best_of_k(values, k, report=report)
        draws = list(itertools.product(range(4), repeat=k))  # every draw, equally likely
        best = [report[max(d, key=lambda i: values[i])] for d in draws]
        exact = sum(best) / len(best)
        assert mean == pytest.approx(exact)
        assert std == pytest.approx(math.sqrt(sum((b - exact) ** 2 for b in best) / len(best)))
    assert analysis.expected_best_of_k(values, 1)[0] == pytest.approx(sum(values) / 4)
    # and by simulation, for a lower-is-better metric
    rng = random.Random(0)
    sim = sum(min(rng.choice(values) for _ in range(3)) for _ in range(20000)) / 20000
    assert analysis.expected_best_of_k(values, 3, higher=False)[0] == pytest.approx(sim, abs=0.01)


def test_best_of_k_curves_rise_and_count_failures_as_worst():
    curves = analysis.best_of_k_curves(RECORDS, "val_accuracy")
    a, b = curves[("", "a")], curves[("", "b")]
    assert [c["k"] for c in a] == [1, 2]
    assert a[0]["mean"] < a[1]["mean"]
    pool = [0.80, 0.0, 0.85, 0.50, 0.81, 0.82]  # the diverged trial scores 0
    assert b[0]["mean"] == pytest.approx(sum(pool) / 6)


def test_performance_profiles_and_pareto_front():
    times = {"w1": {"a": 10.0, "b": 20.0}, "w2": {"a": 30.0, "b": 15.0},
             "w3": {"a": math.inf, "b": 40.0}}
    prof = analysis.performance_profiles(times, tau_max=4.0)
    taus, rho = prof["taus"], prof["rho"]
    at = lambda arm, tau: rho[arm][max(i for i, t in enumerate(taus) if t <= tau)]  # noqa: E731
    assert at("a", 1.0) == pytest.approx(1 / 3) and at("b", 1.0) == pytest.approx(2 / 3)
    assert at("a", 2.05) == pytest.approx(2 / 3) and at("b", 2.05) == pytest.approx(1.0)
    assert at("a", 4.0) == pytest.approx(2 / 3)  # the miss never counts
    assert 0 < prof["score"]["a"] < prof["score"]["b"] <= 1
    assert analysis.pareto_front([(1, 0.5), (2, 0.4), (3, 0.9), (4, 0.9), (0.5, 0.1)]) == [4, 0,
                                                                                             2]


def test_result_table_markdown_csv_and_filter(tmp_path):
    result = SweepResult("demo", RECORDS, ["optimizer.learning_rate"],
                         target=("val_accuracy", 0.85), budget=2)
    table = result.table()
    assert "a " in table and "0.780 ± 0.072" in table and "30 (3/3)" in table
    md = result.markdown()
    assert md.startswith("# sweep demo") and "Paired differences" in md and "k=2" in md
    lines = result.csv().splitlines()
    assert lines[0].startswith("trial,workload,arm,optimizer,seed,status,optimizer.learning_rate")
    assert len(lines) == 1 + len(RECORDS) and ",inf," in lines[4]
    assert len(result.filter(arm="b", seed=1).records) == 2
    assert result.best()[("", "a")]["trial"] == 2
    result.write(str(tmp_path), plots=False)
    assert (tmp_path / "results.md").read_text() == md
    (tmp_path / "results.csv").write_text("my own notes\n")  # not ours: never replaced
    from speechmusic_jax.errors import WorkdirConflict

    with pytest.raises(WorkdirConflict, match="not a file this program wrote"):
        result.write(str(tmp_path), plots=False)


def test_profiles_need_several_workloads():
    two = [dict(r, workload=w) for w in ("w1", "w2") for r in RECORDS]
    result = SweepResult("demo", two, [], target=("val_accuracy", 0.85))
    prof = result.profiles()
    assert prof is not None and set(prof["score"]) == {"a", "b"}
    assert SweepResult("demo", RECORDS, []).profiles() is None
    assert "Performance profiles" in result.markdown()


def test_the_figures_are_drawn(tmp_path):
    two = [dict(r, workload=w) for w in ("w1", "w2") for r in RECORDS]
    result = SweepResult("demo", two, ["optimizer.learning_rate"], target=("val_accuracy", 0.85))
    result.write(str(tmp_path))
    for name in ("curves.png", "budget.png", "pareto.png", "profile.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def _png_width(path):
    return int.from_bytes(path.read_bytes()[16:20], "big")


def test_pareto_drops_the_parameter_panel_when_every_arm_has_the_same_network(tmp_path):
    from speechmusic_jax.tuning import plots

    plots.pareto(SweepResult("demo", RECORDS, []), str(tmp_path / "two.png"))
    same = [dict(r, params_trainable=500) for r in RECORDS]
    plots.pareto(SweepResult("demo", same, []), str(tmp_path / "one.png"))
    assert _png_width(tmp_path / "one.png") < 0.6 * _png_width(tmp_path / "two.png")


def test_budget_and_curves_mark_the_reference_arm(tmp_path, monkeypatch):
    from speechmusic_jax.tuning import plots

    labels = []
    real = plots._save

    def keep_labels(fig, path):
        labels.extend(t.get_text() for ax in fig.axes if ax.get_legend()
                      for t in ax.get_legend().get_texts())
        real(fig, path)

    monkeypatch.setattr(plots, "_save", keep_labels)
    plots.budget(SweepResult("demo", RECORDS, []), str(tmp_path / "budget.png"))
    assert "a (reference)" in labels and "b" in labels
    labels.clear()
    plots.budget(SweepResult("demo", RECORDS, [], reference="b"), str(tmp_path / "budget.png"))
    assert "b (reference)" in labels and "a" in labels
