import io
import os

from flax import nnx

from speechmusic_jax.config import base_config
from speechmusic_jax.models.conv1d import build_model, count_params, layer_order
from speechmusic_jax.models.presets import resolve_spec
from speechmusic_jax.training import reporting


def row(epoch, train_loss, val_loss, val_window_loss=None):
    return {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
            "val_window_loss": val_loss if val_window_loss is None else val_window_loss,
            "train_accuracy": 0.5, "val_accuracy": 0.5, "val_f1": 0.5,
            "val_window_accuracy": 0.5, "learning_rate": 1e-3,
            "epoch_time_s": 1.0, "examples_per_s": 10.0}


def test_overfitting_watch_compares_training_with_validation_per_window():
    """Training loss is per crop: the watch compares it with the per-window validation loss, not
    the per-clip one (a clip's averaged logits have a loss of their own scale)."""
    notes = []
    watch = reporting.OverfitWatch(notes.append, epochs=3)
    for epoch, (train, clip, window) in enumerate([(0.9, 0.5, 0.6), (0.8, 0.55, 0.58),
                                                   (0.7, 0.6, 0.57), (0.6, 0.65, 0.56)], 1):
        watch.update(row(epoch, train, clip, window))
    assert notes == []  # per clip it rose, per window it fell: no overfitting
    watch = reporting.OverfitWatch(notes.append, epochs=3)
    for epoch, (train, clip, window) in enumerate([(0.9, 0.6, 0.5), (0.8, 0.58, 0.55),
                                                   (0.7, 0.57, 0.6), (0.6, 0.56, 0.65)], 1):
        watch.update(row(epoch, train, clip, window))
    assert len(notes) == 1 and "0.5000 -> 0.6500" in notes[0]


def test_every_loss_the_overfitting_note_quotes_is_in_the_epoch_table(tmp_path):
    """The note watches the per-window loss; the table shows it beside the per-clip one, and the
    note quotes both, each a figure of the table's rows."""
    lines = []
    records = reporting.EpochRecords(str(tmp_path / "metrics.jsonl"), str(tmp_path / "tb"),
                                     lines.append)
    for epoch, (train, clip, window) in enumerate([(0.9, 0.0576, 0.0736), (0.8, 0.08, 0.1),
                                                   (0.7, 0.12, 0.15), (0.6, 0.1605, 0.1840)], 1):
        records.write(row(epoch, train, clip, window), improved=False)
    records.close()
    notes = [ln for ln in lines if ln.startswith("note:")]
    assert len(notes) == 1
    assert "0.0736 -> 0.1840" in notes[0] and "val_loss: 0.0576 -> 0.1605" in notes[0]
    head = lines[1].split()
    table = [dict(zip(head, ln.split(), strict=False)) for ln in lines[2:]
             if ln.split() and ln.split()[0].isdigit()]
    assert [r["val_win_loss"] for r in table] == ["0.0736", "0.1000", "0.1500", "0.1840"]
    assert [r["val_loss"] for r in table] == ["0.0576", "0.0800", "0.1200", "0.1605"]


def test_the_epoch_table_marks_a_missing_window_loss():
    lines = []
    old = row(1, 0.5, 0.4)
    del old["val_window_loss"]  # a row of an older run
    reporting.EpochPrinter(lines.append).row(old, improved=True)
    assert lines[2].split()[3:5] == ["0.4000", "-"] and lines[2].endswith("*")


def test_overfitting_note_when_val_rises_while_train_falls():
    notes = []
    watch = reporting.OverfitWatch(notes.append, epochs=3)
    for e, (tr, va) in enumerate([(1.0, 0.9), (0.8, 0.7), (0.6, 0.75), (0.5, 0.8), (0.4, 0.85)],
                                 start=1):
        watch.update(row(e, tr, va))
    assert len(notes) == 1 and "overfitting" in notes[0]


def test_overfitting_is_noted_once_when_it_starts_and_once_when_it_ends():
    notes = []
    watch = reporting.OverfitWatch(notes.append, epochs=3)
    losses = [(1.0, 0.9), (0.8, 0.7), (0.6, 0.75), (0.5, 0.8), (0.4, 0.85)]  # starts at 5
    losses += [(0.35 - 0.01 * k, 0.86 + 0.01 * k) for k in range(40)]  # goes on for 40 epochs
    losses += [(0.3, 0.69), (0.3, 0.72), (0.3, 0.73), (0.3, 0.74)]  # ends, does not restart
    for e, (tr, va) in enumerate(losses, start=1):
        watch.update(row(e, tr, va))
    assert len(notes) == 2, notes
    assert "overfitting" in notes[0] and "has ended" in notes[1] and "0.6900" in notes[1]


def test_no_overfitting_note_when_both_fall():
    notes = []
    watch = reporting.OverfitWatch(notes.append, epochs=3)
    for e in range(1, 8):
        watch.update(row(e, 1.0 / e, 1.1 / e))
    assert notes == []


def test_progress_bar_is_silent_off_a_terminal():
    quiet, loud = io.StringIO(), io.StringIO()
    for stream, enabled in ((quiet, None), (loud, True)):
        bar = reporting.ProgressBar(4, epoch=1, enabled=enabled, stream=stream)
        for _ in range(4):
            bar.step(0.5)
        bar.close()
    assert quiet.getvalue() == ""  # StringIO is not a terminal
    assert "4/4" in loud.getvalue()


def test_layer_table_lists_the_layers_in_network_order():
    c = base_config()
    c.model.preset = "m34_res"  # 4 stages of 3-6 residual blocks (more than 10 in all)
    c.model.head_hidden = (32,)
    model = nnx.eval_shape(lambda: build_model(resolve_spec(c.model, 2), 0))
    params = nnx.state(model, nnx.Param)
    table = reporting.layer_table(params, layer_order(model)).splitlines()
    names = [ln.split()[0] for ln in table[1:-1]]
    assert names[:2] == ["stem", "stem_norm.layer"] and names[-2:] == ["hidden.0", "head"]
    blocks = [tuple(int(k) for k in n.split(".")[1:3]) for n in names if n.startswith("stages.")]
    assert blocks == sorted(blocks) and blocks[-1][0] == 3 and (0, 2) in blocks  # numeric order
    assert names.index("stages.1.0.conv1") < names.index("stages.1.0.norm1.layer") \
        < names.index("stages.1.0.conv2") < names.index("stages.1.0.proj")
    assert sorted(names) == sorted(layer_order(model))  # every layer named, none twice
    unordered = reporting.layer_table(params).splitlines()  # params' own (sorted) order
    assert sorted(unordered) == sorted(table) and unordered[1].startswith("head")


def test_the_built_model_knows_its_layer_order():
    from speechmusic_jax.training import builder

    c = base_config()
    c.model.preset = "tiny"
    built = builder.build(c)
    assert built.layers[0] == "stem" and built.layers[-1] == "head"
    names = [ln.split()[0] for ln in
             reporting.layer_table(built.state.params, built.layers).splitlines()[1:-1]]
    assert names == list(built.layers)


def test_layer_table_totals_the_parameters():
    c = base_config()
    c.model.preset = "tiny"
    params = nnx.state(build_model(resolve_spec(c.model, 2), 0), nnx.Param)
    table = reporting.layer_table(params)
    assert f"{count_params(params):,}" in table.splitlines()[-1]
    assert "stem" in table and "head" in table


def read_events(path):
    """Parse a TFRecord event file: (step, tag, value) of every scalar."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    out = []
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack("Q", data[pos:pos + 8])
        event = Event.FromString(data[pos + 12:pos + 12 + length])
        pos += 12 + length + 4
        for v in event.summary.value:
            out.append((event.step, v.tag, v.simple_value))
    return out


def test_tensorboard_writes_readable_event_files(tmp_path):
    board = reporting.TensorBoard(str(tmp_path / "tb"))
    board.write(row(1, 0.9, 0.8))
    board.write(row(2, 0.7, 0.6))
    board.close()
    files = os.listdir(tmp_path / "tb")
    assert len(files) == 1 and files[0].startswith("events.out.tfevents")
    scalars = read_events(tmp_path / "tb" / files[0])
    # Train and validation of one metric share a chart (one tag prefix).
    assert (1, "loss/train", 0.8999999761581421) in scalars
    assert (2, "loss/val_clip", 0.6000000238418579) in scalars
    assert (2, "loss/val_window", 0.6000000238418579) in scalars
    assert {tag for _, tag, _ in scalars if tag.startswith("accuracy/")} == {
        "accuracy/train", "accuracy/val_window", "accuracy/val_clip"}
    assert len(scalars) == 2 * len(reporting.TensorBoard.TAGS)


def test_tensorboard_write_failure_names_the_event_file(tmp_path, monkeypatch):
    import errno

    import pytest

    board = reporting.TensorBoard(str(tmp_path / "tb"))

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(board.writer, "flush", full)
    with pytest.raises(OSError) as err:
        board.write(row(1, 0.9, 0.8))
    assert err.value.errno == errno.ENOSPC
    assert "events.out.tfevents" in err.value.filename


def test_curves_have_whole_epoch_ticks(tmp_path):
    import matplotlib.pyplot as plt

    from speechmusic_jax import plots

    rows = [row(e, 1.0 / e, 1.1 / e) for e in (1, 2, 3)]
    fig = plots.curves_figure(rows, best_epoch=3)
    try:
        for ax in fig.axes:
            ticks = [t for t in ax.get_xticks() if 1 <= t <= 3]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks
    finally:
        plt.close(fig)
    plots.curves(rows, tmp_path / "c.png", best_epoch=3)
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_the_report_says_how_many_steps_its_step_times_are_over():
    base = {"status": "completed", "best_epoch": 1, "epochs_run": 1, "params_trainable": 10,
            "train_time_s": 2.0, "compile_time_s": 1.0, "peak_memory_bytes": 2**20,
            "peak_memory_kind": "host_rss", "device_count": 1, "device_kind": "cpu"}
    every = {"median": 185.24, "min": 180.0, "max": 190.0, "n": 100, "timed": 100}
    text = reporting.format_summary({**base, "step_time_ms": every}, ["speech", "music"])
    assert "median step time: 185.24 ms (min 180.00, max 190.00; compile 1.00s excluded)" in text
    some = {**every, "timed": 96}
    text = reporting.format_summary({**base, "step_time_ms": some}, ["speech", "music"])
    assert "(min 180.00, max 190.00; 96 of 100 steps timed, compile" in text
    text = reporting.format_summary({**base, "step_time_ms": {"n": 2, "timed": 0}},
                                    ["speech", "music"])
    assert "step time: not measured (compile 1.00s excluded)" in text
