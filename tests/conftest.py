"""Test settings: strict JAX, a private corpus cache, small helpers shared by the tests."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
