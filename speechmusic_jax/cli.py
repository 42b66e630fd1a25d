"""What the command-line entry points share: defaults, flag shorthands, error reporting."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

from speechmusic_jax.config import ConfigDict, ConfigError

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_experiment() -> str:
    """experiments/default.py, relative to the working directory when it is there."""
    local = os.path.join("experiments", "default.py")
    return local if os.path.exists(local) else os.path.join(_REPO, local)


def apply_shorthands(cfg: ConfigDict, *, data: str | None = None,
                     on_error: str | None = None) -> ConfigDict:
    if data is not None:
        cfg.data.spec = data
    if on_error is not None:
        cfg.data.on_error = on_error
    return cfg


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with config errors (an unknown field) as one line, not a traceback."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        _die(f"flag error: {e}\nPass --helpshort to see the flags.", 2)
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        detail = str(e).strip("'\"").replace("\\n", " ").replace("\n", " ").replace("\\'", "'")
        culprits = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
        where = f" in one of {culprits}" if culprits else ""
        _die(f"config error{where}: unknown or invalid field: {detail}", 2)
    raise AssertionError("unreachable")


def log(message: str) -> None:
    print(message, flush=True)


def quiet_jax_logs() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("absl").setLevel(logging.WARNING)


@contextlib.contextmanager
def friendly_errors() -> Iterator[None]:
    """Turn the errors a user can fix into one clear message and exit status 2 (or 1)."""
    from speechmusic_jax.data.sources import DataError
    from speechmusic_jax.training.loop import TrainingDiverged, WorkdirConflict

    try:
        yield
    except ConfigError as e:
        _die(f"config error: {e}", 2)
    except (DataError, WorkdirConflict) as e:
        _die(f"error: {e}", 2)
    except TrainingDiverged as e:
        _die(f"training diverged: {e}", 1)
    except OSError as e:
        if e.errno == 28:  # ENOSPC
            _die(f"error: the disk is full while writing {e.filename or ''}; earlier checkpoints "
                 "are intact. Free space and run the same command again to resume.", 1)
        raise
    except KeyboardInterrupt:
        _die("interrupted; run the same command again to resume from the last checkpoint", 130)


def _die(message: str, code: int) -> None:
    print(message, file=sys.stderr, flush=True)
    sys.exit(code)
