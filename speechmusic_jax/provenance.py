"""Which code made a result: the package's version and the checkout's commit.

:func:`code_version` goes into ``timing.versions()``, so every run's summary.json, benchmark
JSON and shipped model records it beside the versions of JAX and its friends.
"""

from __future__ import annotations

import os
import subprocess

from speechmusic_jax import __version__

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def git_commit(repo: str = REPO) -> tuple[str | None, bool | None]:
    """(HEAD's commit, whether the checkout has uncommitted changes) of ``repo``; (None, None)
    where it is not a git checkout (an installed package)."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True,
                                  timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    if not os.path.exists(os.path.join(repo, ".git")):  # an installed package: not ours to ask
        return None, None
    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit, None if status is None else bool(status)


def code_version() -> dict[str, str | None]:
    """``speechmusic_jax``: the package's version; ``speechmusic_jax_commit``: the commit of the
    checkout it runs from, with ``-dirty`` where tracked files had uncommitted changes (None for
    an installed package)."""
    commit, dirty = git_commit()
    if commit is not None and dirty:
        commit += "-dirty"
    return {"speechmusic_jax": __version__, "speechmusic_jax_commit": commit}
