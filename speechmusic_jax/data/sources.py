"""Data sources: which files, with which label and group, from a ``data.spec`` string.

``synthetic``           the built-in corpus (generated once into a cache, then read as WAV files)
``folder:PATH``         one subfolder per class, names matched case-insensitively, searched
                        recursively (``Speech/`` and ``speech/`` are both class ``speech``)
``gtzan:PATH``          the GTZAN music/speech tree: ``music_wav/`` and ``speech_wav/`` (in PATH or
                        one level down, as the archive unpacks to ``music_speech/``)
``musan:PATH``          MUSAN: ``music/``, ``speech/``; ``noise/`` is left out (and counted)
                        unless data.classes names it. Music files are grouped by artist from the
                        corpus's ANNOTATIONS files; its speech ANNOTATIONS name no speaker
``manifest:FILE.csv``   columns ``path,label`` and optional ``split``, ``group``; paths relative
                        to the CSV; any other column travels with each file as ``meta`` (for
                        ``evaluate``'s breakdown) and changes nothing else
``tfds:NAME``           a TensorFlow Datasets audio set (e.g. ``gtzan_music_speech``), written
                        once to WAV files in the cache; needs the ``[tfds]`` extra

A source only lists files; it does not decode audio. The header scan in :func:`scan_headers`
then checks every file cheaply before any training starts, and :func:`find_duplicates` finds
files with identical audio. Files without an audio extension (a README, a cover image) are left
out and counted; audio in a container libsndfile cannot read (.m4a, ...) is reported as a bad file.

Groups keep related files (one speaker, one artist) in one split. A file's group comes from
data.group_regex when it matches, else from the source's metadata (a manifest's ``group``
column, MUSAN's artist), else the file is its own group; a source whose files are (partly) left
ungrouped for want of metadata says so in a note.
"""

from __future__ import annotations

import collections
import concurrent.futures
import csv
import dataclasses
import io
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

from speechmusic_jax.data import audio
from speechmusic_jax.errors import DataError

SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class AudioFile:
    path: str  # absolute
    label: int  # index into data.classes
    group: str  # files of one group always land in the same split
    split: str | None = None  # a split fixed by the source (manifest column), else None
    # A manifest's other columns, (name, value) in the CSV's order: what ``evaluate`` breaks its
    # results down by. Left out of equality and hashing, so that it changes nothing about which
    # files are the same (splits, duplicates, overlap with training).
    meta: tuple[tuple[str, str], ...] = dataclasses.field(default=(), compare=False)


@dataclasses.dataclass(frozen=True)
class Listing:
    files: tuple[AudioFile, ...]
    ignored: dict[str, int]  # what was left out on purpose, by reason (e.g. musan noise/)
    errors: dict[str, int]  # files dropped under on_error=skip, by kind
    root: str  # the folder (or manifest) the listing came from
    notes: tuple[str, ...] = ()  # what to tell the user: each thing left out, with an example
    # what to tell a user who splits these files (train/val/test, folds): that groups are unknown
    split_notes: tuple[str, ...] = ()


SOURCE_KINDS = {
    "synthetic": "the built-in procedural corpus (default)",
    "folder": "folder:PATH with one subfolder per class (names matched case-insensitively)",
    "gtzan": "gtzan:PATH, the GTZAN music/speech tree (music_wav/, speech_wav/)",
    "musan": "musan:PATH, the MUSAN tree (music/, speech/; noise/ only if data.classes names it)",
    "manifest": "manifest:FILE.csv with columns path,label[,split][,group]",
    "tfds": "tfds:NAME, a TensorFlow Datasets audio set such as gtzan_music_speech "
            "(pip install '.[tfds]')",
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
    if kind == "tfds":
        if not re.fullmatch(r"[a-z0-9_]+(/[\w.]+)?(:[\d.*]+)?", arg.strip()):
            raise ValueError(f"data.spec: 'tfds' needs a dataset name, e.g. "
                             f"'tfds:gtzan_music_speech', got {spec!r}")
        return kind, arg.strip()
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
    cache_root: str | None = None,
    log: Callable[[str], None] | None = None,
    every_class: bool = True,
) -> Listing:
    """List the labelled files of ``spec``.

    ``synthetic_dir`` makes (or finds) the built-in corpus; ``cache_root`` is where a ``tfds``
    source is written as WAV files. Raises :class:`DataError` for problems with the data as a
    whole, and for unknown classes when ``on_error`` is ``error``. Every class of ``classes``
    needs files, unless ``every_class`` is False (scoring a trained model on a source that has
    some of its classes: a three-class model on speech and music); then one file will do.
    """
    listing = _list(spec, classes, group_regex, on_error, synthetic_dir, cache_root, log)
    class_index = {c.lower(): i for i, c in enumerate(classes)}
    check_classes(listing.files, list(class_index), where=listing.root, every_class=every_class)
    return listing


def _list(spec: str, classes: Sequence[str], group_regex: str, on_error: str,
          synthetic_dir: Callable[[], str] | None, cache_root: str | None,
          log: Callable[[str], None] | None) -> Listing:
    kind, arg = parse_spec(spec)
    class_index = {c.lower(): i for i, c in enumerate(classes)}
    if kind == "synthetic":
        if synthetic_dir is None:
            raise ValueError("data.spec=synthetic needs the corpus generator")
        manifest = os.path.join(synthetic_dir(), "manifest.csv")
        return _from_manifest(manifest, class_index, group_regex, on_error)
    if kind == "manifest":
        return _from_manifest(arg, class_index, group_regex, on_error)
    if kind == "tfds":
        from speechmusic_jax.data import tfds_source

        manifest = tfds_source.materialize(arg, cache_root or os.path.expanduser("~/.cache"),
                                           log=log)
        return _from_manifest(manifest, class_index, group_regex, on_error)
    root = os.path.abspath(arg)
    if not os.path.isdir(root):
        raise DataError(f"data.spec={spec}: {root} is not a folder")
    if kind == "gtzan":
        return _gtzan(root, class_index, group_regex, on_error)
    if kind == "musan":
        return _musan(root, class_index, group_regex, on_error)
    return _folder(root, classes, class_index, group_regex, on_error)


def _subdirs(root: str) -> list[str]:
    return sorted(d for d in os.listdir(root)
                  if not d.startswith(".") and os.path.isdir(os.path.join(root, d)))


def _folder(root: str, classes: Sequence[str], class_index: dict[str, int], group_regex: str,
            on_error: str) -> Listing:
    """folder:PATH: every subfolder is a class (case-insensitive); files are found recursively."""
    dirs = [(os.path.join(root, d), d.lower()) for d in _subdirs(root)]
    unknown = [os.path.basename(p) for p, c in dirs if c not in class_index]
    loose = [n for n in sorted(os.listdir(root))
             if os.path.isfile(os.path.join(root, n)) and _audio_like(n)]
    if on_error == "error":
        if unknown:
            raise DataError(
                f"{root}: class folder(s) {unknown} not in data.classes {tuple(classes)}; "
                "rename them, add them to data.classes, or pass --data_on_error=skip to leave "
                "them out")
        if loose:
            raise DataError(
                f"{root}: {len(loose)} audio file(s) outside any class folder (e.g. {loose[0]}); "
                "their class is unknown. Move them into a class folder, or pass "
                "--data_on_error=skip to leave them out")
    listing = _from_dirs(root, dirs, class_index, group_regex, ignored_classes=False)
    if unknown:
        listing = dataclasses.replace(listing, notes=(
            *listing.notes, f"left out the class folder(s) {unknown}: not in data.classes "
                            f"{tuple(classes)}"))
    if loose:
        errors = collections.Counter(listing.errors)
        errors["unknown_class"] += len(loose)
        listing = dataclasses.replace(
            listing, errors=dict(errors),
            notes=(*listing.notes, f"left out {len(loose)} audio file(s) outside any class folder "
                                   f"(e.g. {loose[0]})"))
    return listing


def _gtzan(root: str, class_index: dict[str, int], group_regex: str, on_error: str) -> Listing:
    want = {"music_wav": "music", "speech_wav": "speech"}
    base = root
    if not all(_find_dir(root, d) for d in want):
        # The archive unpacks to music_speech/{music_wav,speech_wav}: accept PATH one level up.
        below = [os.path.join(root, d) for d in _subdirs(root)
                 if all(_find_dir(os.path.join(root, d), w) for w in want)]
        if len(below) != 1:
            raise DataError(f"{root}: not a GTZAN music/speech tree; expected subfolders "
                            "music_wav/ and speech_wav/ (in it or in one folder below it)")
        base = below[0]
    dirs = [(_find_dir(base, d), c) for d, c in want.items()]
    # GTZAN music/speech names no speaker or piece: every file is its own group (and a note says
    # so) unless data.group_regex groups them.
    return _from_dirs(base, dirs, class_index, group_regex, ignored_classes=True)


def _musan(root: str, class_index: dict[str, int], group_regex: str, on_error: str) -> Listing:
    known = ("music", "speech", "noise")
    dirs = []
    for name in known:
        found = _find_dir(root, name)
        if found is None:
            if name in class_index:
                raise DataError(f"{root}: not a MUSAN tree; expected a subfolder {name}/ for "
                                f"class {name!r}")
            continue
        dirs.append((found, name))
    missing = [c for c in class_index if c not in known]
    if missing:
        raise DataError(f"{root}: MUSAN has classes {known}; data.classes names {missing}")
    return _from_dirs(root, dirs, class_index, group_regex, ignored_classes=True,
                      metadata_group=_MusanGroups())


class _MusanGroups:
    """A file's group from MUSAN's ANNOTATIONS, the text file in each sub-corpus folder
    (music/fma/, music/jamendo/, ...) with one whitespace-separated line per file.

    Music lines are ``STEM GENRES VOCALS ARTIST [more fields]`` (``music-fma-0000
    pop,electronica Y Some_Artist``), as Kaldi's make_musan.py and lhotse's MUSAN recipe read
    them: the files of one artist share the group ``musan:music:artist:ARTIST``, across
    sub-corpora. Speech lines are ``STEM GENDER LANGUAGE``, noise lines the stem alone: no speaker
    or source, so those files stay their own groups, as do files whose folder has no (readable)
    ANNOTATIONS, whose stem is not listed, or whose line is too short.
    """

    def __init__(self) -> None:
        self._by_folder: dict[str, dict[str, str]] = {}

    def __call__(self, path: str, cls: str) -> str | None:
        if cls != "music":
            return None
        folder, name = os.path.split(path)
        if folder not in self._by_folder:
            self._by_folder[folder] = _read_music_annotations(os.path.join(folder, "ANNOTATIONS"))
        return self._by_folder[folder].get(os.path.splitext(name)[0])


def _read_music_annotations(path: str) -> dict[str, str]:
    """stem -> group from a MUSAN music ANNOTATIONS file; empty when there is none (or it
    cannot be read: the files are then each their own group, which the ungrouped note reports)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        fields = line.split()
        if len(fields) >= 4 and fields[3]:
            out.setdefault(fields[0], f"musan:music:artist:{fields[3]}")
    return out


def _find_dir(root: str, name: str) -> str | None:
    """The subfolder of ``root`` called ``name``, ignoring case (None if there is none)."""
    for d in _subdirs(root):
        if d.lower() == name.lower():
            return os.path.join(root, d)
    return None


def _audio_like(name: str) -> bool:
    return audio.is_audio_path(name) or audio.is_unsupported_audio_path(name)


def _from_dirs(
    root: str,
    dirs: list[tuple[str, str]],
    class_index: dict[str, int],
    group_regex: str,
    *,
    ignored_classes: bool,
    metadata_group: Callable[[str, str], str | None] | None = None,
) -> Listing:
    """Files under each (folder, class name). A class not in data.classes is counted under
    ``ignored`` (``ignored_classes``, e.g. MUSAN's noise/) or under ``errors`` as unknown_class.

    A file's group is data.group_regex's match on its name, else ``metadata_group(path, class)``
    when that gives one, else the file's relative path (its own group)."""
    files: list[AudioFile] = []
    ignored: collections.Counter[str] = collections.Counter()
    errors: collections.Counter[str] = collections.Counter()
    non_audio: list[str] = []
    unmatched = 0
    ungrouped: collections.Counter[int] = collections.Counter()  # files by label
    for folder, cls in dirs:
        found = []
        for p in _walk(folder):
            (found if _audio_like(p) else non_audio).append(p)
        if cls not in class_index:
            if ignored_classes:
                ignored[f"{cls}/ not in data.classes"] += len(found)
            else:
                errors["unknown_class"] += len(found)
            continue
        for path in found:
            rel = os.path.relpath(path, root)
            group, matched = _group(rel, group_regex)
            if not (group_regex and matched):
                group = (metadata_group(path, cls) if metadata_group else None) or group
            alone = group == rel
            unmatched += group_regex != "" and alone
            ungrouped[class_index[cls]] += alone
            files.append(AudioFile(path, class_index[cls], group))
    notes = [f"left out {n} file(s) in {reason}" for reason, n in sorted(ignored.items()) if n]
    if non_audio:
        ignored["non_audio"] += len(non_audio)
        notes.append(f"left out {len(non_audio)} non-audio file(s) by their extension (e.g. "
                     f"{os.path.relpath(non_audio[0], root)})")
    if group_regex and unmatched:
        notes.append(f"data.group_regex {group_regex!r} matched no file name for {unmatched} of "
                     f"{len(files)} files; each of those is its own group")
    split_notes = [] if group_regex else _ungrouped_note(files, ungrouped, class_index)
    return Listing(tuple(files), dict(ignored), dict(errors), root, tuple(notes),
                   tuple(split_notes))


def _ungrouped_note(files: Sequence[AudioFile], ungrouped: collections.Counter[int],
                    class_index: dict[str, int]) -> list[str]:
    """The note (a list of none or one) for files that are each their own group because the
    source says nothing of who speaks or plays in them: without data.group_regex, their
    speaker's or artist's other recordings can land on the other side of the split."""
    if not sum(ungrouped.values()):
        return []
    if sum(ungrouped.values()) == len(files):
        which = "any file"
    else:
        totals = collections.Counter(f.label for f in files)
        names = {i: c for c, i in class_index.items()}
        which = " and ".join(
            f"every {names[i]} file" if n == totals[i] else f"{n} of {totals[i]} {names[i]} files"
            for i, n in sorted(ungrouped.items()) if n)
    return [f"no speaker, artist or group is known for {which}: each is its own group, so "
            "recordings of one speaker or piece may be split across train and test; set "
            "data.group_regex, or list the files in a manifest with a group column"]


def _from_manifest(
    manifest: str, class_index: dict[str, int], group_regex: str, on_error: str
) -> Listing:
    manifest = os.path.abspath(manifest)
    if not os.path.isfile(manifest):
        raise DataError(f"manifest {manifest} does not exist")
    base = os.path.dirname(manifest)
    files: list[AudioFile] = []
    seen: dict[str, tuple[int, int]] = {}  # path -> (label, line)
    errors: collections.Counter[str] = collections.Counter()
    ignored: collections.Counter[str] = collections.Counter()
    unmatched = 0
    ungrouped: collections.Counter[int] = collections.Counter()  # rows by label
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as f:
            text = f.read()
    except OSError as e:
        raise DataError(f"manifest {manifest} cannot be read ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{manifest}: not a UTF-8 text file ({e.reason})") from None
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
        missing = [c for c in ("path", "label") if c not in cols]
        if missing:
            raise DataError(f"{manifest}: missing column(s) {missing}; found {reader.fieldnames}")
        rows = list(enumerate(reader, start=2))
        extra = _extra_columns(reader.fieldnames or [])
    except csv.Error as e:
        raise DataError(f"{manifest}: not a readable CSV file ({e})") from None
    for line, row in rows:
        rel = (row.get(cols["path"]) or "").strip()
        label = (row.get(cols["label"]) or "").strip().lower()
        if not rel:
            raise DataError(f"{manifest}:{line}: empty path")
        if label not in class_index:
            if on_error == "skip":
                errors["unknown_class"] += 1
                continue
            raise DataError(
                f"{manifest}:{line}: label {label!r} of {rel} is not in data.classes "
                f"{tuple(class_index)}; fix the label, add the class to data.classes, or "
                "pass --data_on_error=skip to leave such rows out")
        split = (row.get(cols["split"]) or "").strip().lower() if "split" in cols else ""
        if split and split not in SPLITS:
            raise DataError(f"{manifest}:{line}: split {split!r} is not one of {SPLITS}")
        group = (row.get(cols["group"]) or "").strip() if "group" in cols else ""
        path = os.path.normpath(os.path.join(base, rel))
        if path in seen:
            if seen[path][0] != class_index[label]:
                raise DataError(f"{manifest}:{line}: {rel} is listed again with another label "
                                f"(first on line {seen[path][1]})")
            ignored["repeated_row"] += 1
            continue
        seen[path] = (class_index[label], line)
        if not group:
            group, matched = _group(rel, group_regex)
            unmatched += not matched
            ungrouped[class_index[label]] += not (group_regex and matched)
        meta = tuple((name.strip(), (row.get(name) or "").strip()) for name in extra)
        files.append(AudioFile(path, class_index[label], group, split or None, meta))
    splits = {f.split for f in files}
    if None in splits and len(splits) > 1:
        raise DataError(f"{manifest}: the split column must be filled on every row or on none")
    notes = []
    if ignored["repeated_row"]:
        notes.append(f"{manifest}: {ignored['repeated_row']} repeated row(s) left out")
    if group_regex and unmatched:
        notes.append(f"data.group_regex {group_regex!r} matched no file name for {unmatched} "
                     "manifest rows without a group; each of those is its own group")
    split_notes = [] if group_regex else _ungrouped_note(files, ungrouped, class_index)
    listing = Listing(tuple(files), dict(ignored), dict(errors), manifest, tuple(notes),
                      tuple(split_notes))
    return listing


MANIFEST_COLUMNS = ("path", "label", "split", "group")


def _extra_columns(fieldnames: Sequence[str]) -> list[str]:
    """A manifest's columns other than path, label, split and group (matched ignoring case and
    spaces), as the header spells them; unnamed and repeated ones left out."""
    out: dict[str, str] = {}  # stripped name -> the header's spelling
    for name in fieldnames:
        key = (name or "").strip()
        if key and key.lower() not in MANIFEST_COLUMNS and key not in out:
            out[key] = name
    return list(out.values())


def check_classes(files: Sequence[AudioFile], classes: Sequence[str], *, where: str,
                  after: str = "", every_class: bool = True) -> None:
    """Raise :class:`DataError` when a class of ``classes`` has no file in ``files`` (with
    ``every_class`` False: when there is no file at all)."""
    if not every_class:
        if not files:
            raise DataError(f"{where}: no {'usable ' if after else ''}audio files of the "
                            f"classes {tuple(classes)}{after}")
        return
    counts = collections.Counter(f.label for f in files)
    empty = [classes[i] for i in range(len(classes)) if counts[i] == 0]
    if empty:
        have = ", ".join(f"{classes[i]} {counts[i]}" for i in range(len(classes)))
        raise DataError(
            f"{where}: no {'usable ' if after else ''}audio files for class(es) {empty}"
            f"{after} (files per class: {have}); every class in data.classes needs files")


def _walk(folder: str) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(os.path.join(dirpath, n) for n in sorted(filenames) if not n.startswith("."))
    return out


def _group(rel_path: str, group_regex: str) -> tuple[str, bool]:
    """(group, matched): the regex's first group (or whole match) on the file name, else the
    relative path (each file its own group)."""
    if group_regex:
        name = os.path.basename(rel_path)
        m = re.search(group_regex, name)
        if m:
            g = m.group(1) if m.groups() else m.group(0)
            if g:
                return g, True
        return rel_path, False
    return rel_path, True


# --------------------------------------------------------------------------------------------
# Header scan and duplicate detection


def scan_headers(
    files: Sequence[AudioFile], on_error: str, workers: int = 4,
    log: Callable[[str], None] | None = None,
) -> tuple[list[tuple[AudioFile, audio.AudioInfo]], dict[str, int]]:
    """Probe every file's header (cheap) before training; drop or raise on bad ones.

    With ``on_error="error"`` one :class:`DataError` lists every bad file (up to ten) with its
    problem; with ``"skip"`` they are dropped, counted by kind, and (up to ten) logged.
    """
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
        raise DataError(_bad_files_message(bad))
    if bad and log is not None:
        for e in bad[:10]:
            log(f"warning: skipping {e}")
        if len(bad) > 10:
            log(f"warning: ... and {len(bad) - 10} more unusable file(s) skipped")
    return good, dict(errors)


def _bad_files_message(bad: Sequence[audio.AudioError]) -> str:
    shown = "\n  ".join(str(e) for e in bad[:10])
    more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
    return (f"{len(bad)} unusable audio file(s):\n  {shown}{more}\n"
            "Fix or remove them, or pass --data_on_error=skip to leave them out.")


def _probe_or_error(f: AudioFile) -> audio.AudioInfo | audio.AudioError:
    try:
        return _quietly(lambda: audio.probe(f.path), f.path)
    except audio.AudioError as e:
        return e


def _quietly(read: Callable[[], Any], path: str) -> Any:
    """``read()`` with the MP3 decoder's stderr lines about ``path`` captured and dropped: a
    file that is used is read again by the pipeline's reader, which warns about it once."""
    with audio.decoder_messages(path):
        return read()


def find_duplicates(
    scanned: Sequence[tuple[AudioFile, audio.AudioInfo]], workers: int = 4
) -> list[list[AudioFile]]:
    """Sets (two or more files each) of files whose decoded audio is identical.

    Cheap for distinct files: every file gets a fingerprint (length, rate, channels, and a hash of
    its first and last second, read by seeking); only files that share a fingerprint are decoded
    whole and hashed. A file that fails to decode here is left to the pipeline to report.
    """
    def key(item: tuple[AudioFile, audio.AudioInfo]) -> str | None:
        try:
            return _quietly(lambda: audio.fingerprint(item[1]), item[1].path)
        except audio.AudioError:
            return None

    def full(item: tuple[AudioFile, audio.AudioInfo]) -> str | None:
        try:
            return _quietly(lambda: audio.content_hash(item[1]), item[1].path)
        except audio.AudioError:
            return None

    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        keys = list(pool.map(key, scanned))
        by_key: dict[str, list[int]] = collections.defaultdict(list)
        for i, k in enumerate(keys):
            if k is not None:
                by_key[k].append(i)
        suspects = sorted(i for members in by_key.values() if len(members) > 1 for i in members)
        hashes = dict(zip(suspects, pool.map(full, [scanned[i] for i in suspects]), strict=True))
    by_hash: dict[str, list[AudioFile]] = collections.defaultdict(list)
    for i in suspects:
        if hashes[i] is not None:
            by_hash[hashes[i]].append(scanned[i][0])
    sets = [sorted(m, key=lambda f: f.path) for m in by_hash.values() if len(m) > 1]
    return sorted(sets, key=lambda s: s[0].path)
