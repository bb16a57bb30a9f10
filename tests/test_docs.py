"""Every command in the README and ``docs/`` runs, in a dry form; every relative link resolves.

The shell blocks (```` ```bash ````, ``sh``, ``shell``, ``console``) of ``README.md``, ``docs/*.md`` and
``experiments/*/README.md``, and the inline code spans there that start like a command
(``python -m steerable…``, ``make …``), are split into commands and checked without training:

- ``python -m steerable.train|evaluate|predict …`` (and ``steerable-train`` …, ``make train ARGS=…``):
  the config is composed with Hydra's compose API from ``conf/`` with the command's overrides (each
  value of a ``-m`` sweep once), resolved, and checked like a real run checks it
  (``check_override_choices``, ``check_config``: every ``_target_`` imports and accepts its
  arguments); Hydra's launcher and sweeper targets must import; mandatory ``???`` values must be given.
- ``python -m steerable.bench …``, ``steerable.check``, ``steerable.plot``, ``steerable.bench.report``:
  their own argument parsers see the command's arguments.
- ``python path/to/script.py …``: the script exists and answers ``--help``; ``python -c …`` compiles.
- ``make TARGET``: ``make -n TARGET`` succeeds. ``bash FILE``: the file exists and ``bash -n`` parses it.
- Installers and cluster tools (``pip``, ``conda``, ``wandb``, ``scontrol``, …) are accepted unrun.

Anything else fails, naming the file and line: a new kind of command needs a checker here. ``…`` and
``...`` tokens stand for "more arguments" and are skipped.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import json
import re
import runpy
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
PYTHONS = {"python", "python3", "python3.11", "python3.12", "python3.13", ".venv/bin/python", "$(PY)"}
ENTRY_POINTS = {"steerable-train": "steerable.train", "steerable-evaluate": "steerable.evaluate",
                "steerable-predict": "steerable.predict"}
HYDRA_MODULES = {"steerable.train": "train", "steerable.evaluate": "evaluate", "steerable.predict": "predict"}
# documented but not run: installers, environment managers, cluster and W&B tools
EXTERNAL = {"pip", "pip3", "conda", "apt-get", "apt", "sudo", "git", "cd", "export", "source", "wandb",
            "sbatch", "srun", "squeue", "scancel", "scontrol", "sinfo", "nvidia-smi", "module"}
ELLIPSES = {"…", "...", "<…>"}
INLINE_COMMAND = re.compile(r"^(python3? (-m steerable|experiments/)|\.venv/bin/python |steerable-\w+( |$)"
                            r"|make [a-z]|bash )")


class DocCommandError(AssertionError):
    """A documented command that would not run."""


@dataclass(frozen=True)
class Command:
    """One shell command line from a Markdown file (continuations joined, comments dropped)."""

    source: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.text}"


# --- extraction -------------------------------------------------------------------------------------

FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)$")


def fenced_blocks(markdown: str) -> list[tuple[str, int, list[str]]]:
    """``(language, first line number, lines)`` of every fenced code block."""
    blocks, lines, i = [], markdown.splitlines(), 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, language = match["fence"], (match["info"].split() or [""])[0].lower()
        start, body = i + 2, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        blocks.append((language, start, body))
        i += 1
    return blocks


def shell_commands(markdown: str, source: str = "<text>") -> list[Command]:
    """The command lines of the shell blocks: ``\\`` continuations joined, ``$ `` prompts removed."""
    commands = []
    for language, start, body in fenced_blocks(markdown):
        if language not in SHELL_LANGUAGES:
            continue
        text, first = "", None
        for offset, line in enumerate(body):
            if language == "console":
                if not line.startswith("$ ") and not text:
                    continue  # program output
                line = line[2:] if line.startswith("$ ") else line
            if first is None:
                first = start + offset
            stripped = line.rstrip()
            if stripped.endswith("\\"):
                text += stripped[:-1] + " "
                continue
            text += stripped
            if text.strip() and not text.strip().startswith("#"):
                commands.append(Command(source, first, text.strip()))
            text, first = "", None
    return commands


def _without_fences(markdown: str) -> list[tuple[int, str]]:
    """``(line number, line)`` of the lines outside fenced code blocks."""
    inside, fence, kept = False, "", []
    for number, line in enumerate(markdown.splitlines(), start=1):
        match = FENCE.match(line)
        if match and (not inside or match["fence"].startswith(fence)):
            inside, fence = (not inside), match["fence"]
            continue
        if not inside:
            kept.append((number, line))
    return kept


def inline_commands(markdown: str, source: str = "<text>") -> list[Command]:
    """Inline code spans outside code blocks that start like a command (``python -m steerable…``)."""
    commands = []
    for number, line in _without_fences(markdown):
        for span in re.findall(r"(?<!`)`([^`]+)`(?!`)", line):
            if INLINE_COMMAND.match(span.strip()):
                commands.append(Command(source, number, span.strip()))
    return commands


def split_commands(text: str) -> list[list[str]]:
    """Tokens of each simple command of a line (split at ``&&``, ``||``, ``;``, ``|``), comments dropped."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars="|&;")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = list(lexer)
    except ValueError as err:
        raise DocCommandError(f"cannot parse as a shell command ({err})") from None
    commands, current = [], []
    for token in tokens:
        if token in {"&&", "||", ";", "|", "&"}:
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    return [c for c in commands if c]


# --- checkers -------------------------------------------------------------------------------------


def check_line(text: str) -> None:
    """Check every simple command of one documented command line; raise :class:`DocCommandError`."""
    for tokens in split_commands(text):
        check_tokens(tokens)


def check_tokens(tokens: list[str]) -> None:
    while tokens and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", tokens[0]):  # VAR=value prefixes
        tokens = tokens[1:]
    if not tokens:
        return
    program, args = tokens[0], [t for t in tokens[1:] if t not in ELLIPSES]
    if program in PYTHONS:
        check_python(args)
    elif program in ENTRY_POINTS:
        check_module(ENTRY_POINTS[program], args)
    elif program == "make":
        check_make(args)
    elif program in ("bash", "sh"):
        check_shell_script(args)
    elif program.endswith(".sh") and "/" in program:  # a repository script run directly
        check_shell_script([program, *args])
    elif program not in EXTERNAL:
        raise DocCommandError(f"no dry-run check for {program!r}: add one to tests/test_docs.py")


def check_python(args: list[str]) -> None:
    if not args:
        raise DocCommandError("bare `python`")
    if args[0] == "-m" and len(args) > 1:
        check_module(args[1], args[2:])
    elif args[0] == "-c" and len(args) > 1:
        try:
            compile(args[1], "<python -c>", "exec")
        except SyntaxError as err:
            raise DocCommandError(f"python -c: {err}") from None
    elif args[0].endswith(".py"):
        check_script(args[0])
    else:
        raise DocCommandError(f"no dry-run check for `python {' '.join(args)}`")


def check_module(module: str, args: list[str]) -> None:
    if module in HYDRA_MODULES:
        compose_command(HYDRA_MODULES[module], args)
    elif module == "steerable.bench":
        run_parser(lambda: _bench_parse_args()(args), f"python -m steerable.bench {' '.join(args)}")
    elif module == "steerable.bench.report":
        check_bench_report(args)
    elif module == "steerable.check":
        check_equivariance_args(args)
    elif module == "steerable.plot":
        check_plot_args(args)
    elif module in ("pip", "pytest", "venv"):
        return
    else:
        raise DocCommandError(f"no dry-run check for `python -m {module}`: add one to tests/test_docs.py")


def run_parser(parse, what: str) -> None:
    """Run an argument parser; ``--help`` (exit 0) passes, any other exit fails with the parser's message."""
    errors = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(errors):
            parse()
    except SystemExit as err:
        if err.code not in (0, None):
            message = err.code if isinstance(err.code, str) else errors.getvalue().strip().splitlines()[-1:]
            raise DocCommandError(f"{what}: {message}") from None


def _bench_parse_args():
    from steerable.bench.__main__ import parse_args
    return parse_args


def check_bench_report(args: list[str]) -> None:
    from steerable.bench.report import markdown
    if len(args) != 1 or not (REPO / args[0]).is_file():
        raise DocCommandError(f"steerable.bench.report needs an existing report JSON, got {args}")
    markdown(json.loads((REPO / args[0]).read_text()))


def check_equivariance_args(args: list[str]) -> None:
    from steerable.check import parse_args
    from steerable.groups import valid_group_names
    options: dict[str, str] = {}
    run_parser(lambda: options.update(parse_args(args)), f"python -m steerable.check {' '.join(args)}")
    if options.get("dim") not in ("2", "3", "all"):
        raise DocCommandError(f"steerable.check: dim must be 2, 3 or all, got {options.get('dim')}")
    names = set(valid_group_names(2)) | set(valid_group_names(3))
    if options["group"] != "all" and options["group"] not in names:
        raise DocCommandError(f"steerable.check: unknown group {options['group']!r}")


def check_plot_args(args: list[str]) -> None:
    from steerable.plot import OPTIONS
    keys = {arg.split("=", 1)[0] for arg in args}
    if not all("=" in arg for arg in args) or not keys <= set(OPTIONS) or "run_dir" not in keys:
        raise DocCommandError(f"steerable.plot takes run_dir=… and {sorted(OPTIONS)}, got {args}")


@functools.cache
def check_script(path: str) -> None:
    """The script exists and its argument parser answers ``--help`` (run in this process: fast)."""
    script = REPO / path
    if not script.is_file():
        raise DocCommandError(f"no such script: {path}")
    argv = sys.argv
    sys.argv = [str(script), "--help"]
    def run() -> None:
        runpy.run_path(str(script), run_name="__main__")
        raise DocCommandError(f"{path} has no argument parser: --help did not exit")

    try:
        run_parser(run, f"{path} --help")
    finally:
        sys.argv = argv


@functools.cache
def make_dry_run(target: str) -> str | None:
    """``make -n TARGET``'s error output, or None when the target exists and its recipe expands."""
    done = subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True, text=True, timeout=60)
    return None if done.returncode == 0 else (done.stderr.strip() or done.stdout.strip())


def check_make(args: list[str]) -> None:
    targets = [a for a in args if "=" not in a and not a.startswith("-")]
    variables = dict(a.split("=", 1) for a in args if "=" in a)
    for target in targets or ["help"]:
        error = make_dry_run(target)
        if error is not None:
            raise DocCommandError(f"make {target}: {error}")
    if "train" in targets and variables.get("ARGS"):
        tokens = [t for t in shlex.split(variables["ARGS"]) if t not in ELLIPSES]
        compose_command("train", tokens)


def check_shell_script(args: list[str]) -> None:
    if not args or not (REPO / args[0]).is_file():
        raise DocCommandError(f"no such script: {args[:1]}")
    done = subprocess.run(["bash", "-n", str(REPO / args[0])], capture_output=True, text=True)
    if done.returncode != 0:
        raise DocCommandError(f"bash -n {args[0]}: {done.stderr.strip()}")


# --- Hydra ------------------------------------------------------------------------------------------

FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-name", "-cn", "--config-dir", "-cd"}
FLAGS = {"-m", "--multirun", "--resolve", "--info", "-i", "--help", "-h", "--hydra-help"}


def hydra_arguments(args: list[str]) -> tuple[list[str], bool]:
    """``(overrides, multirun)`` of a Hydra command line; unknown flags fail."""
    overrides, multirun, it = [], False, iter(args)
    for arg in it:
        if arg in ("-m", "--multirun"):
            multirun = True
        elif arg in FLAGS_WITH_VALUE:
            next(it, None)
        elif arg in FLAGS:
            continue
        elif arg.startswith("-") and not arg.startswith("--cfg="):
            raise DocCommandError(f"unknown Hydra flag {arg!r}")
        else:
            overrides.append(arg)
    return overrides, multirun


def sweep_variants(overrides: list[str], multirun: bool) -> list[list[str]]:
    """Override lists to compose: the command as is, or for ``-m`` enough jobs of the sweep that every
    value of every swept key is composed once (job k takes the k-th value of each sweep, cycling)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        raise DocCommandError(f"unparsable overrides: {err}") from None
    sweeps = {i: list(o.sweep_string_iterator()) for i, o in enumerate(parsed) if o.is_sweep_override()}
    if not multirun or not sweeps:
        return [overrides]  # a sweep without -m: compose refuses it, as a real run does
    jobs = max(len(values) for values in sweeps.values())
    return [[f"{parsed[i].get_key_element()}={sweeps[i][k % len(sweeps[i])]}" if i in sweeps else o
             for i, o in enumerate(overrides)] for k in range(jobs)]


def compose_command(config_name: str, args: list[str]) -> None:
    overrides, multirun = hydra_arguments(args)
    from steerable.config_checks import check_override_choices

    try:
        check_override_choices(overrides, CONF_DIR)
    except ValueError as err:
        raise DocCommandError(str(err)) from None
    for variant in sweep_variants(overrides, multirun):
        compose_and_check(config_name, tuple(variant))


@functools.cache
def compose_and_check(config_name: str, overrides: tuple[str, ...]) -> None:
    """Compose ``conf/<config_name>.yaml`` with ``overrides``, resolve it and check it like a run."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_class
    from omegaconf import OmegaConf, open_dict

    from steerable.config_checks import check_config
    from steerable.train import plain_config  # also registers the project's resolvers

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(REPO / "logs" / "docs-dry-run")
            cfg.hydra.runtime.cwd = str(REPO)
            cfg.hydra.job.num = 0
        HydraConfig.instance().set_config(cfg)
        job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        missing = sorted(OmegaConf.missing_keys(job))
        if missing:
            raise DocCommandError(f"mandatory values not given: {', '.join(missing)}")
        resolved = plain_config(cfg)
        if config_name == "train":
            check_config(resolved)
        for node in ("launcher", "sweeper"):
            target = OmegaConf.select(cfg, f"hydra.{node}._target_")
            if target:
                get_class(target)
    except DocCommandError:
        raise
    except Exception as err:  # Hydra/OmegaConf/ConfigError/ImportError: one line naming the problem
        message = f"{type(err).__name__}: {' '.join(str(err).split())[:600]}"
        raise DocCommandError(f"{config_name} {' '.join(overrides)}: {message}") from None


# --- links ----------------------------------------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\((?P<target><[^>]+>|[^)\s]+)(?:\s+\"[^\"]*\")?\)")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces → hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for _, line in _without_fences(markdown):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match[1])
            count = seen.get(base, 0)
            seen[base] = count + 1
            result.add(base if count == 0 else f"{base}-{count}")
    return result


def broken_links(path: Path, markdown: str | None = None) -> list[str]:
    """Relative links of a Markdown file whose file (inside the repository) or anchor is missing."""
    markdown = path.read_text() if markdown is None else markdown
    problems = []
    for number, line in _without_fences(markdown):
        line = re.sub(r"(?<!`)`[^`]+`(?!`)", "", line)  # inline code is not a link
        for match in LINK.finditer(line):
            target = match["target"].strip("<>")
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}:{number}: {target}"
            if not dest.is_relative_to(REPO):
                problems.append(f"{where} points outside the repository")
            elif file_part and not dest.exists():
                problems.append(f"{where} does not exist")
            elif anchor and dest.suffix == ".md":
                text = markdown if dest == path else dest.read_text()
                if anchor not in anchors(text):
                    problems.append(f"{where}: no heading with anchor #{anchor}")
    return problems


# --- the documents ------------------------------------------------------------------------------------


def documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")),
            *sorted((REPO / "experiments").glob("*/README.md"))]


def documented_commands() -> list[Command]:
    commands = []
    for path in documents():
        source, text = str(path.relative_to(REPO)), path.read_text()
        commands += shell_commands(text, source) + inline_commands(text, source)
    return commands


COMMANDS = documented_commands()


@pytest.mark.parametrize("command", COMMANDS, ids=[f"{c.source}:{c.line}" for c in COMMANDS])
def test_documented_command_runs_dry(command: Command):
    try:
        check_line(command.text)
    except DocCommandError as err:
        raise DocCommandError(f"{command}\n  -> {err}") from None


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(path: Path):
    assert broken_links(path) == []


# gitignored, per-machine files the docs tell the reader to create
UNTRACKED_PATHS = ("conf/local/",)
REPO_PATH = re.compile(r"^(steerable|conf|tests|experiments|docs|\.ci)/[\w/.-]+$")
PYTHON_NAME = re.compile(r"^(steerable(?:\.[A-Za-z_]\w*)+)(\(.*\))?$")


def code_spans(path: Path) -> list[tuple[int, str]]:
    return [(number, span.strip()) for number, line in _without_fences(path.read_text())
            for span in re.findall(r"(?<!`)`([^`]+)`(?!`)", line)]


def resolves(dotted: str) -> bool:
    """``steerable.a.b.name`` is a module or an attribute of one."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(REPO)))
def test_named_files_and_python_names_exist(path: Path):
    """Code spans naming a repository file (`steerable/groups.py`) or a Python name
    (`steerable.nn.ImplicitPointConv`) point at something that exists."""
    missing = []
    for number, span in code_spans(path):
        if REPO_PATH.match(span) and not span.startswith(UNTRACKED_PATHS) and not (REPO / span).exists():
            missing.append(f"{number}: {span}")
        name = PYTHON_NAME.match(span)
        if name and not resolves(name[1]):
            missing.append(f"{number}: {span}")
    assert missing == []


def test_docs_have_commands():
    """The extractor finds the README's commands (a broken fence would silently check nothing)."""
    readme = [tokens for c in COMMANDS if c.source == "README.md" for tokens in split_commands(c.text)]
    assert ["make", "install"] in readme and ["make", "test"] in readme
    assert any(tokens[:3] == ["python", "-m", "steerable.train"] for tokens in readme)


# --- self-tests of the extractor and the checkers ---------------------------------------------------

SAMPLE = """Intro with `python -m steerable.train experiment=nbody` inline.

```bash
make test         # fast suite
python -m steerable.train -m \\
  experiment=qm9_homo seed=0,1 \\
  trainer.max_epochs=1   # a comment
cd /tmp && make lint
```

```python
python -m steerable.train this_is=python_code
```
"""


def test_extractor_joins_continuations_and_drops_comments():
    block = shell_commands(SAMPLE, "sample.md")
    assert [c.text for c in block] == [
        "make test         # fast suite",
        "python -m steerable.train -m    experiment=qm9_homo seed=0,1    trainer.max_epochs=1   # a comment",
        "cd /tmp && make lint",
    ]
    assert block[1].line == 5
    assert split_commands(block[1].text) == [["python", "-m", "steerable.train", "-m", "experiment=qm9_homo",
                                               "seed=0,1", "trainer.max_epochs=1"]]
    assert split_commands(block[2].text) == [["cd", "/tmp"], ["make", "lint"]]
    assert [c.text for c in inline_commands(SAMPLE)] == ["python -m steerable.train experiment=nbody"]


def test_sweeps_are_composed_value_by_value():
    variants = sweep_variants(["experiment=qm9_homo,nbody", "seed=0,1,2", "logger=csv"], multirun=True)
    assert variants == [["experiment=qm9_homo", "seed=0", "logger=csv"],
                        ["experiment=nbody", "seed=1", "logger=csv"],
                        ["experiment=qm9_homo", "seed=2", "logger=csv"]]
    assert sweep_variants(["seed=0,1"], multirun=False) == [["seed=0,1"]]


def test_a_good_command_passes():
    check_line("WANDB_MODE=offline python -m steerable.train -m experiment=qm9_homo seed=0,1 logger=csv "
               "hydra.sweep.dir=logs/x --cfg job")


BROKEN = [
    "python -m steerable.train experiment=qm9_homo grup=so3",            # misspelt config group
    "python -m steerable.train experiment=qm9_homo group=so4",           # unknown group option
    "python -m steerable.train experiment=qm9_hom",                      # unknown experiment
    "python -m steerable.train experiment=qm9_homo model.kernal=implicit",   # misspelt key
    "python -m steerable.train experiment=qm9_homo +model.kernal=implicit",  # key the target does not take
    "python -m steerable.train experiment=qm9_homo model.kernel=foo",    # value outside the Literal
    "python -m steerable.train experiment=qm9_homo seed=0,1",            # a sweep without -m
    "python -m steerable.evaluate +dataset.batch_size=8",                # ckpt_path=??? not given
    "make no-such-target",
    "make train ARGS='grup=so3'",
    "python -m steerable.bench --no-such-flag",
    "python -m steerable.check group=so4",
    "python -m steerable.plot ckpt_path=x.ckpt",
    "python -m steerable.no_such_module",
    "python experiments/no_such/make_table.py",
    "python tests/helpers/runs.py",                                     # a script without a parser
    "frobnicate --now",
]


@pytest.mark.parametrize("text", BROKEN)
def test_a_broken_command_fails(text: str):
    with pytest.raises(DocCommandError):
        check_line(text)


def test_broken_links_are_found(tmp_path: Path):
    page = REPO / "docs" / "sample.md"  # never written: the text is passed in
    text = ("# Title\n## A section: `x`\n[ok](#a-section-x) [ok](install.md) [bad](nope.md) "
            "[bad anchor](install.md#nope) [outside](../../x.md) [web](https://example.org) `[code](x.md)`\n")
    problems = broken_links(page, text)
    assert len(problems) == 3, problems
    assert any("nope.md does not exist" in p for p in problems)
    assert any("#nope" in p for p in problems) and any("outside" in p for p in problems)


def test_missing_python_names_are_found():
    assert resolves("steerable.nn.ImplicitPointConv") and resolves("steerable.groups")
    assert not resolves("steerable.nn.NoSuchLayer") and not resolves("steerable.no_such_module")
