"""--joblog: GNU parallel's format, one whole line per attempt, appended under a lock."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from minionize.errors import ConfigError
from minionize.parallel.joblog import HEADER, Joblog, joblog_line
from minionize.reporters.base import TaskReport


def test_line_has_parallels_columns_and_number_shapes() -> None:
    line = joblog_line("3", "node-1", 1795877476.2234, 0.0061, 1, "sh -c 'exit $0' 1")
    assert line == "3\tnode-1\t1795877476.223\t     0.006\t0\t0\t1\t0\tsh -c 'exit $0' 1\n"
    assert HEADER == "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n"


def test_a_signal_goes_to_the_signal_column_like_parallel() -> None:
    assert joblog_line("1", "h", 0, 1, -9, "x").split("\t")[6:8] == ["0", "9"]
    assert joblog_line("1", "h", 0, 1, None, "x").split("\t")[6:8] == ["-1", "0"]


def test_a_command_with_newlines_or_tabs_stays_one_line() -> None:
    line = joblog_line("1", "h", 0, 1, 0, "echo 'a\nb\tc'")
    assert line.count("\n") == 1 and line.count("\t") == 8
    assert line.endswith("echo 'a\\nb\\tc'\n")


def report(seq: int) -> TaskReport:
    return TaskReport(param=str(seq), param_id=str(seq), attempt=1, outcome="done",
                      start=1.0, duration=0.5, exit_code=0)


def test_threads_and_two_writers_on_one_file_write_whole_lines_one_header(tmp_path: Path) -> None:
    path = str(tmp_path / "jl")
    writers = [Joblog(path, host="h"), Joblog(path, host="h")]
    for writer in writers:
        writer.start_log()

    def work(writer: Joblog, base: int) -> None:
        for i in range(200):
            writer.write(report(base + i), None, None)

    threads = [threading.Thread(target=work, args=(w, 1000 * k + 1000 * j))
               for k, w in enumerate(writers) for j in range(0, 4, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for writer in writers:
        writer.after_run(0)
    lines = Path(path).read_text().splitlines()
    assert lines[0] + "\n" == HEADER and lines.count(lines[0]) == 1
    assert len(lines) == 1 + 800 and all(len(line.split("\t")) == 9 for line in lines[1:])


def test_a_fifo_with_a_reader_is_refused_too_and_nothing_is_written_to_it(tmp_path: Path) -> None:
    fifo = tmp_path / "jl"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(ConfigError, match="not a regular file"):
            Joblog(str(fifo)).start_log()
        assert os.read(reader, 100) == b""  # the writer is gone, having written nothing
    finally:
        os.close(reader)


def test_an_existing_joblog_is_appended_to_and_stays_blocking(tmp_path: Path) -> None:
    path = tmp_path / "jl"
    path.write_text(HEADER)
    joblog = Joblog(str(path), host="h")
    joblog.start_log()
    assert joblog._fd is not None and os.get_blocking(joblog._fd)
    joblog.write(TaskReport(param_id="1", param=1, attempt=1, outcome="done", start=0.0,
                            duration=1.0, exit_code=0), "1", ["echo", "1"])
    joblog.after_run(0)
    assert path.read_text().splitlines()[1:] == ["1\th\t0.000\t     1.000\t0\t0\t0\t0\techo 1"]
