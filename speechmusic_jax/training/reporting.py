"""What a run shows and records besides its files: the epoch table, the final report, a
progress bar, the per-layer parameter table, overfitting notes and TensorBoard scalars."""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax

from speechmusic_jax.io_utils import append_jsonl, atomic_write_text
from speechmusic_jax.training import clip_scoring, metrics

Log = Callable[[str], None]


# The first columns of a per-file predictions file with known labels (test_predictions.csv,
# evaluate's predictions): then p_<class> for each class, then correct (1 or 0).
PREDICTIONS_HEAD = ("path", "label", "predicted", "confidence")


def write_predictions(path: str, pred: clip_scoring.Predictions, classes) -> int:
    """One row per file of ``pred`` (labelled): path, label, predicted, confidence (the top
    probability), p_<class>..., correct; written atomically. Returns how many are wrong."""
    probs = clip_scoring.softmax(pred.clip_logits)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*PREDICTIONS_HEAD, *[f"p_{c}" for c in classes], "correct"])
    wrong = 0
    for f, p in zip(pred.files, probs, strict=True):
        top = int(p.argmax())
        wrong += top != f.label
        w.writerow([f.path, classes[f.label], classes[top], f"{p[top]:.6f}",
                    *[f"{v:.6f}" for v in p], int(top == f.label)])
    atomic_write_text(path, buf.getvalue())
    return wrong


def is_predictions_file(path: str) -> bool:
    """Does ``path`` start as :func:`write_predictions` writes?"""
    with open(path, encoding="utf-8") as f:
        return f.readline().startswith(",".join(PREDICTIONS_HEAD) + ",")


class EpochPrinter:
    """The epoch table. Validation loss is shown per clip (``val_loss``: what early stopping
    watches) and per window (``val_win_loss``: the unit of ``train_loss``, a crop, which the
    overfitting note compares it with)."""

    HEAD = (f"{'epoch':>5} {'train_loss':>10} {'train_acc':>9} {'val_loss':>9} "
            f"{'val_win_loss':>12} {'val_acc':>8} {'val_f1':>7} {'lr':>9} {'time_s':>7}")

    def __init__(self, log: Log, monitor: str = "val_loss"):
        self.log = log
        self.monitor = monitor
        self.started = False

    def row(self, r: dict, improved: bool) -> None:
        if not self.started:
            self.log(f"(* marks an epoch that improved {self.monitor}: the best weights so far; "
                     "val_loss is per clip, val_win_loss per window)")
            self.log(self.HEAD)
            self.started = True
        window = r.get("val_window_loss")  # absent in rows of older runs
        window_text = f"{window:>12.4f}" if window is not None else f"{'-':>12}"
        self.log(f"{r['epoch']:>5} {r['train_loss']:>10.4f} {r['train_accuracy']:>9.4f} "
                 f"{r['val_loss']:>9.4f} {window_text} {r['val_accuracy']:>8.4f} "
                 f"{r['val_f1']:>7.4f} {r['learning_rate']:>9.2e} {r['epoch_time_s']:>7.2f}"
                 + ("  *" if improved else ""))


def format_summary(s: dict, classes) -> str:
    tested = s.get("tested_epoch")
    lines = [f"\n=== final report ({s['status']}, best epoch {s['best_epoch']} of "
             f"{s['epochs_run']}"
             + (f"; tested: the weights of epoch {tested}" if tested not in (None, s["best_epoch"])
                else "") + ") ==="]
    if s.get("init_from"):
        start = s["init_from"]
        lines.append(f"fine-tuned from the epoch-{start['epoch']} weights ({start['checkpoint']}) "
                     f"of {start['workdir']}")
    if s.get("test"):
        lines.append(metrics.format_report(s["test"], classes, title="test, clip level"))
        win = s["test"]["window"]
        lines.append(f"window level: accuracy {win['accuracy']:.4f} over {win['n_windows']} "
                     f"windows, macro F1 {win['f1']['macro']:.4f}")
    st = s.get("step_time_ms") or {}
    inf = s.get("inference") or {}
    if st.get("median") is not None:
        steps = (f"{st['timed']} of {st['n']} steps timed, " if st.get("timed", st["n"]) < st["n"]
                 else "")
        step_text = (f"median step time: {st['median']:.2f} ms (min {st['min']:.2f}, max "
                     f"{st['max']:.2f}; {steps}")
    else:
        step_text = "step time: not measured ("
    lines += [
        f"trainable parameters: {s['params_trainable']:,}",
        f"training time: {s['train_time_s']:.1f}s; {step_text}compile "
        f"{s['compile_time_s']:.2f}s excluded"
        + (f"; host memory: {s['host_memory']}" if s.get("host_memory") else "") + ")",
    ]
    tp = s.get("throughput") or {}
    if tp.get("ratio"):
        lines.append(f"whole training: {tp['train_examples_per_s']:,.0f} examples/s, "
                     f"{100 * tp['ratio']:.0f}% of its steps' rate as timed in this run "
                     f"({tp['step_examples_per_s']:,.0f}/s, the loader running beside them; "
                     "benchmark --what=data times the step alone)")
    if s.get("flops_per_example"):
        lines.append(f"FLOPs per example (inference, one window): {s['flops_per_example']:.3g}")
    if inf:
        lines.append(f"inference: {inf['examples_per_s']:.0f} windows/s at batch "
                     f"{inf['batch_size']}, batch-1 latency {inf['latency_ms_batch1']:.2f} ms, "
                     f"{inf['realtime_factor']:.0f}x real time")
    lines.append(f"peak memory: {s['peak_memory_bytes'] / 2**20:.0f} MiB "
                 f"({s['peak_memory_kind']}); device: {s['device_count']} x {s['device_kind']}")
    if s.get("data_errors"):
        lines.append(f"data errors (skipped): {s['data_errors']}")
    return "\n".join(lines)



def layer_table(params: Any, order: Sequence[str] = ()) -> str:
    """One line per layer: its path, parameter shapes and count; a total at the end. ``order``:
    the layers' paths in network order (``conv1d.layer_order``); without it, or for a layer it
    does not name, the order of ``params`` (sorted by name)."""
    rows: dict[str, list] = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        keys = [str(getattr(k, "key", getattr(k, "idx", ""))) for k in path]
        keys = [k for k in keys if k and k != "value"]
        layer, name = ".".join(keys[:-1]), keys[-1]
        rows.setdefault(layer, []).append((name, tuple(leaf.shape), int(leaf.size)))
    rank = {layer: i for i, layer in enumerate(order)}
    rows = dict(sorted(rows.items(), key=lambda kv: rank.get(kv[0], len(rank))))  # stable
    width = max((len(k) for k in rows), default=5)
    lines = [f"{'layer':<{width}}  {'parameters':>10}  shapes"]
    total = 0
    for layer, entries in rows.items():
        n = sum(e[2] for e in entries)
        total += n
        shapes = ", ".join(f"{name} {'x'.join(map(str, shape))}" for name, shape, _ in entries)
        lines.append(f"{layer:<{width}}  {n:>10,}  {shapes}")
    lines.append(f"{'total':<{width}}  {total:>10,}")
    return "\n".join(lines)


class EpochRecords:
    """Where each epoch's row goes: metrics.jsonl (appended), TensorBoard, the epoch table and
    the overfitting watch, in that order."""

    def __init__(self, metrics_path: str, tensorboard_dir: str, log: Log,
                 monitor: str = "val_loss"):
        self.metrics_path = metrics_path
        self.board = TensorBoard(tensorboard_dir)
        self.printer = EpochPrinter(log, monitor)
        self.overfit = OverfitWatch(log)

    def write(self, row: dict, improved: bool) -> None:
        append_jsonl(self.metrics_path, row)
        self.board.write(row)
        self.printer.row(row, improved)
        self.overfit.update(row)

    def close(self) -> None:
        self.board.close()


class OverfitWatch:
    """Notes once when validation loss has risen for ``epochs`` epochs while training loss fell,
    and once when that ends (validation loss back below where it was when the note started).

    Both losses are the plain cross-entropy of one crop or window (``train_loss`` and
    ``val_window_loss``), so the comparison is of like with like; rows without the window loss
    (from older runs) fall back to the clip-level ``val_loss``. The note quotes the columns of
    the epoch table it refers to: the per-window loss (``val_win_loss``) it watches and, beside
    it, the per-clip ``val_loss``."""

    def __init__(self, log: Log, epochs: int = 3):
        self.log = log
        self.epochs = epochs
        self.rows: list[dict] = []
        self.since: tuple[int, float] | None = None  # (epoch, val loss) where the note started

    @staticmethod
    def _val(row: dict) -> float:
        return row.get("val_window_loss", row["val_loss"])

    def update(self, row: dict) -> bool:
        """Fold in an epoch's row; True when a note was printed."""
        self.rows.append(row)
        if self.since is not None:
            start_epoch, start_val = self.since
            if self._val(row) < start_val:
                self.since = None
                what = "per window" if "val_window_loss" in row else "per clip"
                self.log(f"note: validation loss {what} is back to {self._val(row):.4f} (below "
                         f"{start_val:.4f} of epoch {start_epoch}): the overfitting noted then "
                         "has ended")
                return True
            return False
        recent = self.rows[-(self.epochs + 1):]
        if len(recent) <= self.epochs:
            return False
        val = [self._val(r) for r in recent]
        train = [r["train_loss"] for r in recent]
        rising = all(b > a for a, b in zip(val, val[1:], strict=False))
        if rising and train[-1] < train[0]:
            self.since = (recent[0]["epoch"], val[0])
            if all("val_window_loss" in r for r in recent):
                what = "per window (val_win_loss)"
                clip = (f"; per clip, val_loss: {recent[0]['val_loss']:.4f} -> "
                        f"{recent[-1]['val_loss']:.4f}")
            else:  # rows of an older run: the clip-level loss only
                what, clip = "per clip (val_loss)", ""
            self.log(f"note: validation loss {what} has risen for {self.epochs} epochs "
                     f"({val[0]:.4f} -> {val[-1]:.4f}{clip}) while training loss fell "
                     f"({train[0]:.4f} -> {train[-1]:.4f}): the model may be overfitting (or its "
                     "batch-norm statistics still settling); consider more dropout, weight "
                     "decay, augmentation, or early stopping. Said once; another note says when "
                     "it ends")
            return True
        return False


class ProgressBar:
    """Steps of the current epoch on one terminal line; silent when output is not a terminal."""

    def __init__(self, total: int, epoch: int, enabled: bool | None = None, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total, self.epoch, self.done = total, epoch, 0

    def step(self, loss: float | None = None) -> None:
        self.done += 1
        if not self.enabled:
            return
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        tail = f" loss {loss:.4f}" if loss is not None else ""
        self.stream.write(f"\repoch {self.epoch} [{'#' * filled}{'.' * (width - filled)}] "
                          f"{self.done}/{self.total}{tail}")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()


class TensorBoard:
    """Epoch scalars as TensorBoard event files, written synchronously (tensorboardX's event
    format, no TensorFlow, no background thread): each epoch's points are on disk when
    ``write`` returns, and a failed write raises an OSError naming the event file."""

    # metrics.jsonl key -> TensorBoard tag: train and validation of one metric share a chart.
    TAGS = {"train_loss": "loss/train", "val_window_loss": "loss/val_window",
            "val_loss": "loss/val_clip", "train_accuracy": "accuracy/train",
            "val_window_accuracy": "accuracy/val_window", "val_accuracy": "accuracy/val_clip",
            "val_f1": "f1_macro/val_clip", "learning_rate": "learning_rate",
            "epoch_time_s": "time/epoch_s", "examples_per_s": "time/train_examples_per_s"}

    def __init__(self, logdir: str):
        from tensorboardX.event_file_writer import EventsWriter

        os.makedirs(logdir, exist_ok=True)
        self.logdir = logdir
        self.writer = None
        self._guard(lambda: setattr(self, "writer", EventsWriter(os.path.join(logdir, "events"))))

    def write(self, row: dict) -> None:
        import time

        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.summary import scalar

        def emit() -> None:
            for key, tag in self.TAGS.items():
                value = row.get(key)
                if value is not None:
                    self.writer.write_event(Event(wall_time=time.time(), step=row["epoch"],
                                                  summary=scalar(tag, float(value))))
            self.writer.flush()

        self._guard(emit)

    def close(self) -> None:
        if self.writer is not None:
            writer, self.writer = self.writer, None
            self._guard(writer.close)

    def _guard(self, fn: Callable[[], object]) -> None:
        try:
            fn()
        except OSError as e:
            path = getattr(self.writer, "_file_name", None) or self.logdir
            raise OSError(e.errno, e.strerror or str(e), path) from None
