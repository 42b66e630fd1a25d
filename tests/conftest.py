"""Test settings: strict JAX, a private corpus cache, small helpers shared by the tests."""

from __future__ import annotations

import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Hundreds of tests compile the same small programs, in this process and in the subprocesses
# that run the CLI. A compilation cache private to this session (set through the environment,
# so the subprocesses share it) compiles each of them once; nothing outside tmp is written.
# A cache the user set already is left as it is.
_XLA_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _XLA_CACHE = tempfile.mkdtemp(prefix="speechmusic-tests-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_sessionfinish(session, exitstatus):
    """Remove the session's compilation cache (only the one this file created)."""
    if _XLA_CACHE is not None:
        shutil.rmtree(_XLA_CACHE, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Never write to the user's cache: the corpus cache of the whole session lives in tmp."""
    old = os.environ.get("SPEECHMUSIC_CACHE")
    os.environ["SPEECHMUSIC_CACHE"] = str(tmp_path_factory.mktemp("corpus_cache"))
    yield
    if old is None:
        os.environ.pop("SPEECHMUSIC_CACHE", None)
    else:
        os.environ["SPEECHMUSIC_CACHE"] = old


@pytest.fixture
def tiny_config():
    """The :tiny variant of the default experiment (fresh, unlocked copy per test)."""
    from speechmusic_jax.config import load_experiment

    return load_experiment(os.path.join(REPO, "experiments", "default.py"), "tiny")
