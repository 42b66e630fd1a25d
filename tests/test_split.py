"""Splits: stratified by class, grouped, seeded, saved; k folds; duplicates; too few files."""

from __future__ import annotations

import collections

import pytest

from speechmusic_jax.data import split as split_lib
from speechmusic_jax.data.sources import SPLITS, AudioFile, DataError

CLASSES = ("speech", "music")


def _files(per_class=(40, 20), group_size=1) -> list[AudioFile]:
    out = []
    for label, n in enumerate(per_class):
        for i in range(n):
            out.append(AudioFile(f"/d/{CLASSES[label]}/{i:03d}.wav", label,
                                 f"{CLASSES[label]}-{i // group_size}"))
    return out


def _where(split: dict[str, list[AudioFile]]) -> dict[str, str]:
    return {f.path: s for s in SPLITS for f in split[s]}


def test_every_file_lands_in_exactly_one_split():
    files = _files()
    split = split_lib.split_files(files, (0.7, 0.15, 0.15), seed=0)
    paths = [f.path for s in SPLITS for f in split[s]]
    assert sorted(paths) == sorted(f.path for f in files)


def test_stratified_by_class():
    files = _files((40, 20))
    split = split_lib.split_files(files, (0.7, 0.15, 0.15), seed=3)
    counts = {s: collections.Counter(f.label for f in split[s]) for s in SPLITS}
    assert counts["train"] == {0: 28, 1: 14}
    assert counts["val"] == {0: 6, 1: 3} and counts["test"] == {0: 6, 1: 3}


@pytest.mark.parametrize("seed", range(6))
def test_groups_never_straddle_splits(seed):
    files = _files((30, 24), group_size=3)
    where = _where(split_lib.split_files(files, (0.6, 0.2, 0.2), seed=seed))
    by_group = collections.defaultdict(set)
    for f in files:
        by_group[f.group].add(where[f.path])
    assert all(len(s) == 1 for s in by_group.values())


def test_seeded():
    files = _files()
    a = split_lib.split_files(files, (0.7, 0.15, 0.15), seed=1)
    b = split_lib.split_files(list(reversed(files)), (0.7, 0.15, 0.15), seed=1)
    c = split_lib.split_files(files, (0.7, 0.15, 0.15), seed=2)
    assert a == b  # the order of the listing does not matter, only the seed
    assert a != c


def test_split_csv_round_trip(tmp_path):
    files = _files((6, 6))
    split = split_lib.split_files(files, (0.5, 0.25, 0.25), seed=0)
    path = tmp_path / "split.csv"
    split_lib.write_split_csv(str(path), split, CLASSES)
    assert path.read_text().splitlines()[0] == "path,label,split,group"
    assert split_lib.read_split_csv(str(path), CLASSES) == split


@pytest.mark.parametrize("k", [2, 5])
def test_k_folds_test_every_group_exactly_once(k):
    files = _files((24, 16), group_size=2)
    tested = collections.Counter()
    for fold in range(k):
        split = split_lib.split_files(files, (0.8, 0.2, 0.0), seed=7, folds=k, fold=fold)
        where = _where(split)
        assert len(where) == len(files)
        assert all(split[s] for s in SPLITS)
        for label in (0, 1):  # every fold tests (and trains on) both classes
            assert any(f.label == label for f in split["test"])
            assert any(f.label == label for f in split["val"])
        tested.update(f.path for f in split["test"])
        groups = collections.defaultdict(set)
        for f in files:
            groups[f.group].add(where[f.path])
        assert all(len(s) == 1 for s in groups.values())
    assert set(tested) == {f.path for f in files} and set(tested.values()) == {1}


def test_k_folds_are_balanced_and_seeded():
    files = _files((50, 50))
    sizes = [len(split_lib.split_files(files, (0.8, 0.2, 0.0), 0, folds=5, fold=i)["test"])
             for i in range(5)]
    assert sizes == [20] * 5
    a = split_lib.split_files(files, (0.8, 0.2, 0.0), 0, folds=5, fold=2)
    assert a == split_lib.split_files(files, (0.8, 0.2, 0.0), 0, folds=5, fold=2)
    assert a != split_lib.split_files(files, (0.8, 0.2, 0.0), 1, folds=5, fold=2)


def test_assign_folds_matches_the_test_folds_of_split_files():
    files = _files((24, 16), group_size=2)
    folds = split_lib.assign_folds(files, 4, seed=7)
    for k in range(4):
        test = split_lib.split_files(files, (0.8, 0.2, 0.0), seed=7, folds=4, fold=k)["test"]
        assert {f.path for f in test} == {f.path for f, g in zip(files, folds, strict=True)
                                          if g == k}


def test_too_few_files_for_the_split():
    files = _files((10, 2))
    with pytest.raises(DataError) as e:
        split_lib.split_files(files, (0.7, 0.15, 0.15), seed=0, classes=CLASSES)
    assert str(e.value) == (
        "too few files for the split: class 'music' has 2 file(s) in 2 group(s), but data.split "
        "(0.7, 0.15, 0.15) needs at least 3 groups of every class (one in each of train, val, "
        "test); add files of that class or change data.split / data.folds")
    # Without a test split two groups are enough.
    split_lib.split_files(files, (0.85, 0.15, 0.0), seed=0, classes=CLASSES)


def test_too_few_groups_for_the_folds():
    files = _files((24, 12), group_size=4)  # speech: 6 groups, music: 3
    with pytest.raises(DataError, match=r"class 'music' has 12 file\(s\) in 3 group\(s\), but "
                                        r"data.folds=5"):
        split_lib.split_files(files, (0.8, 0.2, 0.0), seed=0, folds=5, fold=0, classes=CLASSES)


def test_manifest_split_column_wins():
    files = [AudioFile("/a", 0, "a", "train"), AudioFile("/b", 1, "b", "train"),
             AudioFile("/c", 0, "c", "test"), AudioFile("/d", 1, "d", "val")]
    split = split_lib.split_files(files, (0.7, 0.15, 0.15), seed=0)
    assert [f.path for f in split["test"]] == ["/c"]
    with pytest.raises(DataError, match="no 'test' rows"):
        split_lib.split_files(files[:2], (0.7, 0.15, 0.15), seed=0)


def test_merge_duplicates_joins_groups_transitively():
    files = [AudioFile("/a1", 0, "A"), AudioFile("/a2", 0, "A"), AudioFile("/b1", 0, "B"),
             AudioFile("/c1", 0, "C"), AudioFile("/d1", 1, "D"), AudioFile("/e1", 1, "E")]
    dups = [[files[1], files[2]], [files[2], files[3]]]  # a2 = b1, b1 = c1
    merged, conflicts = split_lib.merge_duplicates(files, dups)
    assert [f.group for f in merged] == ["A", "A", "A", "A", "D", "E"]
    assert conflicts == []
    _, conflicts = split_lib.merge_duplicates(files, [[files[0], files[4]]])
    assert conflicts == [[files[0], files[4]]]


def test_duplicates_stay_in_one_split():
    files = _files((30, 30))
    dup_sets = [[files[i], files[i + 1]] for i in range(0, 20, 2)]  # 10 pairs of speech copies
    merged, _ = split_lib.merge_duplicates(files, dup_sets)
    for seed in range(4):
        where = _where(split_lib.split_files(merged, (0.6, 0.2, 0.2), seed=seed))
        assert all(where[a.path] == where[b.path] for a, b in dup_sets)
