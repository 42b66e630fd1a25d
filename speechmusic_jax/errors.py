"""The errors a user can act on, in one place.

Each carries a message that names the field, file or folder at fault and what to do; the
command-line entry points (``cli.friendly_errors``) print it as one line with an exit status.
Library modules raise these and import nothing else from each other for them, so no data or
training module has to import another only for its error type.
"""

from __future__ import annotations

import os


class ConfigError(ValueError):
    """An invalid configuration value; the message starts with the field's name."""


class DataError(Exception):
    """A problem with the data as a whole (a missing folder, an empty class, a bad manifest)."""


class AudioError(Exception):
    """A problem with one audio file: ``kind`` tags it, the message names the file."""

    def __init__(self, path: str | os.PathLike, kind: str, detail: str):
        self.path = os.fspath(path)
        self.kind = kind
        self.detail = detail
        super().__init__(f"{self.path}: {detail}")

    def __reduce__(self):  # picklable (process pools, multiprocessing tests)
        return (AudioError, (self.path, self.kind, self.detail))


class WorkdirConflict(RuntimeError):
    """The workdir (or an output file) holds something this command must not replace: a run
    with a different config, or files that are not a run of ours."""


class RunNotFound(RuntimeError):
    """The workdir holds no usable run (no config, or no checkpoint)."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; the summary says ``diverged`` and the last good checkpoint
    stays."""


class DeviceOutOfMemory(RuntimeError):
    """The accelerator ran out of memory in the train or eval step; the message names the batch
    size to lower. Earlier checkpoints stay."""
