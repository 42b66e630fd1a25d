"""Timelines: window scores -> smoothed labels -> merged segments, and how to score a timeline.

Pure NumPy, no model: a recording's windows (start samples, class probabilities) come from
:mod:`speechmusic_jax.streaming`. Each window stands for the stretch of time nearest its centre
(cell edges halfway between neighbouring centres; the first cell starts at 0, the last ends at
the end of the recording), so a timeline covers the whole recording without gaps or overlaps.

Smoothing (``method``):

- ``hmm``: the most likely label sequence of a hidden Markov model whose states are the classes,
  with the window posteriors as (scaled) emission scores and a cost of ``switch_penalty`` nats
  for each change of label (Viterbi). Overlapping windows share evidence, so each window's
  log-probability is weighted by ``hop / segment``: the penalty then means the same whatever
  the hop.
- ``median``: each class's probability median-filtered over ``median_seconds``, then argmax.
- ``none``: each window's own argmax.

Consecutive windows with the same label merge into one segment; its ``p_<class>`` are the
time-weighted mean window probabilities over the segment, its ``confidence`` that of the label.
With a ``min_confidence`` (:func:`abstain`), a segment whose confidence is below it is labelled
:data:`UNCERTAIN` rather than forced into a class, and uncertain neighbours merge.
The defaults (:data:`DEFAULT`: hmm, 4 nats; windows every :data:`DEFAULT_HOP_FRACTION` of a
window) were chosen on validation clips (``python -m speechmusic_jax.segment_bench
--split=val``): on hour-long recordings alternating 30 s runs of the validation clips of the
built-in corpus and of a small real corpus, a hop of a quarter window put more changes within
1 s of the truth than half a window (120 vs 114 of 120; 107 vs 101), smoothing cut the spurious
changes on real clips from 62 to 13, and every HMM penalty from 0.5 to 16 nats did as well as
the median filter; 4 is the middle of that plateau (32 merged away whole 30 s runs).
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Sequence

import numpy as np

METHODS = ("hmm", "median", "none")
UNCERTAIN = -1  # the label of a segment below min_confidence (named "uncertain" in rows)
_PROB_FLOOR = 1e-6  # probabilities are floored before the log: one window never vetoes a label


@dataclasses.dataclass(frozen=True)
class Smoothing:
    method: str = "hmm"
    switch_penalty: float = 4.0  # nats per change of label (hmm)
    median_seconds: float = 5.0  # width of the median filter (median)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"smoothing must be one of {METHODS}, got {self.method!r}")
        if self.switch_penalty < 0:
            raise ValueError(f"switch_penalty must be >= 0, got {self.switch_penalty}")
        if self.median_seconds < 0:
            raise ValueError(f"median_seconds must be >= 0, got {self.median_seconds}")


DEFAULT = Smoothing()
DEFAULT_HOP_FRACTION = 0.25  # timeline hop as a fraction of the window (0.5 s for 2 s windows)


def cell_edges(starts: np.ndarray, segment: int, n_samples: int) -> np.ndarray:
    """(windows + 1,) sample positions: window i stands for [edges[i], edges[i + 1])."""
    starts = np.asarray(starts, dtype=np.float64)
    if starts.size == 0:
        return np.asarray([0.0, float(n_samples)])
    centres = starts + segment / 2
    mids = (centres[:-1] + centres[1:]) / 2
    return np.concatenate([[0.0], mids, [float(max(n_samples, 1))]])


def viterbi(log_probs: np.ndarray, switch_penalty: float) -> np.ndarray:
    """(T,) labels maximising sum of log_probs[t, label_t] - switch_penalty * (#changes)."""
    t_len, k = log_probs.shape
    if t_len == 0:
        return np.zeros(0, dtype=np.int32)
    back = np.zeros((t_len, k), dtype=np.int32)
    score = log_probs[0].astype(np.float64)
    states = np.arange(k)
    for t in range(1, t_len):
        best = int(np.argmax(score))
        switch = score[best] - switch_penalty
        stay = score >= switch  # ties keep the label
        back[t] = np.where(stay, states, best)
        score = np.where(stay, score, switch) + log_probs[t]
    labels = np.empty(t_len, dtype=np.int32)
    labels[-1] = int(np.argmax(score))
    for t in range(t_len - 1, 0, -1):
        labels[t - 1] = back[t, labels[t]]
    return labels


def median_filter(probs: np.ndarray, width: int) -> np.ndarray:
    """Each column of ``probs`` (T, K) median-filtered over ``width`` windows (odd; the edges
    repeat the first and last values)."""
    width = max(1, int(width) | 1)
    if width == 1 or probs.shape[0] < 2:
        return probs
    half = width // 2
    padded = np.pad(probs, ((half, half), (0, 0)), mode="edge")
    view = np.lib.stride_tricks.sliding_window_view(padded, width, axis=0)  # (T, K, width)
    return np.median(view, axis=-1)


def smooth_labels(probs: np.ndarray, smoothing: Smoothing, hop_s: float,
                  segment_s: float) -> np.ndarray:
    """(T,) smoothed labels of windows with class probabilities ``probs`` (T, K)."""
    probs = np.asarray(probs, dtype=np.float64)
    if smoothing.method == "none" or probs.shape[0] == 0:
        return np.argmax(probs, axis=1).astype(np.int32) if probs.size else np.zeros(0, np.int32)
    if smoothing.method == "median":
        width = int(round(smoothing.median_seconds / hop_s)) if hop_s > 0 else 1
        return np.argmax(median_filter(probs, width), axis=1).astype(np.int32)
    weight = min(1.0, hop_s / segment_s) if segment_s > 0 else 1.0
    log_probs = weight * np.log(np.clip(probs, _PROB_FLOOR, 1.0))
    return viterbi(log_probs, smoothing.switch_penalty)


def merge(labels: np.ndarray, probs: np.ndarray, edges: np.ndarray
          ) -> list[tuple[float, float, int, np.ndarray]]:
    """Runs of equal labels as (start, end, label, time-weighted mean probabilities), with
    ``start``/``end`` in the units of ``edges``."""
    out = []
    lengths = np.diff(edges)
    i = 0
    while i < len(labels):
        j = i
        while j + 1 < len(labels) and labels[j + 1] == labels[i]:
            j += 1
        w = lengths[i : j + 1]
        p = (probs[i : j + 1] * w[:, None]).sum(axis=0) / w.sum() if w.sum() > 0 else \
            probs[i : j + 1].mean(axis=0)
        out.append((float(edges[i]), float(edges[j + 1]), int(labels[i]), p))
        i = j + 1
    return out


def timeline(starts: np.ndarray, probs: np.ndarray, n_samples: int, *, sample_rate: int,
             segment: int, hop: int, smoothing: Smoothing = DEFAULT
             ) -> list[tuple[float, float, int, np.ndarray]]:
    """Merged, smoothed segments of one recording: (start_s, end_s, label, probabilities)."""
    edges = cell_edges(starts, segment, n_samples) / sample_rate
    labels = smooth_labels(probs, smoothing, hop / sample_rate, segment / sample_rate)
    return merge(labels, np.asarray(probs, dtype=np.float64), edges)


def confidence(segment: tuple[float, float, int, np.ndarray]) -> float:
    """The probability of a segment's label (for an uncertain one, kept by :func:`abstain`)."""
    label, probs = segment[2], segment[3]
    return float(segment[4]) if len(segment) > 4 else float(probs[label])


def abstain(segments: Sequence[tuple], min_confidence: float | None) -> list[tuple]:
    """``segments`` (start, end, label, probabilities) with those whose :func:`confidence` is
    below ``min_confidence`` labelled :data:`UNCERTAIN`; neighbouring uncertain segments merge
    (time-weighted probabilities and confidence, which stays below ``min_confidence``). An
    uncertain segment carries its confidence as a fifth element."""
    if min_confidence is None:
        return list(segments)
    out: list[tuple] = []
    for seg in segments:
        c = confidence(seg)
        if c >= min_confidence:
            out.append(seg)
            continue
        s0, s1, _, p = seg[:4]
        if out and out[-1][2] == UNCERTAIN:
            t0, t1, _, q, qc = out[-1]
            a, b = t1 - t0, s1 - s0
            if a + b <= 0:
                a = b = 1.0
            out[-1] = (t0, s1, UNCERTAIN, (q * a + np.asarray(p) * b) / (a + b),
                       (qc * a + c * b) / (a + b))
        else:
            out.append((s0, s1, UNCERTAIN, np.asarray(p, dtype=np.float64), c))
    return out


# --------------------------------------------------------------------------------------------
# Scoring a timeline against the truth


def time_accuracy(predicted: Sequence[tuple[float, float, int]],
                  truth: Sequence[tuple[float, float, int]]) -> float:
    """Fraction of the truth's time that ``predicted`` labels right (segments as (start, end,
    label, ...) in seconds)."""
    right = total = 0.0
    for t0, t1, label, *_ in truth:
        total += t1 - t0
        for p0, p1, plabel, *_ in predicted:
            if plabel == label:
                right += max(0.0, min(t1, p1) - max(t0, p0))
    return right / total if total > 0 else float("nan")


def boundaries(segments: Sequence[tuple[float, float, int]]) -> np.ndarray:
    """Times where the label changes."""
    return np.asarray([s[0] for prev, s in zip(segments, segments[1:], strict=False)
                       if s[2] != prev[2]], dtype=np.float64)


def boundary_report(predicted: Sequence[tuple[float, float, int]],
                    truth: Sequence[tuple[float, float, int]], tolerance_s: float = 1.0) -> dict:
    """How far each true change of label is from the nearest predicted one, and how many
    predicted changes are not within ``tolerance_s`` of a true one."""
    got, want = boundaries(predicted), boundaries(truth)
    if want.size and got.size:
        errors = np.min(np.abs(want[:, None] - got[None, :]), axis=1)
        spurious = int(np.sum(np.min(np.abs(got[:, None] - want[None, :]), axis=1)
                              > tolerance_s))
    else:
        errors = np.full(want.shape, np.inf)
        spurious = int(got.size)
    return {"true": int(want.size), "predicted": int(got.size),
            "within_tolerance": int(np.sum(errors <= tolerance_s)),
            "median_error_s": float(np.median(errors)) if errors.size else None,
            "max_error_s": float(np.max(errors)) if errors.size else None,
            "spurious": spurious, "tolerance_s": tolerance_s}


# --------------------------------------------------------------------------------------------
# Drawing timelines (predict --plot)

PLOT_SOFTWARE = "speechmusic_jax predict --plot"
_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def plot_png(panels: Sequence[dict], classes: Sequence[str]) -> bytes:
    """A PNG with one panel per recording: each class's window probability against time (each
    window drawn over the stretch it stands for), the merged segments as a coloured band below.
    A panel: ``path``, ``edges`` (windows + 1, seconds), ``probs`` (windows, classes),
    ``segments`` [(start_s, end_s, label, ...)], or ``path`` and ``error``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    colours = [_COLOURS[k % len(_COLOURS)] for k in range(len(classes))]
    colours.append("tab:gray")  # colours[UNCERTAIN]
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 1.0 + 2.0 * len(panels)),
                             squeeze=False, constrained_layout=True)
    for ax, panel in zip(axes[:, 0], panels, strict=True):
        ax.set_title(os.path.basename(panel["path"]), fontsize=9, loc="left")
        if panel.get("error"):
            ax.text(0.5, 0.5, panel["error"], ha="center", va="center", transform=ax.transAxes,
                    fontsize=8, color="tab:red", wrap=True)
            ax.set_axis_off()
            continue
        for s0, s1, label, *_ in panel["segments"]:
            ax.axvspan(s0, s1, ymin=0.0, ymax=0.1, color=colours[label], alpha=0.9, lw=0)
        probs = np.asarray(panel["probs"])
        for k in range(len(classes)):
            ax.stairs(probs[:, k], panel["edges"], color=colours[k], lw=1, baseline=None)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlim(0, float(panel["edges"][-1]))
        ax.set_ylabel("probability")
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("time (s)")
    handles = [Patch(color=c, label=f"{name}: window probability (line), segment (band)")
               for c, name in zip(colours, classes, strict=False)]
    if any(seg[2] == UNCERTAIN for panel in panels for seg in panel.get("segments", ())):
        handles.append(Patch(color=colours[UNCERTAIN], label="uncertain (band)"))
    fig.legend(handles=handles, loc="outside upper right", fontsize=8, ncols=len(handles))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": PLOT_SOFTWARE})
    plt.close(fig)
    return buf.getvalue()


def is_plot_file(path: str) -> bool:
    """Whether ``path`` is a PNG that ``predict --plot`` wrote (its Software tag says so)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    return head.startswith(b"\x89PNG") and PLOT_SOFTWARE.encode() in head
