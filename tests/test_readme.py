"""The README's and docs/'s commands are real: every command line of their ```bash blocks runs (on a
tiny run and small fake data, or as a dry run), and every flag they name exists in the command
it is given to."""

import functools
import glob
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md", *sorted(os.path.relpath(p, REPO)
                             for p in glob.glob(os.path.join(REPO, "docs", "*.md")))]
BUILT_IN = ("test", "setup", "lint")  # run.sh's own commands
DRY_RUN = ("train", "sweep")  # checked with --dry_run: a real one trains for minutes


def _command(line: str):
    """(module, arguments, environment) of a command line, or None when it is not ours."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:  # an inline span cut mid-quote
        return None
    env = []
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
        env.append(tuple(words.pop(0).split("=", 1)))
    if words[:1] == ["./run.sh"] and len(words) > 1:
        return words[1], tuple(words[2:]), tuple(env)
    if words[:2] == ["python", "-m"] and len(words) > 2 and words[2].startswith("speechmusic_jax."):
        return words[2].split(".", 1)[1], tuple(words[3:]), tuple(env)
    return None


@functools.cache
def doc_commands() -> tuple[tuple[str, str, tuple[str, ...], tuple[tuple[str, str], ...]], ...]:
    """(doc, module, arguments, environment) of every command line in a ```bash block: lines
    starting with ./run.sh or python -m speechmusic_jax., after VAR=value assignments."""
    out = []
    for doc in DOCS:
        with open(os.path.join(REPO, doc), encoding="utf-8") as f:
            text = f.read()
        for block in re.findall(r"```bash\n(.*?)```", text, re.S):
            for line in block.replace("\\\n", " ").splitlines():
                command = _command(line)
                if command is not None:
                    out.append((doc, *command))
    return tuple(out)


@functools.cache
def inline_commands() -> tuple[tuple[str, str, tuple[str, ...], tuple], ...]:
    """The commands written in running text (`./run.sh ...`, `python -m speechmusic_jax....`),
    in the docs and BUILD.md: checked for their flags, not run."""
    out = []
    for doc in [*DOCS, "BUILD.md"]:
        with open(os.path.join(REPO, doc), encoding="utf-8") as f:
            text = re.sub(r"```.*?```", "", f.read(), flags=re.S).replace("\n", " ")
        for span in re.findall(r"`((?:\./run\.sh|python -m speechmusic_jax\.)[^`]+)`", text):
            command = _command(span)
            if command is not None and re.fullmatch(r"[a-z_]+", command[0]):  # not COMMAND
                out.append((doc, *command))
    return tuple(out)


def _id(command) -> str:
    doc, module, args, _ = command
    return f"{os.path.basename(doc)}: {module} {' '.join(args)}"[:80]


def run_sh_commands() -> list[str]:
    out = subprocess.run(["bash", "run.sh", "--help"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    return [ln.split()[0] for ln in out.split("commands:\n", 1)[1].splitlines() if ln.strip()]


def test_readme_is_short_and_shows_every_command():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        assert len(f.read().splitlines()) <= 200
    shown = {module for doc, module, _, _ in doc_commands() if doc == "README.md"}
    assert shown == set(run_sh_commands())


def test_readme_results_table_is_the_generated_one():
    """One source: the README's table is the report's headline table of docs/results.md."""
    from speechmusic_jax import report

    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    block = readme.split(report.README_BEGIN + "\n")[1].split("\n" + report.README_END)[0]
    with open(os.path.join(REPO, "docs", "results.md"), encoding="utf-8") as f:
        results = f.read()
    assert results.startswith(report.MARKER) and block in results


# ------------------------------------------------------------------------- every flag exists

_FLAGS_SCRIPT = """
import importlib, json, sys
from absl import flags
from speechmusic_jax import cli
cli.host_memory_flag()
base = set(flags.FLAGS) | {"help", "helpshort", "helpfull"}  # absl.app adds these
out = {}
for name in sys.argv[1:]:
    module = importlib.import_module("speechmusic_jax." + name)
    module.define_flags()
    new = set(flags.FLAGS) - base
    out[name] = sorted(new | base)
    for flag in new:
        delattr(flags.FLAGS, flag)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def module_flags():
    """Every module command's flags (absl's own and --host_memory included), read in one
    process by defining each command's flags in turn."""
    modules = sorted({m for _, m, _, _ in doc_commands() + inline_commands()
                      if m not in BUILT_IN})
    r = subprocess.run([sys.executable, "-c", _FLAGS_SCRIPT, *modules], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return {name: set(flags) for name, flags in json.loads(r.stdout).items()}


def _config_has(cfg, dotted: str) -> bool:
    node = cfg
    for part in dotted.split("."):
        try:
            node = node[part]
        except (KeyError, TypeError):
            return False
    return True


def test_every_flag_in_the_docs_exists(module_flags):
    from speechmusic_jax import config as config_lib

    cfg = config_lib.load_experiment(os.path.join(REPO, "experiments", "default.py"), None)
    missing = []
    for doc, module, args, _ in doc_commands() + inline_commands():
        if module in BUILT_IN:
            continue
        assert module in module_flags, f"{doc}: no command {module}"
        for arg in args:
            if not arg.startswith("--"):
                continue
            name = arg[2:].split("=", 1)[0]
            if name.startswith("config."):
                ok = "config" in module_flags[module] and _config_has(cfg, name[7:])
            elif name.startswith("set="):
                ok = True
            else:
                ok = name in module_flags[module] or (
                    name.startswith("no") and name[2:] in module_flags[module])
            if module == "sweep" and name == "set":  # --set=FIELD=VALUE: a config field
                ok = _config_has(cfg, arg.split("=", 2)[1])
            if not ok:
                missing.append(f"{doc}: {module} {arg}")
    assert not missing, "flags the docs name that the command lacks:\n" + "\n".join(missing)


def test_the_flag_check_catches_a_misspelt_flag(module_flags):
    assert "segments" in module_flags["predict"] and "segmnets" not in module_flags["predict"]
    assert {"runs", "readme", "host_memory", "helpshort"} <= module_flags["report"]  # all kinds
    from speechmusic_jax import config as config_lib

    cfg = config_lib.load_experiment(os.path.join(REPO, "experiments", "default.py"), None)
    assert _config_has(cfg, "train.early_stopping.patience")
    assert not _config_has(cfg, "train.early_stoping.patience")


def test_run_sh_test_lines_name_files_that_exist():
    for doc, module, args, _ in doc_commands():
        if module == "test":
            for arg in args:
                if arg.startswith("tests/"):
                    assert os.path.exists(os.path.join(REPO, arg)), f"{doc}: {arg}"


# --------------------------------------------------------------------- dry runs: train, sweep


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from tiny_run import tiny_run as make

    return make(tmp_path_factory)


# Suite time: a command whose flag names are all in an earlier command of the suite (the same
# command, other values: every flag and field is checked above) runs with the soak tests
# (-m slow), as does every but the first command of a module that takes long; -m slow runs all.
HEAVY = ("crossval", "benchmark", "segment_bench", "ship")


def _params(modules):
    fast: dict[str, list[set]] = {}
    for command in doc_commands():
        _, module, args, _ = command
        if module not in modules:
            continue
        names = {a.split("=")[0] for a in args if a.startswith("-")}
        earlier = fast.setdefault(module, [])
        slow = any(names <= seen for seen in earlier) or (module in HEAVY and bool(earlier))
        if not slow:
            earlier.append(names)
        yield pytest.param(command, marks=[pytest.mark.slow] if slow else [], id=_id(command))


def _dry_runs():
    return _params(DRY_RUN)


@pytest.mark.parametrize("command", list(_dry_runs()))
def test_doc_command_is_valid(command, tmp_path, request):
    doc, module, args, env = command
    args = [re.sub(r"^--workdir=.*", f"--workdir={tmp_path}/w", a) for a in args]
    if any(a.startswith("--config.train.init_from=") for a in args):
        # --dry_run checks the pretrained run: a finished tiny run, and the tiny experiment
        # (its model) for the command's other flags.
        run = request.getfixturevalue("tiny_run")
        args = ["--config=experiments/default.py:tiny",
                *(f"--config.train.init_from={run}" if a.startswith("--config.train.init_from=")
                  else a for a in args if not a.startswith("--config=experiments/default.py"))]
    if module == "sweep":
        args = [a for a in args if not a.startswith("--data=")]
    r = subprocess.run([sys.executable, "-m", f"speechmusic_jax.{module}", "--dry_run", *args],
                       cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={**os.environ, **dict(env)})
    assert r.returncode == 0, f"{doc}: {r.stderr[-2000:]}"
    if module == "train":
        assert "config valid" in r.stderr


# ------------------------------------------------------------------ every other command runs


def localise(module, words, tiny_run, tmp):
    """The docs' command with its paths replaced by a tiny run, fake data of the named kind
    and temporary outputs, and its sizes shrunk (folds, batch sizes, epochs, minutes)."""
    from audio_fixtures import (
        make_folder_tree,
        make_gtzan_tree,
        make_manifest_tree,
        make_musan_tree,
        write_class_files,
    )

    from speechmusic_jax import shipped

    makers = {"folder": make_folder_tree, "gtzan": make_gtzan_tree, "musan": make_musan_tree,
              "manifest": make_manifest_tree}
    args = []
    for arg in words:
        name, _, value = arg.partition("=")
        if name in ("--workdir", "--model", "--runs", "--config.train.init_from"):
            if value == "pretrained" and shipped.is_shipped_model(shipped.PACKAGE_DIR):
                pass  # the real shipped model; until one is shipped, the tiny run stands in
            elif value.startswith("runs/default") or name != "--workdir" or module in (
                    "ship", "segment_bench"):
                value = tiny_run
            else:
                value = str(tmp / "work")
        elif name in ("--data", "--score") and ":" in value:
            kind = value.split(":")[0]
            value = f"{kind}:{makers[kind](tmp / f'{kind}{len(args)}', per_class=12)}"
        elif name in ("--output", "--plot", "--json"):
            value = str(tmp / os.path.basename(value))
        elif name == "--split":
            value = (os.path.join(tiny_run, "split.csv") if value.endswith(".csv") else value)
        elif name == "--readme":
            with open(os.path.join(REPO, value), encoding="utf-8") as f:
                text = f.read()
            (tmp / "README.md").write_text(text)
            value = str(tmp / "README.md")
        elif name in ("--benchmarks", "--sweeps", "--crossval"):
            continue  # what only a long benchmark, sweep or CV writes; test_report reads them
        elif name == "--folds":
            value = "2"
        elif name == "--batch_sizes":
            value = "1,8"
        elif name == "--minutes":
            value = "1"
        elif name == "--config" and module in ("crossval", "benchmark"):
            continue  # the tiny experiment below: any network, in seconds
        elif not arg.startswith("-") and module == "predict":  # audio files and folders
            if arg.endswith("/"):
                write_class_files(tmp / arg, "music", 2)
            else:
                write_class_files(tmp, "speech", 1, nested=False, prefix=arg + "_")
                os.replace(next(p for p in tmp.iterdir() if p.name.startswith(arg + "_")),
                           tmp / arg)
            args.append(str(tmp / arg))
            continue
        args.append(f"{name}={value}" if value else name)
    if module == "ship" and not any(a.startswith("--output=") for a in args):
        args.append(f"--output={tmp / 'shipped'}")  # never into the package
    if module in ("crossval", "benchmark"):
        args.insert(0, "--config=experiments/default.py:tiny")  # before any --config.FIELD
    if module == "crossval":
        args += ["--config.train.epochs=1"]
    if module == "benchmark":
        args += ["--steps=3", "--epochs=2"]
    return args


def _runnable():
    modules = {m for _, m, _, _ in doc_commands()} - set(BUILT_IN) - set(DRY_RUN)
    for param in _params(modules):
        _, module, args, _ = param.values[0]
        if module == "benchmark" and "--compare=torch" in args:  # .ci/bench.sh's environment
            param = pytest.param(*param.values, marks=[pytest.mark.slow], id=param.id)
        yield param


@pytest.mark.parametrize("command", list(_runnable()))
def test_doc_command_runs(command, tiny_run, tmp_path):
    doc, module, words, env = command
    if module == "benchmark" and "--compare=torch" in words:
        pytest.importorskip("torch")
    args = localise(module, words, tiny_run, tmp_path)
    r = subprocess.run([sys.executable, "-m", f"speechmusic_jax.{module}", *args], cwd=REPO,
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, **dict(env)})
    assert r.returncode == 0, f"{doc}: {module} {args}\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr


# ---------------------------------------------------------------------------- Python blocks


def test_every_python_block_parses_and_imports_what_exists():
    """The ```python blocks (run whole where they are cheap: test_sweep runs docs/sweeps.md's)
    name only modules and functions the package has."""
    import ast
    import importlib

    blocks = 0
    for doc in DOCS:
        with open(os.path.join(REPO, doc), encoding="utf-8") as f:
            for block in re.findall(r"```python\n(.*?)```", f.read(), re.S):
                blocks += 1
                tree = ast.parse(block, filename=doc)
                for node in ast.walk(tree):
                    if isinstance(node, ast.ImportFrom) and node.module.startswith("speechmusic"):
                        module = importlib.import_module(node.module)
                        for alias in node.names:
                            assert hasattr(module, alias.name), f"{doc}: {node.module}.{alias.name}"
    assert blocks >= 3


def test_every_config_field_the_docs_name_exists():
    from speechmusic_jax import config as config_lib

    cfg = config_lib.load_experiment(os.path.join(REPO, "experiments", "default.py"), None)
    missing = []
    for doc in DOCS:
        with open(os.path.join(REPO, doc), encoding="utf-8") as f:
            text = f.read()
        for field in re.findall(r"`((?:model|train|data|optimizer)\.[a-z_.0-9]+)", text):
            if not _config_has(cfg, field.rstrip(".")):
                missing.append(f"{doc}: {field}")
    assert not missing, "fields the docs name that the config lacks:\n" + "\n".join(missing)
