"""Every example of the README and of docs/*.md runs as shown (issue 22).

A *console block* is a fenced block with lines starting with ``$ ``: each such line is a
command (a line ending with ``\\`` goes on on the next), the lines after it, up to the next
command or the end of the fence, are what it prints (stdout and stderr together). The
commands of one page run in order in one bash, in a fresh empty directory, with a user's
environment and no input, as a reader would type them. A fenced block whose first line is
``# NAME`` (``# simulate.py``) is a file the page asks the reader to write: it is written
there when the page reaches it.

What a command prints is compared with what the page shows, figures that vary set aside
(:func:`normalise`); a line ``...`` stands for any lines, and ``...`` in a line for any
text. A command shown without output is run, its output not compared.

Markers, an HTML comment on the line before the fence (or anywhere, for the page):

* ``<!-- docs-test: skip (REASON) -->``: the block needs what a plain directory cannot
  give (a SLURM cluster, a Docker engine, a server); it is not run, and it is listed as a
  skipped test with its reason.
* ``<!-- docs-test: skip-page (REASON) -->``: the same for every block of the page.
* ``<!-- docs-test: any-order -->``: the block's output lines may come in any order
  (parallel tasks).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

from tests.conftest import user_environment

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: The longest a page's commands may take, all together.
PAGE_TIMEOUT = 45.0

_FENCE = re.compile(r"^(\s*)```")
_MARKER = re.compile(r"<!--\s*docs-test:\s*([a-z-]+)\s*(?:\((.*?)\))?\s*-->")
_FILE_HEADER = re.compile(r"^#\s+([\w./-]+\.\w+)\s*$")
_SEPARATOR = "@@docs-test {}@@"
_HEREDOC = re.compile(r"<<-?\s*'?\"?(\w+)")


@dataclass
class Command:
    text: str
    expected: list[str]
    line: int


@dataclass
class Block:
    """A fenced block of a page: console commands, or a file to write."""

    line: int
    commands: list[Command] = field(default_factory=list)
    file: Optional[tuple[str, str]] = None
    skip: Optional[str] = None
    any_order: bool = False


def parse(page: Path) -> list[Block]:
    """The console blocks and the files of ``page``, in order."""
    lines = page.read_text().splitlines()
    page_skip = None
    for text in lines:
        for kind, reason in _MARKER.findall(text):
            if kind == "skip-page":
                page_skip = reason or "no reason given"
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent = len(opening.group(1))
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not _FENCE.match(lines[i]):
            text = lines[i]
            body.append(text[indent:] if not text[:indent].strip() else text.lstrip())
            i += 1
        i += 1
        block = Block(line=start + 1, skip=page_skip)
        previous = _previous_text(lines, start)
        for kind, reason in _MARKER.findall(previous):
            if kind == "skip":
                block.skip = reason or "no reason given"
            elif kind == "any-order":
                block.any_order = True
            elif kind != "skip-page":
                raise AssertionError(f"{page.name}:{start}: unknown docs-test marker {kind!r}")
        header = _FILE_HEADER.match(body[0]) if body else None
        if header and not any(b.startswith("$ ") for b in body):
            block.file = (header.group(1), "\n".join(body) + "\n")
        else:
            block.commands = _commands(body, start + 2)
        if block.file or block.commands:
            blocks.append(block)
    return blocks


def _previous_text(lines: list[str], index: int) -> str:
    """The nearest non-blank line before line ``index``."""
    for j in range(index - 1, -1, -1):
        if lines[j].strip():
            return lines[j]
    return ""


def _commands(body: list[str], first_line: int) -> list[Command]:
    commands: list[Command] = []
    j = 0
    while j < len(body):
        if not body[j].startswith("$ "):
            if commands:
                commands[-1].expected.append(body[j])
            j += 1
            continue
        text, line = body[j][2:], first_line + j
        while text.endswith("\\") and j + 1 < len(body):
            j += 1
            text = text + "\n" + body[j]
        here = _HEREDOC.search(text)
        if here:  # the document's lines are the command's, up to its end word
            while j + 1 < len(body):
                j += 1
                text = text + "\n" + body[j]
                if body[j] == here.group(1):
                    break
        commands.append(Command(text, [], line))
        j += 1
    return commands


# -- comparing -------------------------------------------------------------------------------

_HOST = socket.gethostname()
_VARYING = [
    # a temporary directory's random part (minionize-pool-_hdv73f9, minionize-output-OWNER-*)
    (re.compile(r"\b(minionize-[a-z]+-(?:[\w.-]*-)?)[a-z0-9_]{8}(?![\w-])"), r"\1<RANDOM>"),
    # timestamps, then durations and rates, then ids and pids
    (re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:?\d\d)?"), "<TIME>"),
    (re.compile(r"\b\d\d:\d\d:\d\d\b"), "<TIME>"),
    (re.compile(r"\b1\d{9}\.\d+\b"), "<TIME>"),  # seconds since 1970
    (re.compile(r"\t *\d+\.\d{3}\t"), "\t<DURATION>\t"),  # a joblog's JobRuntime
    (re.compile(r"(\.\w+-)[0-9a-f]{8}(-\d+)"), r"\1<ID>\2"),  # a file engine's param id
    (re.compile(r"\b\d+(\.\d+)?(/s|/min| ?tasks/s| ?items/s)"), "<RATE>"),
    (re.compile(r"\b\d+(\.\d+)?\s?(ms|us|µs|s|sec|seconds?|min|m|h)\b"), "<DURATION>"),
    # a minion id (12 random hex digits: all of them digits now and then)
    (re.compile(r"\bminion [0-9a-f]{12}\b"), "minion <ID>"),
    (re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b"), "<ID>"),
    # a sandbox: <id>.<attempt>.<random part>
    (re.compile(r"(<ID>\.\d+\.)\w{8}\b"), r"\1<RANDOM>"),
    (re.compile(r"\b(pid|PID|minion|job)( |=)\d+\b"), r"\1\2<N>"),
]


#: The directory the pages show their commands run in.
SHOWN_DIRECTORY = "/home/me/sim"
#: The host the pages show their commands run on (the real one is set aside too).
SHOWN_HOST = "vm"


def normalise(line: str, directory: Optional[str] = None) -> str:
    """``line`` with the figures that vary from run to run replaced by placeholders;
    ``directory``, where the commands ran, is shown as :data:`SHOWN_DIRECTORY`."""
    line = line.rstrip()
    if directory:
        line = line.replace(directory, SHOWN_DIRECTORY)
    for host in {_HOST, SHOWN_HOST} - {""}:
        # a minion's name: host:pid, host_pid
        line = re.sub(rf"\b{re.escape(host)}([:_])\d+\b", r"<HOST>\1<N>", line)
        line = re.sub(rf"\b{re.escape(host)}\b", "<HOST>", line)
    for pattern, placeholder in _VARYING:
        line = pattern.sub(placeholder, line)
    return line


def _line_pattern(shown: str) -> re.Pattern[str]:
    parts = [re.escape(part) for part in normalise(shown).split("...")]
    return re.compile(".*".join(parts) + r"\Z")


def matches(shown: list[str], real: list[str], any_order: bool = False,
            directory: Optional[str] = None) -> bool:
    """Whether ``real`` (printed in ``directory``) is what ``shown`` shows: ``...``
    lines stand for any lines."""
    real = [normalise(r, directory) for r in real]
    if any_order:
        rest = list(real)
        for line in shown:
            if line.strip() == "...":
                continue
            wanted = _line_pattern(line)
            found = next((k for k, r in enumerate(rest) if wanted.match(r)), None)
            if found is None:
                return False
            del rest[found]
        return not rest or any(s.strip() == "..." for s in shown)
    patterns = [None if s.strip() == "..." else _line_pattern(s) for s in shown]
    # reachable[k]: the shown lines so far can match the first k real lines
    reachable = {0}
    for pattern in patterns:
        if pattern is None:
            reachable = set(range(min(reachable), len(real) + 1)) if reachable else set()
        else:
            reachable = {k + 1 for k in reachable if k < len(real) and pattern.match(real[k])}
        if not reachable:
            return False
    return len(real) in reachable


# -- running ---------------------------------------------------------------------------------


def run_page(blocks: list[Block], directory: Path) -> list[str]:
    """Run the blocks in ``directory``; the commands' outputs, one text per command."""
    script = []
    number = 0
    for block in blocks:
        if block.skip:
            continue
        if block.file:
            name, content = block.file
            script.append(f"cat > {name} <<'DOCS_TEST_EOF'\n{content}DOCS_TEST_EOF")
            continue
        for command in block.commands:
            # the separator keeps the last command's $? for an `echo $?` shown next
            script.append(f"DOCS_TEST_STATUS=$?; printf '\\n{_SEPARATOR.format(number)}\\n';"
                          " (exit $DOCS_TEST_STATUS)")
            script.append(command.text)
            number += 1
    script.append(f"printf '\\n{_SEPARATOR.format(number)}\\n'")
    process = subprocess.Popen(
        ["bash", "-c", "\n".join(script)], cwd=directory, env=user_environment(),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = process.communicate(timeout=PAGE_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, _ = process.communicate()
        raise AssertionError(
            f"the page's commands took more than {PAGE_TIMEOUT:g}s; output:\n"
            + out.decode(errors="replace")[-3000:]
        ) from None
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # what a command left running
        except ProcessLookupError:
            pass
    text = out.decode(errors="replace")
    pieces = re.split(r"\n@@docs-test (\d+)@@\n", "\n" + text)
    # pieces: [before, "0", out0, "1", out1, ...]; the last number closes the last command
    outputs = pieces[2::2]
    assert len(outputs) == number + 1, f"the page's script stopped early:\n{text[-3000:]}"
    return outputs[:number]


def _lines(output: str) -> list[str]:
    lines = [line.rstrip() for line in output.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return lines


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_the_page_examples_print_what_they_show(page: Path) -> None:
    blocks = parse(page)
    if all(block.skip or block.file for block in blocks):
        pytest.skip("no console block to run" if not any(b.skip for b in blocks)
                    else "every block is marked skip")
    with tempfile.TemporaryDirectory(prefix="docs-test-") as directory:
        outputs = run_page(blocks, Path(directory))
        directory = os.path.realpath(directory)
    commands = [c for b in blocks if not b.skip for c in b.commands]
    orders = [b.any_order for b in blocks if not b.skip for _ in b.commands]
    wrong = []
    for command, output, any_order in zip(commands, outputs, orders):
        real = _lines(output)
        if command.expected and not matches(command.expected, real, any_order, directory):
            shown = "\n".join(f"    {s}" for s in command.expected)
            got = "\n".join(f"    {r}" for r in real)
            wrong.append(f"{_page_id(page)}:{command.line}: $ {command.text}\n"
                         f"  shown:\n{shown}\n  printed:\n{got}")
    assert not wrong, "\n\n".join(wrong)


SKIPPED = [(page, block) for page in PAGES for block in parse(page) if block.skip]


@pytest.mark.parametrize(
    "page,block", SKIPPED,
    ids=[f"{_page_id(p)}:{b.line}" for p, b in SKIPPED] or None,
)
def test_skipped_block(page: Path, block: Block) -> None:
    """Each block marked skip, listed as a skipped test with its reason."""
    first = block.commands[0].text if block.commands else (block.file or ("", ""))[0]
    pytest.skip(f"{_page_id(page)}:{block.line} ({first!r}): {block.skip}")


# -- the test's own parts --------------------------------------------------------------------


def test_the_comparison_sets_aside_only_what_varies() -> None:
    assert matches(["rate: 395/s overall over 15 ms"], ["rate: 12.5/s overall over 2.1 s"])
    assert matches(["a", "...", "z"], ["a", "b", "c", "z"])
    assert matches(["a", "...", "z"], ["a", "z"])
    assert matches(["n=... algo=fast"], ["n=1 algo=fast"])
    assert matches(["b", "a"], ["a", "b"], any_order=True)
    assert not matches(["b", "a"], ["a", "b"])
    assert not matches(["done 4"], ["done 5"])
    assert not matches(["a", "b"], ["a"])
    assert not matches(["a"], ["a", "b"])
    assert matches(["02123056929e  3"], ["59cc9f7d4dc7  3"])
    assert matches(["held by minion 34b430909a46 on"], ["held by minion 349430909126 on"])
    assert matches(["14f46e58e89b.3.k2v9x0qe"], ["14f46e58e89b.3.ab_12cde"])
    # the host a page shows (vm) is whatever host the test runs on
    assert matches(["minion vm:12 on vm"], [f"minion {_HOST}:345 on {_HOST}"])
    assert matches(["runs/minionize-pool-_hdv73f9/report"], ["runs/minionize-pool-3k1b0c2a/report"])
    assert not matches(["runs/minionize-pool-_hdv73f9"], ["runs/minionize-pool-other"])
    assert matches([f"minion {_HOST}:3430 starts, {_HOST}_3430"],
                   [f"minion {_HOST}:6922 starts, {_HOST}_6922"])
    assert matches(["queue in /home/me/sim/sweeps"], ["queue in /tmp/x/sweeps"],
                   directory="/tmp/x")


def test_the_parser_reads_commands_outputs_files_and_markers(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(textwrap.dedent("""\
        ```python
        # job.py
        print("hi")
        ```
        <!-- docs-test: any-order -->
        ```
        $ python job.py
        hi
        $ echo a \\
          b
        a b
        $ cat > t.sh <<'EOF'
        echo from t.sh
        EOF
        $ sh t.sh
        from t.sh
        ```
        <!-- docs-test: skip (needs SLURM) -->
        ```
        $ sbatch x
        ```
        * an item:

          ```
          $ echo indented
          indented
          ```
        """))
    blocks = parse(page)
    assert blocks[0].file == ("job.py", '# job.py\nprint("hi")\n')
    assert blocks[1].any_order and [c.text for c in blocks[1].commands] == [
        "python job.py", "echo a \\\n  b", "cat > t.sh <<'EOF'\necho from t.sh\nEOF",
        "sh t.sh"]
    assert blocks[1].commands[0].expected == ["hi"]
    assert blocks[2].skip == "needs SLURM"
    assert blocks[3].commands[0].expected == ["indented"]
    outputs = run_page(blocks, tmp_path)
    assert [_lines(o) for o in outputs] == [["hi"], ["a b"], [], ["from t.sh"], ["indented"]]


def test_an_echo_of_the_status_shows_the_command_before(tmp_path: Path) -> None:
    outputs = run_page([Block(line=1, commands=[Command("false", [], 1),
                                                Command("echo $?", [], 2)])], tmp_path)
    assert [_lines(o) for o in outputs] == [[], ["1"]]
