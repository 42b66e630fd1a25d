"""What the command-line entry points share: flag definitions, start-up, error reporting.

Every command is written the same way: a function that defines its flags (using the helpers
here for the ones commands share) and a ``main(flags, args)`` that turns the flag values into a
config or arguments and calls one library function; ``run_main`` wires them to absl::

    def define_flags() -> dict: return {"config": cli.config_flag(), ...}
    def main(flags: dict, args: list[str]) -> int: ...
    if __name__ == "__main__":
        cli.run_main(define_flags, main)
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

from speechmusic_jax import host_memory
from speechmusic_jax.config import CHECKPOINTS, ConfigDict
from speechmusic_jax.errors import ConfigError

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_experiment() -> str:
    """experiments/default.py, relative to the working directory when it is there."""
    local = os.path.join("experiments", "default.py")
    return local if os.path.exists(local) else os.path.join(_REPO, local)


def apply_shorthands(cfg: ConfigDict, *, data: str | None = None,
                     on_error: str | None = None) -> ConfigDict:
    """The config as the command line meant it: ``--data`` and ``--data_on_error`` applied, and
    a list field given as ``a,b,c`` split into its items (:func:`config.split_comma_lists`)."""
    from speechmusic_jax.config import split_comma_lists

    split_comma_lists(cfg)
    if data is not None:
        cfg.data.spec = data
    if on_error is not None:
        cfg.data.on_error = on_error
    return cfg


def run_main(define: Callable[[], dict[str, Any]],
             main: Callable[[dict[str, Any], list[str]], int]) -> None:
    """Define the command's flags, parse them, and exit with ``main``'s status. Flag and config
    errors, usage errors and the errors of :func:`friendly_errors` end as one line on stderr."""
    from absl import app

    holders = define_flags(define)
    memory = host_memory_flag()
    quiet_jax_logs()
    keep_python_stderr_apart()
    handle_interrupts()

    def absl_main(argv: list[str]) -> int:
        values = {name: holder.value for name, holder in holders.items()}
        # before JAX starts its threads and allocates: what is in effect, for the records
        values["host_memory"] = host_memory.apply(memory.value)
        with friendly_errors():
            return main(values, argv[1:])

    sys.exit(app.run(absl_main, flags_parser=parse_flags))


def weights_flag(what: str) -> Any:
    """--weights=tested|best|last: which checkpoint of a finished run ``what`` (a command's
    use of it, such as "to export") takes."""
    from absl import flags

    return flags.DEFINE_enum(
        "weights", "tested", list(CHECKPOINTS),
        f"Which checkpoint of the run {what}: tested (the weights the run was tested with: its "
        "best, or its last with train.early_stopping.restore_best off), best or last.")


def model_flags() -> dict[str, Any]:
    """--model=DIR|pretrained, the trained model a command uses, and --workdir, its older
    spelling (:func:`model_folder` reads them)."""
    from absl import flags

    return {
        "model": flags.DEFINE_string("model", None, "The trained model: a run folder, or "
                                     "pretrained for the model shipped in the package."),
        "workdir": flags.DEFINE_string("workdir", None, "A run folder (the same as --model)."),
    }


def model_folder(flags: dict[str, Any]) -> str:
    """The run folder (or ``pretrained``) named by --model or --workdir: one of them."""
    model, workdir = flags.get("model"), flags.get("workdir")
    if model and workdir:
        raise UsageError("--model and --workdir both name the model: give one")
    if not (model or workdir):
        raise UsageError("--model is required: a run folder, or pretrained (the shipped model)")
    return model or workdir


def host_memory_flag() -> Any:
    """--host_memory=keep|release, which every command has (speechmusic_jax/host_memory.py)."""
    from absl import flags

    return flags.DEFINE_enum(
        "host_memory", host_memory.DEFAULT, list(host_memory.POLICIES),
        "What the C allocator does with freed memory: keep it for the next step (no fresh "
        "pages to zero; resident memory stays at its peak) or release it to the OS (glibc's "
        "default). keep needs glibc; elsewhere it is release.")


def config_flag() -> Any:
    """--config=experiments/NAME.py[:ARG] with every --config.FIELD=VALUE override."""
    from ml_collections import config_flags

    return config_flags.DEFINE_config_file(
        "config", default_experiment(), "Experiment file (experiments/NAME.py[:ARG]); set any "
        "field with --config.FIELD=VALUE.", lock_config=True)


def data_flags(on_error_default: str | None = None) -> dict[str, Any]:
    """--data=SPEC and --data_on_error (shorthands for data.spec and data.on_error)."""
    from absl import flags

    return {
        "data": flags.DEFINE_string("data", None, "Data source: synthetic, folder:PATH, "
                                    "gtzan:PATH, musan:PATH, manifest:FILE.csv, tfds:NAME "
                                    "(shorthand for --config.data.spec where there is a config)."),
        "data_on_error": flags.DEFINE_enum("data_on_error", on_error_default, ["error", "skip"],
                                           "Stop at a bad file, or skip it and count it."),
    }


def config_from(flags: dict[str, Any], args: list[str]) -> ConfigDict:
    """The --config of a command that takes no positional arguments, with the --data and
    --data_on_error shorthands applied."""
    if args:
        raise UsageError(f"unexpected arguments: {args}")
    return apply_shorthands(flags["config"], data=flags.get("data"),
                            on_error=flags.get("data_on_error"))


def distributed_flags() -> dict[str, Any]:
    """--distributed, --coordinator_address, --num_processes, --process_id: one run over several
    processes (see speechmusic_jax/distributed.py and BUILD.md)."""
    from absl import flags

    return {
        "distributed": flags.DEFINE_enum(
            "distributed", "auto", ["auto", "on", "off"],
            "Start JAX's distributed runtime: auto (when the flags below or a SLURM / Open MPI "
            "launch name several processes), on (always; JAX detects the cluster, e.g. a Cloud "
            "TPU pod slice), off."),
        "coordinator_address": flags.DEFINE_string(
            "coordinator_address", None, "HOST:PORT of process 0, which every process reaches."),
        "num_processes": flags.DEFINE_integer("num_processes", None,
                                              "How many processes the run spans."),
        "process_id": flags.DEFINE_integer("process_id", None,
                                           "This process's index, 0 .. num_processes-1."),
    }


def start_distributed(flags: dict[str, Any]) -> bool:
    """Start JAX's distributed runtime when the flags of :func:`distributed_flags` (or the
    cluster environment) ask for it; a bad combination is a usage error."""
    from speechmusic_jax import distributed

    launch = distributed.Launch(flags["distributed"], flags["coordinator_address"],
                                flags["num_processes"], flags["process_id"])
    try:
        return distributed.initialize(launch, log=log)
    except ValueError as e:
        raise UsageError(str(e)) from None


class UsageError(Exception):
    """A command called wrongly (a missing flag or argument): one line, exit status 2."""


def define_flags(define: Callable[[], Any]) -> Any:
    """Run ``define`` (flag definitions) with parse_flags' one-line errors: ml_collections
    applies ``--config.FIELD`` overrides while the config flag is being defined."""
    from absl import flags

    try:
        return define()
    except flags.Error as e:
        _die(f"flag error: {_one_line(str(e))} (pass --helpshort to see the flags)", 2)
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        _die_field_error(e, sys.argv)
    raise AssertionError("unreachable")


def _die_field_error(e: BaseException, argv: list[str]) -> None:
    detail = str(e).strip("'\"").replace("\\n", " ").replace("\n", " ").replace("\\'", "'")
    culprits = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
    where = f" in one of {culprits}" if culprits else ""
    _die(f"config error{where}: unknown or invalid field: {detail}", 2)


HELP_FLAGS = ("-h", "-?", "--help", "--helpshort", "--helpfull")


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with config errors (an unknown field, a missing experiment file, a
    failing ``get_config``) as one line, not a traceback; --help prints the command's usage and
    flags and exits 0."""
    from absl import flags

    if any(arg in HELP_FLAGS for arg in argv[1:]):
        print_help(full="--helpfull" in argv[1:])
        sys.exit(0)

    try:
        rest = flags.FLAGS(argv)
    except flags.Error as e:
        _die(f"flag error: {_one_line(str(e))} (pass --helpshort to see the flags)", 2)
    except OSError as e:
        _die(f"config error: {_last_line(e)}", 2)
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        _die_field_error(e, argv)
    except Exception as e:  # an experiment file that does not import or whose get_config fails
        _die(f"config error: the experiment file failed: {type(e).__name__}: {_last_line(e)}", 2)
    # ml_collections defers a missing or unreadable --config file until the config is first used
    # (as an object that raises on access); report it now, as the flag error it is.
    for name in flags.FLAGS:
        value = flags.FLAGS[name].value
        if type(value).__name__ == "_ErrorConfig":
            error = object.__getattribute__(value, "_error")
            _die(f"config error: --{name}={flags.FLAGS[name].serialize().split('=', 1)[-1]}: "
                 f"cannot load the experiment file ({_last_line(error)})", 2)
    return rest


def print_help(full: bool = False) -> None:
    """The command's docstring (its usage) and its own flags (every flag with ``full``)."""
    from absl import flags

    doc = (sys.modules["__main__"].__doc__ or "").strip()
    if doc:
        print(doc + "\n")
    if full:
        print("flags (all, including absl's own):")
        print(flags.FLAGS.get_help())
        return
    shared = flags.FLAGS.module_help(sys.modules[__name__])  # --config, --data, ...
    own = flags.FLAGS.main_module_help()
    print("flags:")
    for text in (own, shared):
        lines = [ln for ln in text.splitlines()  # without the "module:" headings
                 if not (ln[:1].strip() and ln.rstrip().endswith(":"))]
        if any(ln.strip() for ln in lines):
            print("\n".join(lines))


def keep_python_stderr_apart() -> None:
    """Python's own stderr (error lines, warnings, the progress bar, tracebacks) on a copy of
    file descriptor 2: while a reader thread points fd 2 at a temporary file to capture the MP3
    decoder's lines (:func:`speechmusic_jax.data.audio.decoder_messages`), nothing of ours is
    held back, or lost if the process ends then."""
    try:
        fd = os.dup(2)
    except OSError:  # no stderr at all
        return
    old = sys.stderr
    sys.stderr = io.TextIOWrapper(io.FileIO(fd, "w"), encoding=getattr(old, "encoding", None),
                                  errors="backslashreplace", line_buffering=True,
                                  write_through=True)


# ------------------------------------------------------------------------------------------------
# Interrupts: Ctrl-C (SIGINT) or a scheduler's SIGTERM end any command with one true line.

_ON_INTERRUPT: list[Callable[[], str]] = []


def on_interrupt(describe: Callable[[], str]) -> None:
    """Say what an interrupt keeps: ``describe()`` is called when one comes and its line is
    printed (e.g. which checkpoint a run can resume from)."""
    _ON_INTERRUPT[:] = [describe]


def handle_interrupts() -> None:
    """SIGINT and SIGTERM print one line and end the process at once (exit 130 or 143).

    The process ends with ``os._exit``: no exception unwinds through XLA's compiler or the
    reader and checkpoint threads (a KeyboardInterrupt raised there could crash the interpreter
    at exit), and nothing half-done is made to look finished: every file is written by an atomic
    rename, so it is there whole or not at all."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupted)


def _interrupted(signum: int, _frame: Any) -> None:
    name = signal.Signals(signum).name
    try:
        detail = _ON_INTERRUPT[0]() if _ON_INTERRUPT else "nothing was written"
    except Exception as e:  # the message must never fail
        detail = f"could not tell what was kept ({type(e).__name__})"
    sys.stdout.flush()
    try:
        fd = sys.stderr.fileno()  # Python's own (keep_python_stderr_apart)
    except (AttributeError, OSError, ValueError):
        fd = 2
    fresh_line = "\n" if os.isatty(fd) else ""  # after a progress bar
    os.write(fd, f"{fresh_line}interrupted ({name}): {detail}\n".encode())
    os._exit(128 + signum)


def _last_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__


def _one_line(text: str) -> str:
    """The gist of a multi-line message: a traceback quoted inside it is reduced to its last line
    (the error itself), the rest is joined with spaces."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if any(ln.startswith("Traceback (most recent call last)") for ln in lines):
        head = lines[0].split(": Error whilst parsing config file")[0].rstrip(":")
        return f"{head}: {lines[-1]}"
    return " ".join(lines)


def log(message: str) -> None:
    print(message, flush=True)


def quiet_jax_logs() -> None:
    """Keep library logging (absl: orbax, XLA) off the terminal of a command-line run.

    Our own output says what happened; a library that fails raises, and the error reaches the
    user as one line (friendly_errors). Orbax in particular logs every failed write of a
    checkpoint at ERROR level from its background threads before raising, which would bury that
    line under tracebacks on a full disk.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.FATAL)
    logging.getLogger("absl").setLevel(logging.CRITICAL)


# Errors of the storage rather than of the program: the disk is full, a quota is used up, a file
# would be larger than the system allows.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


@contextlib.contextmanager
def friendly_errors() -> Iterator[None]:
    """Turn the errors a user can fix into one clear message and a non-zero exit status: 2 for a
    bad config, data or workdir; 1 for divergence and for resources (disk, device memory)."""
    from speechmusic_jax.errors import DataError, RunNotFound, TrainingDiverged, WorkdirConflict

    try:
        yield
    except UsageError as e:
        _die(f"usage error: {e} (pass --helpshort to see the flags)", 2)
    except ConfigError as e:
        _die(f"config error: {e}", 2)
    except (DataError, WorkdirConflict, RunNotFound) as e:
        _die(f"error: {e}", 2)
    except TrainingDiverged as e:
        _die(f"training diverged: {e}", 1)
    except OSError as e:
        if e.errno in DISK_FULL_ERRNOS:
            where = f" while writing {e.filename}" if e.filename else ""
            _die(f"error: no space left ({e.strerror or os.strerror(e.errno)}){where}; earlier "
                 "checkpoints are intact. Free space and run the same command again to resume.", 1)
        if e.filename is not None and e.errno is not None:
            _die(f"error: {e.strerror or os.strerror(e.errno)}: {e.filename}", 1)
        raise
    except KeyboardInterrupt:  # only where no handler was installed (library use)
        _die("interrupted", 130)
    except Exception as e:
        message = out_of_memory_message(e)
        if message is None:
            raise
        _die(message, 1)


def out_of_memory_message(e: BaseException) -> str | None:
    """A one-line message for a device out-of-memory error (XLA's RESOURCE_EXHAUSTED), else None.

    The training loop raises its own, more precise, ``DeviceOutOfMemory`` for the train and eval
    steps; this catches the rest (compilation, inference timing, ...).
    """
    from speechmusic_jax.errors import DeviceOutOfMemory

    if isinstance(e, DeviceOutOfMemory):
        return f"error: {e}"
    if not is_device_out_of_memory(e):
        return None
    detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
    return (f"error: the device ran out of memory ({detail}). Use a smaller train.batch_size or "
            "train.eval_batch_size (e.g. half), a smaller model, or train.precision=bfloat16; "
            "earlier checkpoints are intact.")


def is_device_out_of_memory(e: BaseException) -> bool:
    """True for the error JAX raises when a device allocation fails."""
    import jax

    return isinstance(e, jax.errors.JaxRuntimeError) and (
        "RESOURCE_EXHAUSTED" in str(e) or "out of memory" in str(e).lower())


def _die(message: str, code: int) -> None:
    print(message, file=sys.stderr, flush=True)
    sys.exit(code)
