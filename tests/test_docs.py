"""The docs cannot drift: every relative link and image in README.md, docs/ and mkdocs.yml resolves, and every `--flag`
the docs give a script exists in that script's `--help`.

A flag belongs to the script of its command (`python X.py ... --flag`, `torchrun ... X.py --flag`, in code blocks and in
inline code); a flag on its own in the prose belongs to one of the scripts that page runs.
"""

import contextlib
import glob
import importlib.util
import io
import os
import re
import shlex
import sys

import pytest
import tyro

from conftest import REPO_ROOT

DOCS = [os.path.join(REPO_ROOT, "README.md"), *sorted(glob.glob(os.path.join(REPO_ROOT, "docs", "*.md")))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
CODE_BLOCK = re.compile(r"```[a-z]*\n(.*?)```", re.S)
INLINE_CODE = re.compile(r"`([^`]+)`")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
LAUNCHERS = {"python", "torchrun", "srun"}  # commands whose script (the first X.py) takes the flags after it
# torchrun's own flags, named in the prose about its launcher
OTHER_PROGRAMS_FLAGS = {"--shutdown-timeout", "--nproc-per-node", "--standalone"}


def slug(heading):
    """GitHub's (and mkdocs' toc) anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(path):
    with open(path) as f:
        return {slug(line.lstrip("#")) for line in f if line.startswith("#") and not line.startswith("#!")}


def read(path):
    with open(path) as f:
        return f.read()


def test_every_relative_link_and_image_resolves():
    broken = []
    for doc in DOCS:
        for target in LINK.findall(read(doc)):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            resolved = os.path.normpath(os.path.join(os.path.dirname(doc), path)) if path else doc
            if not os.path.exists(resolved):
                broken.append(f"{os.path.relpath(doc, REPO_ROOT)}: {target} (no such file)")
            elif anchor and resolved.endswith(".md") and anchor not in anchors(resolved):
                broken.append(f"{os.path.relpath(doc, REPO_ROOT)}: {target} (no such heading)")
    nav = re.findall(r":\s*(\S+\.md)\s*$", read(os.path.join(REPO_ROOT, "mkdocs.yml")), re.M)
    broken += [f"mkdocs.yml: {page}" for page in nav if not os.path.exists(os.path.join(REPO_ROOT, "docs", page))]
    assert len(nav) == len(DOCS) - 1  # every page in docs/ is in the site's navigation
    assert not broken, broken


def is_command_line_script(path):
    """A repository script with a command line (tyro's), not a module or a test."""
    path = os.path.join(REPO_ROOT, path)
    pattern = r"^ +(args = tyro\.cli\(Args\)|command = tyro\.extras\.subcommand_cli_from_dict\(SUBCOMMANDS\))"
    return os.path.isfile(path) and re.search(pattern, read(path), re.M) is not None


def commands(text):
    """(script, flags) of every command that runs a repository script, in code blocks and in inline code."""
    found = []
    blocks = [block.replace("\\\n", " ") for block in CODE_BLOCK.findall(text)]
    lines = [line for block in blocks for line in block.splitlines()] + INLINE_CODE.findall(CODE_BLOCK.sub("", text))
    for line in lines:
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:
            continue
        scripts = [i for i, token in enumerate(tokens) if token.endswith(".py")]
        if scripts and (tokens[0] in LAUNCHERS or is_command_line_script(tokens[0])):
            flags = [t.split("=")[0] for t in tokens[scripts[0] + 1 :] if FLAG.fullmatch(t.split("=")[0])]
            if flags or is_command_line_script(tokens[scripts[0]]):  # a script without a command line takes no flags
                found.append((tokens[scripts[0]], flags))
    return found


def prose_flags(text):
    """Flags in the page outside any command: in the prose and in inline code that is only flags and values."""
    flags = set()
    for span in INLINE_CODE.findall(CODE_BLOCK.sub("", text)):
        if span.startswith("--"):
            flags.update(FLAG.findall(span))
    outside_code = INLINE_CODE.sub("", CODE_BLOCK.sub("", text))
    return flags | set(FLAG.findall(outside_code))


def script_help_texts():
    """The `--help` of every repository script the docs run: what tyro prints for its Args, built in this process."""
    texts = {}
    for script in {script for doc in DOCS for script, _ in commands(read(doc))}:
        if not is_command_line_script(script):
            continue
        # its definitions, without running it (a module of its own, so that tyro reads the docstrings from its source)
        name = "docs_help_" + re.sub(r"\W", "_", script[: -len(".py")])
        spec = importlib.util.spec_from_file_location(name, os.path.join(REPO_ROOT, script))
        module = sys.modules[name] = importlib.util.module_from_spec(spec)
        sys.path.insert(0, os.path.dirname(spec.origin))  # as when it runs: its folder first on the path
        try:
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(os.path.dirname(spec.origin))
        output = io.StringIO()
        for command in getattr(module, "SUBCOMMANDS", {"": getattr(module, "Args", None)}).values():  # each subcommand's
            with contextlib.redirect_stdout(output), pytest.raises(SystemExit):
                tyro.cli(command, args=["--help"], prog=script)
        texts[script] = output.getvalue()
    return texts


@pytest.fixture(scope="module")
def help_texts():
    return script_help_texts()


def test_every_flag_the_docs_name_is_in_its_scripts_help(help_texts):
    missing = []
    for doc in DOCS:
        text, name = read(doc), os.path.relpath(doc, REPO_ROOT)
        page_scripts = set()
        for script, flags in commands(text):
            if script not in help_texts:
                missing.append(f"{name}: {script} (no such script)")
                continue
            page_scripts.add(script)
            missing += [f"{name}: {script} {flag}" for flag in flags if flag not in FLAG.findall(help_texts[script])]
        for flag in prose_flags(text) - OTHER_PROGRAMS_FLAGS:
            if not any(flag in FLAG.findall(help_texts[script]) for script in page_scripts):
                missing.append(f"{name}: {flag} (in none of {sorted(page_scripts)})")
    assert not missing, missing


def test_the_flag_check_catches_a_flag_that_does_not_exist(help_texts):
    """The checker itself: a made-up flag and a flag of another script are both caught."""
    ((script, flags),) = commands("```bash\npython dqn_clip_cartpole.py --alpha 0.5 --render-quality 512 0\n```\n")
    assert script == "dqn_clip_cartpole.py" and flags == ["--alpha", "--render-quality"]
    help_flags = FLAG.findall(help_texts[script])
    assert "--alpha" in help_flags and "--render-quality" not in help_flags
    assert prose_flags("Use `--made-up 3` or --also-made-up; `python x.py --not-prose`.") == {"--made-up", "--also-made-up"}
