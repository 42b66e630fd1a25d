"""Sources: folder, gtzan, musan and manifest layouts; groups; header scan; duplicates."""

from __future__ import annotations

import os
import shutil

import pytest
from audio_fixtures import (
    make_annotated_musan_tree,
    make_folder_tree,
    make_gtzan_tree,
    make_manifest_tree,
    make_musan_tree,
    signal,
    write,
    write_bad,
    write_class_files,
    write_manifest,
)

from speechmusic_jax.data import sources
from speechmusic_jax.data.sources import DataError, list_files, parse_spec

CLASSES = ("speech", "music")


def _labels(listing) -> dict[str, int]:
    return {os.path.basename(f.path): f.label for f in listing.files}


def test_folder_classes_match_case_insensitively_and_are_searched_recursively(tmp_path):
    root = make_folder_tree(tmp_path / "corpus", per_class=6, names=("Speech", "MUSIC"))
    listing = list_files(f"folder:{root}", CLASSES)
    labels = _labels(listing)
    assert len(labels) == 12
    assert all(v == 0 for k, v in labels.items() if k.startswith("speech"))
    assert all(v == 1 for k, v in labels.items() if k.startswith("music"))
    assert any(os.sep + "deeper" in f.path for f in listing.files)  # nested files found
    assert {os.path.splitext(f.path)[1] for f in listing.files} == {".wav", ".flac", ".ogg"}
    # README.txt and cover.jpg at the root and in Speech/ are not audio: left out and counted;
    # hidden files (.DS_Store) are not even looked at.
    assert listing.ignored == {"non_audio": 2}
    assert any("non-audio" in n for n in listing.notes)
    assert listing.errors == {}


def test_folder_merges_folders_that_differ_only_in_case(tmp_path):
    write_class_files(tmp_path / "speech", "speech", 2, nested=False)
    write_class_files(tmp_path / "Speech", "speech", 2, nested=False, prefix="b")
    write_class_files(tmp_path / "music", "music", 2, nested=False)
    listing = list_files(f"folder:{tmp_path}", CLASSES)
    assert sorted(f.label for f in listing.files) == [0, 0, 0, 0, 1, 1]


def test_folder_with_an_unknown_class_folder(tmp_path):
    root = make_folder_tree(tmp_path, per_class=3)
    write_class_files(tmp_path / "laughter", "speech", 2, nested=False)
    with pytest.raises(DataError) as e:
        list_files(f"folder:{root}", CLASSES)
    assert "class folder(s) ['laughter'] not in data.classes ('speech', 'music')" in str(e.value)
    assert "--data_on_error=skip" in str(e.value)
    listing = list_files(f"folder:{root}", CLASSES, on_error="skip")
    assert listing.errors == {"unknown_class": 2} and len(listing.files) == 6
    assert any("laughter" in n for n in listing.notes)


def test_folder_with_audio_outside_any_class_folder(tmp_path):
    root = make_folder_tree(tmp_path, per_class=3)
    write(tmp_path / "stray.wav", signal("speech", 0.2, 8000), 8000)
    with pytest.raises(DataError, match=r"1 audio file\(s\) outside any class folder"):
        list_files(f"folder:{root}", CLASSES)
    listing = list_files(f"folder:{root}", CLASSES, on_error="skip")
    assert listing.errors == {"unknown_class": 1}


@pytest.mark.parametrize("on_error", ["error", "skip"])
def test_an_empty_class_is_an_error_either_way(tmp_path, on_error):
    write_class_files(tmp_path / "speech", "speech", 3, nested=False)
    (tmp_path / "music").mkdir()
    (tmp_path / "music" / "notes.txt").write_text("no audio here")
    with pytest.raises(DataError) as e:
        list_files(f"folder:{tmp_path}", CLASSES, on_error=on_error)
    assert f"{tmp_path}: no audio files for class(es) ['music']" in str(e.value)
    assert "files per class: speech 3, music 0" in str(e.value)


def test_a_missing_class_folder_is_an_empty_class(tmp_path):
    write_class_files(tmp_path / "speech", "speech", 3, nested=False)
    with pytest.raises(DataError, match=r"no audio files for class\(es\) \['music'\]"):
        list_files(f"folder:{tmp_path}", CLASSES)


@pytest.mark.parametrize("nested", [False, True])
def test_gtzan_layout(tmp_path, nested):
    root = make_gtzan_tree(tmp_path / "gtzan", per_class=3, nested=nested)
    listing = list_files(f"gtzan:{root}", CLASSES)
    labels = _labels(listing)
    assert labels == {**{f"music{i}.wav": 1 for i in range(3)},
                      **{f"speech{i}.wav": 0 for i in range(3)}}
    assert listing.ignored == {}  # the junk is beside the class folders, not in them


def test_gtzan_rejects_another_layout(tmp_path):
    root = make_folder_tree(tmp_path, per_class=2)
    with pytest.raises(DataError, match="not a GTZAN music/speech tree; expected subfolders "
                                        "music_wav/ and speech_wav/"):
        list_files(f"gtzan:{root}", CLASSES)


def test_musan_leaves_noise_out_and_counts_it(tmp_path):
    root = make_musan_tree(tmp_path / "musan", per_class=3)
    listing = list_files(f"musan:{root}", CLASSES)
    assert sorted(f.label for f in listing.files) == [0, 0, 0, 1, 1, 1]
    assert listing.ignored["noise/ not in data.classes"] == 3
    assert listing.ignored["non_audio"] == 3  # the ANNOTATIONS files
    with_noise = list_files(f"musan:{root}", ("speech", "music", "noise"))
    assert sorted(f.label for f in with_noise.files) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert "noise/ not in data.classes" not in with_noise.ignored


def _ungrouped_notes(listing) -> list[str]:
    """The notes that warn of files that are each their own group for want of metadata."""
    assert not [n for n in listing.notes if "split across" in n]  # said only to a split
    return [n for n in listing.split_notes
            if "own group" in n and "split across train and test" in n]


def _groups(listing) -> dict[str, str]:
    return {os.path.splitext(os.path.basename(f.path))[0]: f.group for f in listing.files}


def test_musan_groups_music_by_artist_from_the_annotations(tmp_path):
    root = make_annotated_musan_tree(tmp_path / "musan")
    listing = list_files(f"musan:{root}", CLASSES)
    groups = _groups(listing)
    robots = "musan:music:artist:Quiet_Music_for_Tiny_Robots"
    # One artist's tracks share a group, across sub-corpora (fma and jamendo) and whatever the
    # spacing of the line; the fields after the artist (a composer) do not matter.
    assert groups["music-fma-0001"] == groups["music-fma-0002"] == robots
    assert groups["music-jamendo-0000"] == robots
    assert groups["music-fma-0000"] == "musan:music:artist:Bach_Players"
    # No usable line (short line, stem not listed, no ANNOTATIONS file): each its own group.
    own = {"music-fma-0003": "music/fma/music-fma-0003.wav",
           "music-fma-0004": "music/fma/music-fma-0004.wav",
           "music-rfm-0000": "music/rfm/music-rfm-0000.wav",
           # MUSAN's speech ANNOTATIONS give gender and language, no speaker.
           "speech-librivox-0000": "speech/librivox/speech-librivox-0000.wav",
           "speech-librivox-0001": "speech/librivox/speech-librivox-0001.wav",
           "speech-us-gov-0000": "speech/us-gov/speech-us-gov-0000.wav"}
    for stem, rel in own.items():
        assert groups[stem] == rel.replace("/", os.sep), stem
    assert len(groups) == 10  # noise/ left out
    [note] = _ungrouped_notes(listing)
    assert "\n" not in note
    assert "every speech file" in note and "3 of 7 music files" in note
    assert "data.group_regex" in note and "group column" in note
    with_noise = list_files(f"musan:{root}", ("speech", "music", "noise"))
    assert _groups(with_noise)["noise-free-sound-0000"] == os.path.join(
        "noise", "free-sound", "noise-free-sound-0000.wav")
    assert "every noise file" in _ungrouped_notes(with_noise)[0]


def test_musan_group_regex_wins_over_the_annotations(tmp_path):
    root = make_annotated_musan_tree(tmp_path / "musan")
    listing = list_files(f"musan:{root}", CLASSES, group_regex=r"^(music-fma)-")
    groups = _groups(listing)
    assert {groups[f"music-fma-000{i}"] for i in range(5)} == {"music-fma"}
    # Where the regex matches nothing, the annotations still group the file.
    assert groups["music-jamendo-0000"] == "musan:music:artist:Quiet_Music_for_Tiny_Robots"
    assert groups["music-rfm-0000"] == os.path.join("music", "rfm", "music-rfm-0000.wav")
    assert any("matched no file name for 4 of 10 files" in n for n in listing.notes)
    assert _ungrouped_notes(listing) == []  # the user chose the grouping


@pytest.mark.parametrize("annotations", ["placeholder", "missing", "not_utf8"])
def test_musan_without_usable_annotations_each_file_is_its_own_group(tmp_path, annotations):
    root = make_musan_tree(tmp_path / "musan", per_class=3)
    for folder in ("music/fma", "speech/librivox", "noise/free-sound"):
        path = os.path.join(root, folder, "ANNOTATIONS")
        if annotations == "missing":
            os.remove(path)
        elif annotations == "not_utf8":
            with open(path, "wb") as f:
                f.write(b"\xff\xfe\x00music_000 \x80\x81 N \xc3\n")
    listing = list_files(f"musan:{root}", CLASSES)
    groups = [f.group for f in listing.files]
    assert groups == [os.path.relpath(f.path, root) for f in listing.files]
    assert len(set(groups)) == 6
    [note] = _ungrouped_notes(listing)
    assert "any file" in note and "recordings of one speaker or piece" in note


@pytest.mark.parametrize("nested", [False, True])
def test_gtzan_files_are_each_their_own_group_and_a_note_says_so(tmp_path, nested):
    root = make_gtzan_tree(tmp_path / "gtzan", per_class=3, nested=nested)
    listing = list_files(f"gtzan:{root}", CLASSES)
    assert len({f.group for f in listing.files}) == 6
    [note] = _ungrouped_notes(listing)
    assert "\n" not in note and "any file" in note
    assert "data.group_regex" in note and "group column" in note
    grouped = list_files(f"gtzan:{root}", CLASSES, group_regex=r"^([a-z]+)")
    assert {f.group for f in grouped.files} == {"music", "speech"}
    assert _ungrouped_notes(grouped) == []


def test_folder_and_manifest_without_groups_say_so(tmp_path):
    root = make_folder_tree(tmp_path / "folder", per_class=3)
    assert len(_ungrouped_notes(list_files(f"folder:{root}", CLASSES))) == 1
    regex = list_files(f"folder:{root}", CLASSES, group_regex=r"^([a-z]+)_")
    assert _ungrouped_notes(regex) == []
    grouped = make_manifest_tree(tmp_path / "grouped", per_class=4, groups=2)
    assert _ungrouped_notes(list_files(f"manifest:{grouped}", CLASSES)) == []
    plain = make_manifest_tree(tmp_path / "plain", per_class=4)
    [note] = _ungrouped_notes(list_files(f"manifest:{plain}", CLASSES))
    assert "any file" in note
    # A group column filled for some rows only: the note counts the others.
    rows = [{"path": f"audio/speech/speech_00{i}.wav", "label": "speech", "group": "s"}
            for i in range(2)]
    rows += [{"path": "audio/music/music_000.wav", "label": "music", "group": ""},
             {"path": "audio/music/music_001.flac", "label": "music", "group": "m"}]
    partial = write_manifest(tmp_path / "plain" / "partial.csv", rows)
    [note] = _ungrouped_notes(list_files(f"manifest:{partial}", CLASSES))
    assert "1 of 2 music files" in note and "speech" not in note.split(":")[0]


def test_manifest_paths_labels_groups_and_extra_columns(tmp_path):
    manifest = make_manifest_tree(tmp_path, per_class=4, groups=2)
    listing = list_files(f"manifest:{manifest}", CLASSES)
    assert len(listing.files) == 8
    for f in listing.files:
        assert os.path.isabs(f.path) and os.path.exists(f.path)
        kind = "speech" if "speech_" in os.path.basename(f.path) else "music"
        assert f.label == CLASSES.index(kind)  # labels are matched case-insensitively
        assert f.group.startswith(f"{kind}_g") and f.split is None
        # The other columns travel with the file, for evaluate's breakdown ...
        number = str(int(os.path.basename(f.path).split("_")[1].split(".")[0]))
        assert f.meta == (("source", "fixture"), ("duration_note", number))
    # ... and change nothing about which files are the same (splits, duplicates, overlap).
    f = listing.files[0]
    bare = sources.AudioFile(f.path, f.label, f.group)
    assert bare == f and hash(bare) == hash(f) and {bare, f} == {f}


def test_manifest_split_column(tmp_path):
    manifest = make_manifest_tree(tmp_path, per_class=4, split=True)
    listing = list_files(f"manifest:{manifest}", CLASSES)
    assert sorted(f.split for f in listing.files) == ["test"] * 2 + ["train"] * 4 + ["val"] * 2


def test_manifest_problems(tmp_path):
    make_manifest_tree(tmp_path, per_class=2)
    good = {"path": "audio/speech/speech_000.wav", "label": "speech"}
    cases = {
        "missing column(s) ['label']": [{"path": "a.wav", "kind": "speech"}],
        "label 'laughter' of audio/x.wav is not in data.classes ('speech', 'music')":
            [good, {"path": "audio/x.wav", "label": "laughter"}],
        "is listed again with another label": [good, {**good, "label": "music"}],
        "the split column must be filled on every row or on none":
            [{**good, "split": "train"}, {"path": "audio/music/music_000.wav", "label": "music",
                                          "split": ""}],
        "split 'dev' is not one of": [{**good, "split": "dev"}],
        "empty path": [{"path": "", "label": "music"}],
    }
    for words, rows in cases.items():
        path = write_manifest(tmp_path / "bad.csv", rows)
        with pytest.raises(DataError) as e:
            list_files(f"manifest:{path}", CLASSES)
        assert words in str(e.value), (words, str(e.value))
    with pytest.raises(DataError, match="does not exist"):
        list_files(f"manifest:{tmp_path / 'nope.csv'}", CLASSES)


def test_manifest_unknown_label_under_skip_and_repeated_rows(tmp_path):
    make_manifest_tree(tmp_path, per_class=2)
    rows = [{"path": "audio/speech/speech_000.wav", "label": "speech"},
            {"path": "audio/speech/speech_000.wav", "label": "Speech"},
            {"path": "audio/music/music_000.wav", "label": "music"},
            {"path": "audio/music/music_001.flac", "label": "applause"}]
    path = write_manifest(tmp_path / "m.csv", rows)
    listing = list_files(f"manifest:{path}", CLASSES, on_error="skip")
    assert len(listing.files) == 2
    assert listing.errors == {"unknown_class": 1}
    assert listing.ignored == {"repeated_row": 1}


def test_group_regex_groups_files_by_name(tmp_path):
    for kind in ("speech", "music"):
        for track in ("a", "b"):
            for part in range(2):
                write(tmp_path / kind / f"{kind}-{track}_part{part}.wav",
                      signal(kind, 0.2, 8000, seed=part), 8000)
    write(tmp_path / "music" / "loose.wav", signal("music", 0.2, 8000, seed=9), 8000)
    listing = list_files(f"folder:{tmp_path}", CLASSES, group_regex=r"^(\w+-\w+)_part")
    groups = {os.path.basename(f.path): f.group for f in listing.files}
    assert groups["speech-a_part0.wav"] == groups["speech-a_part1.wav"] == "speech-a"
    assert groups["music-b_part1.wav"] == "music-b"
    assert groups["loose.wav"] == os.path.join("music", "loose.wav")  # no match: its own group
    assert any("matched no file name for 1 of 9" in n for n in listing.notes)


def test_parse_spec():
    assert parse_spec("synthetic") == ("synthetic", "")
    assert parse_spec("Folder:/data/x") == ("folder", "/data/x")
    assert parse_spec("tfds:gtzan_music_speech") == ("tfds", "gtzan_music_speech")
    assert parse_spec("tfds:gtzan_music_speech:1.0.0")[1] == "gtzan_music_speech:1.0.0"
    for bad, words in [("youtube:x", "unknown source 'youtube'"), ("folder:", "needs a path"),
                       ("synthetic:x", "takes no argument"), ("tfds:", "needs a dataset name")]:
        with pytest.raises(ValueError, match=words):
            parse_spec(bad)


def test_a_path_that_is_not_a_folder(tmp_path):
    with pytest.raises(DataError, match="is not a folder"):
        list_files(f"folder:{tmp_path / 'missing'}", CLASSES)


def test_header_scan_lists_every_bad_file_or_counts_them(tmp_path):
    root = make_folder_tree(tmp_path, per_class=3)
    bad = {kind: write_bad(tmp_path / "Speech", kind)
           for kind in ("corrupt", "zero_length", "no_frames", "unsupported")}
    listing = list_files(f"folder:{root}", CLASSES)
    assert len(listing.files) == 10  # the .m4a is audio we cannot read, not junk
    with pytest.raises(DataError) as e:
        sources.scan_headers(listing.files, "error")
    message = str(e.value)
    assert message.startswith("4 unusable audio file(s):")
    assert f"{bad['corrupt']}: not a readable audio file (format not recognised" in message
    assert f"{bad['zero_length']}: file is empty (0 bytes)" in message
    assert f"{bad['no_frames']}: audio has no samples (0 frames)" in message
    assert f"{bad['unsupported']}: .m4a audio is not supported" in message
    assert message.endswith("Fix or remove them, or pass --data_on_error=skip to leave them out.")
    logged: list[str] = []
    good, errors = sources.scan_headers(listing.files, "skip", log=logged.append)
    assert len(good) == 6
    assert errors == {"unreadable": 1, "empty": 2, "unsupported_format": 1}
    assert len(logged) == 4 and all(m.startswith("warning: skipping ") for m in logged)


def test_find_duplicates_across_containers_and_folders(tmp_path):
    root = make_folder_tree(tmp_path, per_class=4)
    files = sorted(list_files(f"folder:{root}", CLASSES).files, key=lambda f: f.path)
    src = next(f.path for f in files if f.path.endswith("speech_000.wav"))
    copy = tmp_path / "MUSIC" / "copied_speech.wav"
    shutil.copy(src, copy)
    import soundfile as sf

    x, rate = sf.read(src, dtype="int16")
    write(tmp_path / "Speech" / "reencoded.flac", x, rate, "PCM_16")
    listing = list_files(f"folder:{root}", CLASSES)
    scanned, _ = sources.scan_headers(listing.files, "error")
    dups = sources.find_duplicates(scanned)
    assert len(dups) == 1
    assert {os.path.basename(f.path) for f in dups[0]} == {"speech_000.wav", "copied_speech.wav",
                                                           "reencoded.flac"}
