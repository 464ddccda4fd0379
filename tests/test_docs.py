"""The documentation runs: every ```python block of README.md and docs/*.md executes as pasted (in an
empty folder) and prints the output shown under it; every `vaekit ...` command shown parses; and the
fast digits sessions of the docs run for real and print what the docs show (numbers with a decimal
point masked, as they move with threads and machines; warnings left out, as they go to stderr).
`python tests/test_docs.py --write` reruns them all and puts what they print into the docs."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from vaekit.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FLOAT = re.compile(r"[-+]?\d+\.\d+(?:e[-+]?\d+)?")
# Doc sessions run for real: (file, first command of each block), in the order the doc gives them.
REAL_SESSIONS = {
    "docs/uses.md": ["vaekit train --latent-dim 2 --hidden 256 --epochs 30 --out runs/digits --quiet",
                     "vaekit interpolate runs/digits", "vaekit encode runs/digits"],
    "docs/evaluation.md": ["vaekit train --out runs/digits --epochs 5 --threads 1 --quiet"],
}
SHELL_COMMANDS = {"head", "ls"}  # harmless commands a real session may also run


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    body: tuple[int, int] = (0, 0)  # 0-based [first, last + 1) lines of its text in the file
    output: str | None = None  # the plain block right under it, if any (what it prints)
    output_body: tuple[int, int] | None = None  # the output's lines, as `body`

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """Fenced blocks in order; a plain block that starts on the line after another block's closing
    fence is that block's output."""
    out: list[Block] = []
    lines = path.read_text().splitlines()
    i, closed_at = 0, -2
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        block = Block(path, i + 1, m.group(1), "\n".join(lines[i + 1:end]) + "\n", (i + 1, end))
        if block.lang == "" and closed_at == i - 1 and out and out[-1].output is None:
            out[-1].output, out[-1].output_body = block.text, block.body
        else:
            out.append(block)
        closed_at, i = end, end + 1
    return out


ALL_BLOCKS = [b for path in DOCS for b in blocks(path)]
PYTHON = [b for b in ALL_BLOCKS if b.lang == "python"]


def commands(block: Block) -> list[tuple[str, list[str]]]:
    """(command, its expected output lines) of a shell block: `$ ` lines (console style), or every
    line of a ```bash block; `a && b` is two commands."""
    out: list[tuple[str, list[str]]] = []
    for line in block.text.splitlines():
        if line.startswith("$ ") or (block.lang == "bash" and line.strip()):
            for part in line.removeprefix("$ ").split("&&"):
                out.append((part.strip(), []))
        elif out:
            out[-1][1].append(line)
    return out


def vaekit_commands() -> list[tuple[str, str]]:
    return [(b.name, cmd) for b in ALL_BLOCKS if b.lang != "python"
            for cmd, _ in commands(b) if cmd.startswith("vaekit ")]


def comparable(text: str) -> list[str]:
    """Words of a command's output with decimal numbers masked and warning lines left out."""
    kept = [line for line in text.splitlines() if not line.lstrip().startswith("warning")]
    return FLOAT.sub("<num>", "\n".join(kept)).split()


def test_the_docs_have_snippets_to_check():
    assert len(PYTHON) >= 4 and len(vaekit_commands()) >= 20
    assert {b.path.name for b in PYTHON} >= {"README.md", "uses.md", "evaluation.md"}


@pytest.mark.parametrize("block", PYTHON, ids=[b.name for b in PYTHON])
def test_python_snippet_runs_as_pasted(block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an empty folder: the snippet makes whatever it uses
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(block.text, block.name, "exec"), {"__name__": "__main__"})
    if block.output is not None:
        assert comparable(printed.getvalue()) == comparable(block.output), block.name


@pytest.mark.parametrize("where, command", vaekit_commands(), ids=[f"{w} {c[:60]}" for w, c in
                                                                   vaekit_commands()])
def test_vaekit_command_in_the_docs_parses(where, command):
    argv = shlex.split(command, comments=True)[1:]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"{where}: `{command}` does not parse (exit {e.code})")
    assert callable(args.run)


def run_session(doc: str, capsys=None):
    """Yield (block, command, expected lines, printed text) for the doc's chosen sessions, run in
    order in the current folder (vaekit commands in-process)."""
    chosen = [b for b in blocks(ROOT / doc) if b.lang != "python"
              and commands(b) and any(commands(b)[0][0].startswith(c) for c in REAL_SESSIONS[doc])]
    assert len(chosen) == len(REAL_SESSIONS[doc]), [b.name for b in chosen]
    for block in chosen:
        for command, expected in commands(block):
            argv = shlex.split(command, comments=True)
            if argv[0] == "vaekit":
                if capsys is None:  # run as a script: capture by hand
                    out, err = io.StringIO(), io.StringIO()
                    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                        code = main(argv[1:])
                    printed = out.getvalue() + err.getvalue()
                else:
                    code = main(argv[1:])
                    got = capsys.readouterr()
                    printed = got.out + got.err
                assert code == 0, f"{block.name}: `{command}`: {printed}"
            else:
                assert argv[0] in SHELL_COMMANDS, f"{block.name}: will not run `{command}`"
                printed = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
            yield block, command, expected, printed


@pytest.mark.parametrize("doc", list(REAL_SESSIONS))
def test_doc_session_prints_what_the_doc_shows(doc, tmp_path, monkeypatch, capsys):
    """The doc's commands, run in order in an empty folder, print what the doc shows under them."""
    monkeypatch.chdir(tmp_path)
    for block, command, expected, printed in run_session(doc, capsys):
        assert comparable(printed) == comparable("\n".join(expected)), \
            f"{block.name}: `{command}` printed:\n{printed}"


def test_docs_say_when_figures_are_comparable_and_the_reason_holds():
    """Issue 8 item 19: "ELBOs are comparable across likelihoods" was untrue. The docs now say a
    Bernoulli on grey levels is no likelihood of them; the reason, checked: over digits' 17 grey
    levels v/16 its exp(log_prob) does not sum to 1 (for any logit), while on {0, 1} it does."""
    import torch

    from vaekit.likelihoods import build_likelihood

    text = " ".join(p.read_text() for p in DOCS)
    assert "comparable across likelihoods" not in text
    for phrase in ("pmf of binary data", "dequantized", "same examples with the same"):
        assert phrase in " ".join(text.split()), phrase
    bernoulli = build_likelihood("bernoulli", 1, 1.0)
    for logit in (-2.0, 0.0, 1.5):
        logits = torch.full((17, 1), logit)
        grey = torch.arange(17.0)[:, None] / 16
        assert float(bernoulli.log_prob(grey, logits).exp().sum()) > 1.5
        binary = torch.tensor([[0.0], [1.0]])
        assert abs(float(bernoulli.log_prob(binary, logits[:2]).exp().sum()) - 1) < 1e-6


def test_write_puts_each_output_in_its_place(tmp_path):
    """--write's pieces: a block's body span holds its text (and its output's span the output), and
    session_text puts each command's printed lines under its `$ ` line, old output dropped."""
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n```python\nprint(1)\n```\n```\nold\n```\n```console\n$ a && b\nx\n"
                   "$ c\ny\n```\n")
    python, session = blocks(doc)
    lines = doc.read_text().splitlines()
    assert lines[slice(*python.body)] == ["print(1)"] and lines[slice(*python.output_body)] == ["old"]
    assert lines[slice(*session.body)] == ["$ a && b", "x", "$ c", "y"]
    assert session_text(session, ["A\n", "B1\nB2\n", "C\n"]) == "$ a && b\nA\nB1\nB2\n$ c\nC\n"


def python_output(block: Block) -> str:
    """What a python block prints, run as the test runs it (in an empty folder)."""
    import os
    import tempfile

    here = os.getcwd()
    os.chdir(tempfile.mkdtemp(prefix="vaekit-docs-"))
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(block.text, block.name, "exec"), {"__name__": "__main__"})
    finally:
        os.chdir(here)
    return printed.getvalue()


def session_text(block: Block, printed: list[str]) -> str:
    """The block's text with each `$ ` line followed by what its commands printed (in order; a line
    `a && b` is followed by both outputs), the old output lines dropped."""
    out: list[str] = []
    for line in block.text.splitlines():
        if line.startswith("$ ") or (block.lang == "bash" and line.strip()):
            out.append(line)
            for _ in line.removeprefix("$ ").split("&&"):
                out.extend(printed.pop(0).rstrip("\n").splitlines())
    assert not printed, block.name
    return "\n".join(out) + "\n"


def write_outputs() -> None:
    """Rerun every python block that has an output block and every session of REAL_SESSIONS, and
    replace the outputs in README.md and docs/*.md with what they printed (real numbers)."""
    import os
    import tempfile

    edits: dict[Path, list[tuple[tuple[int, int], str]]] = {}  # file -> (lines to replace, new text)
    for block in PYTHON:
        if block.output_body is not None:
            print(f"running {block.name}", file=sys.stderr)
            edits.setdefault(block.path, []).append((block.output_body, python_output(block)))
    here = os.getcwd()
    for doc in REAL_SESSIONS:
        os.chdir(tempfile.mkdtemp(prefix="vaekit-docs-"))  # an empty folder per doc, as in the test
        printed: dict[str, tuple[Block, list[str]]] = {}
        for block, command, _, text in run_session(doc):
            print(f"ran {block.name}: {command}", file=sys.stderr)
            printed.setdefault(block.name, (block, []))[1].append(text)
        os.chdir(here)
        for block, texts in printed.values():
            edits.setdefault(block.path, []).append((block.body, session_text(block, texts)))
    for path, changes in edits.items():
        lines = path.read_text().splitlines()
        for (start, end), text in sorted(changes, reverse=True):  # bottom up: earlier spans stay put
            lines[start:end] = text.rstrip("\n").splitlines()
        path.write_text("\n".join(lines) + "\n")
        print(f"wrote {path.relative_to(ROOT)} ({len(changes)} outputs)", file=sys.stderr)


if __name__ == "__main__":
    # python tests/test_docs.py: print the sessions' real output; --write: put it (and every python
    # block's output) into the docs
    import os
    import tempfile

    if sys.argv[1:] == ["--write"]:
        write_outputs()
    else:
        for doc in REAL_SESSIONS:
            os.chdir(tempfile.mkdtemp(prefix="vaekit-docs-"))
            print(f"## {doc}")
            for _, command, _, printed in run_session(doc):
                print(f"$ {command}\n{printed}", end="")
