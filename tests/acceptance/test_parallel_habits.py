"""The habits of xargs and GNU parallel users, typed as they type them, side by side with
GNU parallel's own output where both apply."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.services import script

needs_parallel = pytest.mark.skipif(shutil.which("parallel") is None and not os.environ.get("CI"),
                                    reason="GNU parallel is not installed")


def sh(command: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", command], env=env, text=True, capture_output=True,
                          timeout=timeout)


INPUT = "a/b.c/d.tar.gz\nfile\n.bashrc\n/x/y\nsub.dir/file\n"


@needs_parallel
def test_replacement_strings_print_what_parallel_prints(user_env: dict[str, str]) -> None:
    Path("in.txt").write_text(INPUT)
    words = "'{}, {.}, {/}, {//}, {/.}, {#}, {%}'"
    theirs = sh(f"parallel --will-cite -j 1 -k echo {words} < in.txt", user_env)
    ours = sh(f"minionize -a in.txt echo {words}", user_env)
    assert ours.returncode == 0, ours.stderr
    assert theirs.stdout.splitlines()[0] == "a/b.c/d.tar.gz, a/b.c/d.tar, d.tar.gz, a/b.c, d.tar, 1, 1"
    assert ours.stdout == theirs.stdout


@needs_parallel
def test_replacement_strings_in_a_shell_command(user_env: dict[str, str]) -> None:
    Path("in.txt").write_text("photos/cat.jpg\n$(touch PWNED).jpg\n")
    ours = sh("minionize -a in.txt --shell 'echo {/.} from {//} | tr a-z A-Z'", user_env)
    theirs = sh("parallel --will-cite -k -q sh -c 'echo \"$1\" from \"$2\" | tr a-z A-Z' sh "
                "{/.} {//} < in.txt", user_env)
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout == theirs.stdout == "CAT FROM PHOTOS\n$(TOUCH PWNED) FROM .\n"
    assert not Path("PWNED").exists()


def test_template_modifiers_on_mapping_keys(user_env: dict[str, str]) -> None:
    Path("p.jsonl").write_text('{"in": "data/run1.csv", "k": 3}\n')
    result = sh("FILE_DECODER=json minionize -a p.jsonl --template "
                "'echo {in.}.out {in/} {k} {#}'", user_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "data/run1.out run1.csv 3 1\n"


@needs_parallel
def test_null_separated_input_like_xargs_and_parallel(user_env: dict[str, str]) -> None:
    feed = r"printf 'a b\0c\nd\0\0'"
    theirs = sh(f"{feed} | parallel --will-cite -0 -k echo '[{{}}]'", user_env)
    xargs = sh(f"{feed} | xargs -0 -I{{}} echo '[{{}}]'", user_env)
    ours = sh(f"{feed} | minionize -e file -0 echo '[{{}}]'", user_env)
    assert ours.returncode == 0, ours.stderr
    # An empty record is a param, as in xargs -0 and GNU parallel -0.
    assert ours.stdout == xargs.stdout == theirs.stdout == "[a b]\n[c\nd]\n[]\n"
    Path("in0").write_bytes(b"x\0y\0")
    ours = sh("minionize --arg-file in0 --null echo", user_env)
    assert ours.stdout == "x\ny\n"


def test_arg_file_is_the_file_engine_with_its_journal(user_env: dict[str, str]) -> None:
    Path("in.txt").write_text("1\n2\n")
    result = sh("minionize -a in.txt echo n", user_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "n 1\nn 2\n"
    assert Path("in.txt.done").read_text().splitlines() == ['"1"', '"2"']
    clash = sh("minionize -a in.txt -e redis echo n", user_env)
    assert clash.returncode == 2 and "--arg-file" in clash.stderr


def test_retries_and_dry_run_are_aliases(user_env: dict[str, str]) -> None:
    Path("in.txt").write_text("bad\n")
    Path("job.sh").write_text('echo "attempt $MINION_ATTEMPT" >> runs.log; exit 1\n')
    result = sh("minionize -a in.txt --retries 2 sh job.sh", user_env)
    assert result.returncode == 1
    assert Path("runs.log").read_text().splitlines() == ["attempt 1", "attempt 2"]
    dry = sh("minionize -a in.txt --dry-run echo '{.}'", user_env)
    assert dry.returncode == 0 and dry.stdout == "echo bad\n"


@needs_parallel
def test_joblog_has_parallels_format_and_resume_failed_reads_it(user_env: dict[str, str]) -> None:
    Path("in.txt").write_text("0\n1\n0\n")
    theirs = sh("parallel --will-cite --joblog theirs.log 'exit {}' < in.txt", user_env)
    ours = sh("minionize -a in.txt --joblog ours.log --retries 1 sh -c 'exit $0'", user_env)
    assert ours.returncode == 1
    their_lines = Path("theirs.log").read_text().splitlines()
    our_lines = Path("ours.log").read_text().splitlines()
    assert our_lines[0] == their_lines[0] == (
        "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand")
    rows = sorted(line.split("\t") for line in our_lines[1:])
    assert [(r[0], r[6], r[7], r[8]) for r in rows] == [
        ("1", "0", "0", "sh -c 'exit $0' 0"), ("2", "1", "0", "sh -c 'exit $0' 1"),
        ("3", "0", "0", "sh -c 'exit $0' 0")]
    for theirs_row, ours_row in zip(their_lines[1:], our_lines[1:]):
        # Same columns, same number shapes: Starttime %.3f, JobRuntime %10.3f.
        t, o = theirs_row.split("\t"), ours_row.split("\t")
        assert len(t) == len(o) == 9
        assert len(o[2].split(".")[1]) == 3 and len(o[3]) == len(t[3]) == 10
    # GNU parallel's --resume-failed, on our joblog, reruns only line 2.
    rerun = sh("parallel --will-cite --resume-failed --joblog ours.log 'echo rerun {#} {}' "
               "< in.txt", user_env)
    assert rerun.stdout == "rerun 2 1\n", rerun.stderr
    assert theirs.returncode == 1


def test_joblog_one_line_per_attempt_with_signals(user_env: dict[str, str]) -> None:
    Path("in.txt").write_text("x\n")
    result = sh("minionize -a in.txt --joblog jl --retries 2 sh -c 'kill -9 $$'", user_env)
    assert result.returncode == 1
    rows = [line.split("\t") for line in Path("jl").read_text().splitlines()[1:]]
    assert [(r[0], r[6], r[7]) for r in rows] == [("1", "0", "9"), ("1", "0", "9")]


def test_joblog_many_minions_appending_keep_whole_lines(user_env: dict[str, str]) -> None:
    subprocess.run([script("minion-queue"), "fill", "1..400"], env=user_env, check=True,
                   capture_output=True)
    minions = [subprocess.Popen([script("minionize"), "-j", "2", "--joblog", "shared.log",
                                 "true"], env=user_env, stderr=subprocess.PIPE, text=True)
               for _ in range(4)]
    for minion in minions:
        _, err = minion.communicate(timeout=120)
        assert minion.returncode == 0, err
    lines = Path("shared.log").read_text().splitlines()
    assert lines[0].startswith("Seq\tHost") and lines.count(lines[0]) == 1
    commands = sorted(line.split("\t")[8] for line in lines[1:])
    assert all(len(line.split("\t")) == 9 for line in lines[1:])
    assert commands == sorted(f"true {i}" for i in range(1, 401))


def test_results_dir_layout(user_env: dict[str, str]) -> None:
    Path("in.txt").write_text("ok\nbad\na/b\n")
    Path("job.sh").write_text('echo "out $1 $MINION_ATTEMPT"; echo "err $1" >&2; [ "$1" != bad ]\n')
    result = sh("minionize -a in.txt --results res --retries 2 sh job.sh", user_env)
    assert result.returncode == 1
    assert result.stdout == ""  # the output went to the files
    # One directory per param, named by its id (the file engine's ids end with the line
    # number and hold a part drawn per run, so a rerun never overwrites a run's results).
    entries = sorted(Path("res").iterdir(), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    assert [p.name.rsplit("-", 1)[1] for p in entries] == ["1", "2", "3"]
    ok, bad, slash = entries
    assert json.loads((ok / "param").read_text()) == "ok"
    assert (ok / "1.out").read_text() == "out ok 1\n"
    assert (ok / "1.err").read_text() == "err ok\n"
    assert (ok / "1.exit").read_text() == "0\n"
    assert sorted(p.name for p in bad.iterdir()) == [
        "1.err", "1.exit", "1.out", "2.err", "2.exit", "2.out", "param"]
    assert (bad / "2.out").read_text() == "out bad 2\n"
    assert (bad / "2.exit").read_text() == "1\n"
    assert json.loads((slash / "param").read_text()) == "a/b"


def test_tag_prefixes_every_line_like_parallel(user_env: dict[str, str]) -> None:
    Path("in.txt").write_text("a\nb\n")
    cmd = "sh -c 'echo out $0; echo err $0 >&2'"
    ours = sh(f"minionize -a in.txt --tag -k {cmd} 2>&1", user_env)
    assert ours.returncode == 0, ours.stderr
    theirs = sh("parallel --will-cite --tag -k 'echo out {}; echo err {} >&2' < in.txt 2>&1",
                user_env)
    assert ours.stdout == "a\tout a\na\terr a\nb\tout b\nb\terr b\n"
    if shutil.which("parallel"):
        assert ours.stdout == theirs.stdout


def test_keep_order_prints_in_input_order(user_env: dict[str, str]) -> None:
    Path("in.txt").write_text("1.2\n0.8\n0\n0.4\n")
    ours = sh("minionize -a in.txt -j 4 --keep-order sh -c 'sleep $0; echo $0'", user_env)
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout == "1.2\n0.8\n0\n0.4\n"
    Path("in2.txt").write_text(Path("in.txt").read_text())  # in.txt.done skips them all now
    unordered = sh("minionize -a in2.txt -j 4 sh -c 'sleep $0; echo $0'", user_env)
    assert unordered.stdout == "0\n0.4\n0.8\n1.2\n"


def test_delay_spaces_the_starts(user_env: dict[str, str]) -> None:
    Path("in.txt").write_text("1\n2\n3\n")
    result = sh("minionize -a in.txt -j 3 --delay 0.3 --joblog log true", user_env)
    assert result.returncode == 0, result.stderr
    # The start times the minion keeps (a child's own clock also counts how long the
    # machine took to spawn it, which varies on a loaded one).
    rows = Path("log").read_text().splitlines()[1:]
    starts = sorted(float(row.split("\t")[2]) for row in rows)
    assert len(starts) == 3 and all(b - a >= 0.29 for a, b in zip(starts, starts[1:])), starts
    # A task's run time is its own, not the wait before it started (0.3 s, then 0.6 s).
    assert sum(float(row.split("\t")[3]) for row in rows) < 0.5, rows


def test_progress_is_silent_when_stderr_is_not_a_terminal(user_env: dict[str, str]) -> None:
    Path("in.txt").write_text("1\n2\n")
    for flag in ("--bar", "--eta", "--progress"):
        result = sh(f"minionize -a in.txt {flag} true", user_env)
        assert result.returncode == 0 and result.stderr == "", (flag, result.stderr)


def test_progress_draws_on_a_terminal_from_the_queue_counters(user_env: dict[str, str]) -> None:
    import pty

    subprocess.run([script("minion-queue"), "fill", "1..6"], env=user_env, check=True,
                   capture_output=True)
    main_fd, child_fd = pty.openpty()
    minion = subprocess.Popen([script("minionize"), "--eta", "sh", "-c", "sleep 0.3"],
                              env=user_env, stderr=child_fd, stdout=subprocess.DEVNULL)
    os.close(child_fd)
    import select
    import time

    drawn = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main_fd], [], [], 1)
        if not ready:
            if minion.poll() is not None:
                break
            continue
        try:
            chunk = os.read(main_fd, 4096)
        except OSError:  # the terminal closed: everything was read
            break
        if not chunk:
            break
        drawn += chunk
    minion.wait(timeout=30)
    os.close(main_fd)
    text = drawn.decode()
    assert minion.returncode == 0, text
    assert "6/6 done" in text and "ETA" in text


def test_joblog_line_of_an_attempt_stopped_gracefully(user_env: dict[str, str]) -> None:
    import signal

    from tests.services import wait_for

    Path("in.txt").write_text("slow\n")
    minion = subprocess.Popen([script("minionize"), "-a", "in.txt", "--joblog", "jl", "sh", "-c",
                               "touch started; sleep 30"], env=user_env,
                              stderr=subprocess.PIPE, text=True)
    wait_for(lambda: Path("started").exists(), 20, "the task to start")
    minion.send_signal(signal.SIGTERM)
    _, err = minion.communicate(timeout=30)
    assert minion.returncode == 0, err
    rows = [line.split("\t") for line in Path("jl").read_text().splitlines()[1:]]
    assert [(r[0], r[6], r[7]) for r in rows] == [("1", "0", "15")]
    assert Path("in.txt.done").read_text() == ""  # given back: a rerun runs it


def test_results_of_a_command_that_cannot_start_and_of_a_dry_run(user_env: dict[str, str]) -> None:
    Path("in.txt").write_text("x\n")
    dry = sh("minionize -a in.txt --results res -n echo", user_env)
    assert dry.returncode == 0 and not Path("res").exists()
    Path("prog").write_text("#!/no/such/interpreter\n")  # found, but exec fails
    Path("prog").chmod(0o755)
    # The program every param runs cannot start: the command line's fault, exit 2, the
    # param given back, no attempt recorded as run.
    result = sh("minionize -a in.txt --results res --retries 1 ./prog", user_env)
    assert result.returncode == 2, result.stderr
    assert [p.read_text() for p in Path("res").glob("*/*.exit")] in ([], ["none\n"])
    # A program named by the param that cannot start is that attempt's failure (127).
    Path("in2.txt").write_text("./prog\n")
    result = sh("minionize -a in2.txt --results res2 --retries 1 sh -c '\"$0\"'", user_env)
    assert result.returncode == 1, result.stderr
    [exit_file] = Path("res2").glob("*/1.exit")
    assert exit_file.read_text() == "126\n" or exit_file.read_text() == "127\n"
