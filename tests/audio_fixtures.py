"""Small fake audio trees for the data tests: every layout, mixed formats, rates and channels,
and every kind of bad input. Everything is written under a folder the test gives (tmp_path).

The signals are not meant to be learnable speech or music: noise bursts for "speech", chords
of tones for "music", short (about a second) so that trees are quick to write and read.
"""

from __future__ import annotations

import csv
import os
import pathlib

import numpy as np
import soundfile as sf

# (extension, libsndfile subtype): every format the loader must read.
FORMATS: tuple[tuple[str, str], ...] = (
    ("wav", "PCM_16"),
    ("wav", "PCM_24"),
    ("wav", "PCM_32"),
    ("wav", "FLOAT"),
    ("flac", "PCM_16"),
    ("flac", "PCM_24"),
    ("ogg", "VORBIS"),
)
RATES: tuple[int, ...] = (8000, 16000, 22050, 44100, 48000)
CHANNELS: tuple[int, ...] = (1, 2, 3)

# Every bad input of the data contract, by the name tests use.
BAD_KINDS: tuple[str, ...] = (
    "corrupt", "corrupt_body", "zero_length", "no_frames", "silent", "nan", "inf", "unsupported",
)


def signal(kind: str, seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """(frames, channels) float32 in [-0.5, 0.5]: noise bursts ("speech") or tones ("music")."""
    rng = np.random.default_rng(seed)
    n = max(1, int(round(seconds * rate)))
    t = np.arange(n) / rate
    if kind == "speech":
        env = (np.sin(2 * np.pi * rng.uniform(3, 6) * t) > 0).astype(np.float32)
        x = rng.standard_normal(n).astype(np.float32) * 0.2 * env
    else:
        f0 = rng.uniform(150, 600)
        x = sum(np.sin(2 * np.pi * f0 * k * t) / (2 * k) for k in (1, 1.5, 2)).astype(np.float32)
        x *= 0.3
    x = np.clip(x, -0.5, 0.5).astype(np.float32)
    out = np.stack([x * (1.0 - 0.2 * c) for c in range(channels)], axis=1)
    return out.astype(np.float32)


def write(path: str | os.PathLike, x: np.ndarray, rate: int, subtype: str | None = None) -> str:
    """Write ``x`` ((frames,) or (frames, channels)) at ``rate``; the format follows the
    extension, ``subtype`` the sample encoding (libsndfile's default for the format if None)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    sf.write(path, x, rate, subtype=subtype)
    return path


def _variant(i: int) -> tuple[str, str, int, int]:
    ext, subtype = FORMATS[i % len(FORMATS)]
    rate = RATES[(i // 2) % len(RATES)]
    channels = CHANNELS[(i // 3) % len(CHANNELS)]
    return ext, subtype, rate, channels


def write_class_files(folder: str | os.PathLike, kind: str, n: int, *, seconds: float = 1.0,
                      nested: bool = True, seed: int = 0, prefix: str = "") -> list[str]:
    """``n`` files of one class in ``folder`` (some in sub-folders when ``nested``), cycling over
    formats, rates and channel counts."""
    paths = []
    for i in range(n):
        ext, subtype, rate, channels = _variant(i + seed)
        sub = os.path.join("sub", f"deeper{i % 2}") if nested and i % 3 == 2 else ""
        name = f"{prefix}{kind}_{i:03d}.{ext}"
        x = signal(kind, seconds * (0.75 + 0.25 * (i % 3)), rate, channels, seed=seed * 1000 + i)
        paths.append(write(os.path.join(folder, sub, name), x, rate, subtype))
    return paths


def write_junk(folder: str | os.PathLike) -> list[str]:
    """Non-audio files a real tree has next to the audio: a README, a cover image, a hidden file."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, data in (("README.txt", b"about this corpus\n"), ("cover.jpg", b"\xff\xd8\xff\xe0"),
                       (".DS_Store", b"\0\0\0\1")):
        (folder / name).write_bytes(data)
        out.append(str(folder / name))
    return out


def make_folder_tree(root: str | os.PathLike, per_class: int = 6, *,
                     names: tuple[str, str] = ("Speech", "MUSIC"), seconds: float = 1.0) -> str:
    """folder:ROOT with class folders in mixed case, nested files and junk."""
    root = os.fspath(root)
    for k, (name, kind) in enumerate(zip(names, ("speech", "music"), strict=True)):
        write_class_files(os.path.join(root, name), kind, per_class, seconds=seconds, seed=k * 3)
    write_junk(root)
    write_junk(os.path.join(root, names[0]))
    return root


def make_gtzan_tree(root: str | os.PathLike, per_class: int = 4, *, nested: bool = False,
                    seconds: float = 1.0) -> str:
    """gtzan:ROOT: music_wav/ and speech_wav/ of 22050 Hz mono 16-bit WAV (the archive's
    music_speech/ folder in between when ``nested``)."""
    root = os.fspath(root)
    base = os.path.join(root, "music_speech") if nested else root
    for kind in ("music", "speech"):
        for i in range(per_class):
            x = signal(kind, seconds, 22050, 1, seed=(500 if kind == "speech" else 0) + i)
            write(os.path.join(base, f"{kind}_wav", f"{kind}{i}.wav"), x, 22050, "PCM_16")
    write_junk(base)
    return root


def make_musan_tree(root: str | os.PathLike, per_class: int = 4, *,
                    seconds: float = 1.0) -> str:
    """musan:ROOT: music/, speech/ and noise/ with corpus sub-folders and ANNOTATIONS files."""
    root = os.fspath(root)
    for k, (kind, sub) in enumerate((("music", "fma"), ("speech", "librivox"),
                                     ("noise", "free-sound"))):
        folder = os.path.join(root, kind, sub)
        write_class_files(folder, "speech" if kind != "music" else "music", per_class,
                          seconds=seconds, nested=False, seed=10 + k)
        pathlib.Path(folder, "ANNOTATIONS").write_text("file annotations\n")
    pathlib.Path(root, "README").write_text("MUSAN\n")
    return root


def make_manifest_tree(root: str | os.PathLike, per_class: int = 6, *, groups: int = 0,
                       split: bool = False, seconds: float = 1.0) -> str:
    """ROOT/manifest.csv (path,label,group,extra columns; relative paths) over ROOT/audio/.

    ``groups`` > 0 puts the files of a class into that many groups; ``split`` adds a split
    column (the first file of each class is test, the second val, the rest train).
    """
    root = os.fspath(root)
    rows = []
    for k, kind in enumerate(("speech", "music")):
        paths = write_class_files(os.path.join(root, "audio", kind), kind, per_class,
                                  seconds=seconds, nested=False, seed=20 + k)
        for i, p in enumerate(paths):
            row = {"path": os.path.relpath(p, root), "label": kind.upper() if i % 2 else kind,
                   "source": "fixture", "duration_note": f"{i}"}
            if groups:
                row["group"] = f"{kind}_g{i % groups}"
            if split:
                row["split"] = "test" if i == 0 else ("val" if i == 1 else "train")
            rows.append(row)
    write_manifest(os.path.join(root, "manifest.csv"), rows)
    return os.path.join(root, "manifest.csv")


def write_manifest(path: str | os.PathLike, rows: list[dict]) -> str:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return os.fspath(path)


def write_bad(folder: str | os.PathLike, kind: str, name: str | None = None) -> str:
    """One bad file of ``kind`` (see :data:`BAD_KINDS`) in ``folder``; returns its path.

    corrupt        random bytes with a .wav name (the header scan cannot read it)
    corrupt_body   a FLAC whose frames are damaged after a valid header (fails when decoded)
    zero_length    a 0-byte .wav
    no_frames      a valid WAV header with no samples
    silent         a WAV of exact zeros
    nan / inf      a float WAV with NaN / Inf samples (in the middle)
    unsupported    an .m4a file (a container libsndfile cannot read)
    """
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    rate = 16000
    ext = {"corrupt_body": "flac", "unsupported": "m4a"}.get(kind, "wav")
    path = os.path.join(folder, name or f"bad_{kind}.{ext}")
    if kind == "corrupt":
        pathlib.Path(path).write_bytes(np.random.default_rng(1).bytes(4000))
    elif kind == "corrupt_body":
        x = signal("music", 3.0, rate, 1, seed=3)
        write(path, x, rate, "PCM_16")
        data = bytearray(pathlib.Path(path).read_bytes())
        for i in range(len(data) // 3, len(data) // 3 + 2000):
            data[i] = (data[i] * 7 + 13) % 256
        pathlib.Path(path).write_bytes(bytes(data))
    elif kind == "zero_length":
        pathlib.Path(path).write_bytes(b"")
    elif kind == "no_frames":
        write(path, np.zeros((0, 1), np.float32), rate, "PCM_16")
    elif kind == "silent":
        write(path, np.zeros((rate, 1), np.float32), rate, "PCM_16")
    elif kind in ("nan", "inf"):
        x = signal("speech", 1.0, rate, 1, seed=4)
        x[rate // 2 : rate // 2 + 10] = np.nan if kind == "nan" else np.inf
        write(path, x, rate, "FLOAT")
    elif kind == "unsupported":
        pathlib.Path(path).write_bytes(b"\0\0\0\x20ftypM4A \0\0\0\0M4A mp42isom" + b"\0" * 64)
    else:
        raise ValueError(f"unknown bad kind {kind!r}; known: {BAD_KINDS}")
    return path


# MUSAN's ANNOTATIONS, as the corpus ships them (one file per sub-corpus folder; Kaldi's
# egs/sre16/v1/local/make_musan.py and lhotse's recipes/musan.py read them): a music line is
# ``stem genres vocals(Y/N) artist`` with sometimes more fields after the artist (a composer);
# a speech line is ``stem gender language`` (no speaker); a noise line is the stem alone.
# speech/us-gov/ has no ANNOTATIONS file in the corpus.
ANNOTATED_MUSAN: dict[str, tuple[tuple[str, ...], str | None]] = {
    # folder: (file stems, ANNOTATIONS text or None for no file)
    "music/fma": (
        ("music-fma-0000", "music-fma-0001", "music-fma-0002", "music-fma-0003", "music-fma-0004"),
        "music-fma-0000 classical N Bach_Players Johann_Sebastian_Bach\n"
        "music-fma-0001 pop,electronica Y Quiet_Music_for_Tiny_Robots\n"
        "\n"
        "music-fma-0002   Pop\tY   Quiet_Music_for_Tiny_Robots  \n"
        "music-fma-0004 rock N\n"  # too short: no artist
        "music-fma-0099 jazz N Nobody_Here\n",  # a stem without a file
    ),
    "music/jamendo": (("music-jamendo-0000",),
                      "music-jamendo-0000 jazz N Quiet_Music_for_Tiny_Robots\n"),
    "music/rfm": (("music-rfm-0000",), None),
    "speech/librivox": (("speech-librivox-0000", "speech-librivox-0001"),
                        "speech-librivox-0000 m english\nspeech-librivox-0001 f french\n"),
    "speech/us-gov": (("speech-us-gov-0000",), None),
    "noise/free-sound": (("noise-free-sound-0000",), "noise-free-sound-0000\n"),
}


def make_annotated_musan_tree(root: str | os.PathLike, *, seconds: float = 0.3) -> str:
    """musan:ROOT laid out like the real corpus (see :data:`ANNOTATED_MUSAN`): 16 kHz mono WAV
    files named like MUSAN's, with ANNOTATIONS files in the real format."""
    root = os.fspath(root)
    for i, (folder, (stems, text)) in enumerate(ANNOTATED_MUSAN.items()):
        kind = "music" if folder.startswith("music") else "speech"
        for k, stem in enumerate(stems):
            write(os.path.join(root, folder, f"{stem}.wav"),
                  signal(kind, seconds, 16000, seed=100 * i + k), 16000, "PCM_16")
        if text is not None:
            pathlib.Path(root, folder, "ANNOTATIONS").write_text(text, encoding="utf-8")
    pathlib.Path(root, "README").write_text("MUSAN\n")
    return root
