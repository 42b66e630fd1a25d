import subprocess
import sys

import pytest

from speechmusic_jax import list as list_cli


@pytest.mark.parametrize("what,expect", [("presets", "m34_res"), ("optimizers", "lion"),
                                         ("schedules", "onecycle"), ("sources", "gtzan"),
                                         ("experiments", "default.py")])
def test_list_names_what_exists(what, expect, capsys):
    assert list_cli.main({}, [what]) == 0
    assert expect in capsys.readouterr().out


def test_list_presets_shows_published_counts(capsys):
    list_cli.main({}, ["presets"])
    out = capsys.readouterr().out
    assert "555,010" in out and "24,770" in out


def test_list_rejects_unknown_kind():
    r = subprocess.run([sys.executable, "-m", "speechmusic_jax.list", "bogus"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "presets|optimizers" in r.stderr
