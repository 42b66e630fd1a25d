"""Data sources: which files, with which label and group, from a ``data.spec`` string.

``synthetic``           the built-in corpus (generated once into a cache, then read as WAV files)
``folder:PATH``         one subfolder per class, names matched case-insensitively, searched recursively
``gtzan:PATH``          the GTZAN music/speech tree: ``music_wav/`` and ``speech_wav/``
``musan:PATH``          MUSAN: ``music/``, ``speech/`` (``noise/`` only when data.classes names it)
``manifest:FILE.csv``   columns ``path,label`` and optional ``split``, ``group``; paths relative
                        to the CSV; other columns ignored

A source only lists files; it does not decode audio. The header scan in :func:`scan_headers`
then checks every file cheaply before any training starts.
"""

from __future__ import annotations

import collections
import concurrent.futures
import csv
import dataclasses
import os
import re
from collections.abc import Callable, Sequence

from speechmusic_jax.data import audio

SPLITS = ("train", "val", "test")


class DataError(Exception):
    """A problem with the data as a whole (a missing folder, an empty class, a bad manifest)."""


@dataclasses.dataclass(frozen=True)
class AudioFile:
    path: str  # absolute
    label: int  # index into data.classes
    group: str  # files of one group always land in the same split
    split: str | None = None  # a split fixed by the source (manifest column), else None


@dataclasses.dataclass(frozen=True)
class Listing:
    files: tuple[AudioFile, ...]
    ignored: dict[str, int]  # what was left out on purpose, by reason (e.g. musan noise/)
    errors: dict[str, int]  # files dropped under on_error=skip, by kind
    root: str  # the folder (or manifest) the listing came from


SOURCE_KINDS = {
    "synthetic": "the built-in procedural corpus (default)",
    "folder": "folder:PATH with one subfolder per class",
    "gtzan": "gtzan:PATH, the GTZAN music/speech tree (music_wav/, speech_wav/)",
    "musan": "musan:PATH, the MUSAN tree (music/, speech/, noise/)",
    "manifest": "manifest:FILE.csv with columns path,label[,split][,group]",
}


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``kind:arg``; raise ValueError naming data.spec when it is malformed."""
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in SOURCE_KINDS:
        known = ", ".join(sorted(SOURCE_KINDS))
        raise ValueError(f"data.spec: unknown source {kind!r} in {spec!r}; known: {known}")
    if kind == "synthetic" and arg:
        raise ValueError(f"data.spec: 'synthetic' takes no argument, got {spec!r}")
    if kind != "synthetic" and not arg:
        raise ValueError(f"data.spec: {kind!r} needs a path, e.g. '{kind}:/data/corpus'")
    return kind, os.path.expanduser(arg)


def list_files(
    spec: str,
    classes: Sequence[str],
    *,
    group_regex: str = "",
    on_error: str = "error",
    synthetic_dir: Callable[[], str] | None = None,
) -> Listing:
    """List the labelled files of ``spec``. ``synthetic_dir`` makes (or finds) the built-in corpus."""
    kind, arg = parse_spec(spec)
    class_index = {c.lower(): i for i, c in enumerate(classes)}
    if kind == "synthetic":
        if synthetic_dir is None:
            raise ValueError("data.spec=synthetic needs the corpus generator")
        manifest = os.path.join(synthetic_dir(), "manifest.csv")
        return _from_manifest(manifest, class_index, group_regex, on_error)
    if kind == "manifest":
        return _from_manifest(arg, class_index, group_regex, on_error)
    root = os.path.abspath(arg)
    if not os.path.isdir(root):
        raise DataError(f"data.spec={spec}: {root} is not a folder")
    if kind == "gtzan":
        layout = {"music_wav": "music", "speech_wav": "speech"}
        return _from_layout(root, layout, class_index, group_regex, on_error, strict=True)
    if kind == "musan":
        layout = {"music": "music", "speech": "speech", "noise": "noise"}
        return _from_layout(root, layout, class_index, group_regex, on_error, strict=False)
    # folder: every subfolder is a class name.
    subdirs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    layout = {d: d.lower() for d in subdirs if not d.startswith(".")}
    unknown = [d for d, c in layout.items() if c not in class_index]
    if unknown and on_error == "error":
        raise DataError(
            f"{root}: class folder(s) {unknown} not in data.classes {tuple(classes)}; "
            "rename them, add them to data.classes, or pass --data_on_error=skip to leave them out"
        )
    return _from_layout(root, layout, class_index, group_regex, on_error, strict=False)


def _from_layout(
    root: str,
    layout: dict[str, str],
    class_index: dict[str, int],
    group_regex: str,
    on_error: str,
    strict: bool,
) -> Listing:
    files: list[AudioFile] = []
    ignored: collections.Counter[str] = collections.Counter()
    errors: collections.Counter[str] = collections.Counter()
    present = {d.lower(): d for d in os.listdir(root)}
    for sub, cls in layout.items():
        actual = present.get(sub.lower())
        if actual is None or not os.path.isdir(os.path.join(root, actual)):
            if strict or cls in class_index:
                raise DataError(f"{root}: expected a subfolder {sub}/ for class {cls!r}")
            continue
        found = [p for p in _walk(os.path.join(root, actual)) if audio.is_audio_path(p)]
        if cls not in class_index:
            reason = "unknown_class" if on_error == "skip" else f"class_not_selected:{cls}"
            (errors if reason == "unknown_class" else ignored)[reason] += len(found)
            continue
        for path in found:
            rel = os.path.relpath(path, root)
            files.append(AudioFile(path, class_index[cls], _group(rel, group_regex)))
    return _checked(Listing(tuple(files), dict(ignored), dict(errors), root), class_index)


def _from_manifest(
    manifest: str, class_index: dict[str, int], group_regex: str, on_error: str
) -> Listing:
    manifest = os.path.abspath(manifest)
    if not os.path.isfile(manifest):
        raise DataError(f"manifest {manifest} does not exist")
    base = os.path.dirname(manifest)
    files: list[AudioFile] = []
    errors: collections.Counter[str] = collections.Counter()
    with open(manifest, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
        missing = [c for c in ("path", "label") if c not in cols]
        if missing:
            raise DataError(f"{manifest}: missing column(s) {missing}; found {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            rel = (row[cols["path"]] or "").strip()
            label = (row[cols["label"]] or "").strip().lower()
            if not rel:
                raise DataError(f"{manifest}:{line}: empty path")
            if label not in class_index:
                if on_error == "skip":
                    errors["unknown_class"] += 1
                    continue
                raise DataError(
                    f"{manifest}:{line}: label {label!r} not in data.classes "
                    f"{tuple(class_index)}"
                )
            split = (row.get(cols["split"]) or "").strip().lower() if "split" in cols else ""
            if split and split not in SPLITS:
                raise DataError(f"{manifest}:{line}: split {split!r} is not one of {SPLITS}")
            group = (row.get(cols["group"]) or "").strip() if "group" in cols else ""
            path = os.path.normpath(os.path.join(base, rel))
            files.append(AudioFile(path, class_index[label], group or _group(rel, group_regex),
                                   split or None))
    splits = {f.split for f in files}
    if None in splits and len(splits) > 1:
        raise DataError(f"{manifest}: the split column must be filled on every row or on none")
    return _checked(Listing(tuple(files), {}, dict(errors), manifest), class_index)


def _checked(listing: Listing, class_index: dict[str, int]) -> Listing:
    counts = collections.Counter(f.label for f in listing.files)
    names = list(class_index)
    empty = [names[i] for i in range(len(names)) if counts[i] == 0]
    if empty:
        raise DataError(f"{listing.root}: no audio files for class(es) {empty}")
    return listing


def _walk(folder: str) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(os.path.join(dirpath, n) for n in sorted(filenames) if not n.startswith("."))
    return out


def _group(rel_path: str, group_regex: str) -> str:
    """Group of a file: the regex's first group (or whole match) on the file name, else the path."""
    if group_regex:
        name = os.path.basename(rel_path)
        m = re.search(group_regex, name)
        if m:
            return m.group(1) if m.groups() else m.group(0)
    return rel_path


def scan_headers(
    files: Sequence[AudioFile], on_error: str, workers: int = 4
) -> tuple[list[tuple[AudioFile, audio.AudioInfo]], dict[str, int]]:
    """Probe every file's header (cheap) before training; drop or raise on bad ones."""
    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(pool.map(_probe_or_error, files))
    good: list[tuple[AudioFile, audio.AudioInfo]] = []
    errors: collections.Counter[str] = collections.Counter()
    bad: list[audio.AudioError] = []
    for f, r in zip(files, results, strict=True):
        if isinstance(r, audio.AudioError):
            errors[r.kind] += 1
            bad.append(r)
        else:
            good.append((f, r))
    if bad and on_error == "error":
        shown = "\n  ".join(str(e) for e in bad[:10])
        more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise DataError(
            f"{len(bad)} unusable audio file(s):\n  {shown}{more}\n"
            "Fix or remove them, or pass --data_on_error=skip to leave them out."
        )
    return good, dict(errors)


def _probe_or_error(f: AudioFile) -> audio.AudioInfo | audio.AudioError:
    try:
        return audio.probe(f.path)
    except audio.AudioError as e:
        return e
