"""Splitting files into train/val/test: by file, stratified by class, grouped, seeded.

Whole groups move together (a group is a track, a speaker, or by default a single file), so no
window of a test file, and no file of a test group, is ever trained on. Splitting happens on files,
before any clip is cut into windows. Files with identical audio are put in one group first
(:func:`merge_duplicates`), so copies of a recording never sit on both sides of a split.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
from collections.abc import Sequence

import numpy as np

from speechmusic_jax.data.sources import SPLITS, AudioFile
from speechmusic_jax.errors import DataError
from speechmusic_jax.io_utils import atomic_write_text


def split_files(
    files: Sequence[AudioFile],
    fractions: Sequence[float],
    seed: int,
    *,
    folds: int = 0,
    fold: int = 0,
    classes: Sequence[str] | None = None,
) -> dict[str, list[AudioFile]]:
    """Assign every file to train, val or test.

    With ``folds`` = 0, ``fractions`` (train, val, test) set the sizes. With ``folds`` = K > 1,
    fold ``fold`` of K is the test set and val is carved out of the rest in proportion
    val / (train + val). A split fixed by the source (manifest column) wins over both.
    ``classes`` (names by label) only make error messages readable. Raises :class:`DataError`
    when a class has too few groups for every split (or fold) to get one.
    """
    if files and all(f.split is not None for f in files):
        out = {s: [f for f in files if f.split == s] for s in SPLITS}
        for s in ("train", "test"):
            if not out[s]:
                raise DataError(f"the manifest's split column has no {s!r} rows")
        return out
    groups = _groups(files)
    if folds and folds > 1:
        bins = {"test": 1.0 / folds, "train": fractions[0], "val": fractions[1]}
        how = f"data.folds={folds} with data.split {tuple(fractions)}"
    else:
        bins = dict(zip(SPLITS, fractions, strict=True))
        how = f"data.split {tuple(fractions)}"
    wanted = [s for s in SPLITS if bins[s] > 0]
    _check_enough(groups, wanted, how, min_groups=(folds + 1 if folds and folds > 1 else 0),
                  classes=classes)
    rng = np.random.default_rng([seed, 0x5EED])
    if folds and folds > 1:
        fold_of = _assign(groups, [1.0 / folds] * folds, rng)
        rest = {g: m for g, m in groups.items() if fold_of[g] != fold}
        train_frac, val_frac = fractions[0], fractions[1]
        sub = _assign(rest, [train_frac, val_frac], np.random.default_rng([seed, 0x5EED, 1]))
        where = {g: ("test" if fold_of[g] == fold else ("train", "val")[sub[g]]) for g in groups}
    else:
        idx = _assign(groups, list(fractions), rng)
        where = {g: SPLITS[i] for g, i in idx.items()}
    out = {s: [] for s in SPLITS}
    for g, members in groups.items():
        out[where[g]].extend(members)
    for s in SPLITS:
        out[s].sort(key=lambda f: f.path)
    if not out["train"]:
        raise DataError("the split left no training files; use more data or change data.split")
    for s in wanted:
        present = {f.label for f in out[s]}
        for label in sorted({f.label for f in files} - present):
            n = sum(f.label == label for f in files)
            g = sum(1 for m in groups.values() if _majority(m) == label)
            raise DataError(
                f"too few files for the split: class {_name(label, classes)} has {n} file(s) in "
                f"{g} group(s) "
                f"and none of them land in {s} ({how}); add files of that class or change "
                "data.split / data.folds")
    return out


def assign_folds(files: Sequence[AudioFile], folds: int, seed: int) -> list[int]:
    """The fold (0 .. folds-1) of every file, in the order of ``files``: whole groups per fold,
    stratified by class, seeded (the assignment :func:`split_files` uses for its test folds).
    With fewer groups than folds some folds are empty."""
    fold_of = _assign(_groups(files), [1.0 / folds] * folds, np.random.default_rng([seed, 0x5EED]))
    return [fold_of[f.group] for f in files]


def _majority(members: Sequence[AudioFile]) -> int:
    labels = collections.Counter(f.label for f in members)
    return max(sorted(labels), key=labels.__getitem__)


def _name(label: int, classes: Sequence[str] | None) -> str:
    return repr(classes[label]) if classes is not None and label < len(classes) else f"#{label}"


def _check_enough(groups: dict[str, list[AudioFile]], wanted: Sequence[str], how: str,
                  min_groups: int, classes: Sequence[str] | None) -> None:
    """Every class needs a group for each split it must appear in (and K+1 groups for K folds:
    one per fold, plus train and val beside each test fold)."""
    need = max(len(wanted), min_groups)
    per_class: collections.Counter[int] = collections.Counter()
    files_per_class: collections.Counter[int] = collections.Counter()
    for members in groups.values():
        per_class[_majority(members)] += 1
        for f in members:
            files_per_class[f.label] += 1
    for label in sorted(files_per_class):
        if per_class[label] < need:
            raise DataError(
                f"too few files for the split: class {_name(label, classes)} has "
                f"{files_per_class[label]} "
                f"file(s) in {per_class[label]} group(s), but {how} needs at least {need} "
                f"groups of every class (one in each of {', '.join(wanted)}); add files of that "
                "class or change data.split / data.folds")


def merge_duplicates(
    files: Sequence[AudioFile], duplicate_sets: Sequence[Sequence[AudioFile]]
) -> tuple[list[AudioFile], list[list[AudioFile]]]:
    """Give files with identical audio (and everything grouped with them) one group.

    Returns (files with merged groups, the duplicate sets whose labels disagree). Groups are
    joined transitively (a union-find over group names); the merged group takes the smallest
    name, so the result does not depend on the order of ``files``.
    """
    parent: dict[str, str] = {}

    def find(g: str) -> str:
        while parent.get(g, g) != g:
            parent[g] = parent.get(parent[g], parent[g])
            g = parent[g]
        return g

    conflicts = []
    for dup in duplicate_sets:
        if len({f.label for f in dup}) > 1:
            conflicts.append(list(dup))
        roots = sorted({find(f.group) for f in dup})
        for r in roots[1:]:
            parent[r] = roots[0]
    out = [dataclasses.replace(f, group=find(f.group)) if find(f.group) != f.group else f
           for f in files]
    return out, conflicts

def _groups(files: Sequence[AudioFile]) -> dict[str, list[AudioFile]]:
    groups: dict[str, list[AudioFile]] = collections.defaultdict(list)
    for f in sorted(files, key=lambda f: f.path):
        groups[f.group].append(f)
    return dict(groups)


def _assign(
    groups: dict[str, list[AudioFile]], fractions: Sequence[float], rng: np.random.Generator
) -> dict[str, int]:
    """Stratified, grouped assignment of groups to len(fractions) bins.

    Within each class (a group's majority label), groups are shuffled and then placed, largest
    first, into the bin furthest below its target share of that class's files. Deterministic
    given the generator state.
    """
    frac = np.asarray(fractions, dtype=np.float64)
    frac = frac / frac.sum()
    by_class: dict[int, list[str]] = collections.defaultdict(list)
    for g, members in groups.items():
        labels = collections.Counter(f.label for f in members)
        by_class[max(sorted(labels), key=labels.__getitem__)].append(g)
    out: dict[str, int] = {}
    for label in sorted(by_class):
        names = sorted(by_class[label])
        order = rng.permutation(len(names))
        names = [names[i] for i in order]
        names.sort(key=lambda g: -len(groups[g]))  # stable: ties keep the shuffled order
        total = sum(len(groups[g]) for g in names)
        filled = np.zeros(len(frac))
        for g in names:
            deficit = frac * total - filled
            # Prefer bins that have nothing yet and want something, then the largest deficit.
            empty_wanted = (filled == 0) & (frac > 0)
            score = deficit + np.where(empty_wanted, total, 0.0)
            b = int(np.argmax(score))
            out[g] = b
            filled[b] += len(groups[g])
    return out


def write_split_csv(path: str, split: dict[str, list[AudioFile]], classes: Sequence[str]) -> None:
    """Save the split (columns path, label, split, group) atomically."""
    rows = ["path,label,split,group"]
    lines = []
    for s in SPLITS:
        for f in split[s]:
            lines.append(_csv_row([f.path, classes[f.label], s, f.group]))
    atomic_write_text(path, "\n".join(rows + lines) + "\n")


def read_split_csv(path: str, classes: Sequence[str]) -> dict[str, list[AudioFile]]:
    """Read a split written by :func:`write_split_csv`."""
    index = {c: i for i, c in enumerate(classes)}
    out: dict[str, list[AudioFile]] = {s: [] for s in SPLITS}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["label"] not in index or row["split"] not in out:
                raise DataError(f"{path}: row {row} does not match data.classes {tuple(classes)}")
            out[row["split"]].append(AudioFile(row["path"], index[row["label"]], row["group"]))
    return out


def _csv_row(values: Sequence[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(values)
    return buf.getvalue()


def describe(split: dict[str, list[AudioFile]], classes: Sequence[str]) -> str:
    parts = []
    for s in SPLITS:
        counts = collections.Counter(f.label for f in split[s])
        per = ", ".join(f"{classes[i]} {counts[i]}" for i in range(len(classes)))
        parts.append(f"{s} {len(split[s])} ({per})")
    return "; ".join(parts)


