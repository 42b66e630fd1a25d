"""curves.png: train and validation loss and accuracy by epoch, best epoch marked.

Training figures are per crop, so they are drawn against validation per window (the same unit:
one fixed-length input, plain cross-entropy); the clip-level validation figures (one decision
per file, what early stopping and the report use) are drawn dashed beside them.
"""

from __future__ import annotations

import io
import os

from speechmusic_jax.io_utils import atomic_write_bytes


def curves(rows: list[dict], path: str | os.PathLike, best_epoch: int | None = None) -> None:
    """Draw :func:`curves_figure` into ``path`` (PNG, written atomically)."""
    import matplotlib.pyplot as plt

    fig = curves_figure(rows, best_epoch)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def curves_figure(rows: list[dict], best_epoch: int | None = None):
    """Loss and accuracy by epoch (a matplotlib figure; the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, key, title in ((axes[0], "loss", "loss (cross-entropy)"),
                           (axes[1], "accuracy", "accuracy")):
        ax.plot(epochs, [r[f"train_{key}"] for r in rows], "o-", ms=3, label="train (per crop)")
        if all(f"val_window_{key}" in r for r in rows):
            ax.plot(epochs, [r[f"val_window_{key}"] for r in rows], "o-", ms=3,
                    label="validation (per window)")
        ax.plot(epochs, [r[f"val_{key}"] for r in rows], "--", lw=1,
                label="validation (per clip)")
        if best_epoch:
            ax.axvline(best_epoch, color="grey", ls=":", lw=1, label=f"best (epoch {best_epoch})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    return fig
