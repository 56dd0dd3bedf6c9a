"""Several threads in several processes log at once: every line of the output is one JSON record.

Two ways out, as in production: processes sharing one stderr pipe (gunicorn's workers under
honcho), and dramatiq's worker processes, whose stderr is a pipe of messages that the main
process writes out (dramatiq.cli.watch_logs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

PROCESSES, THREADS, RECORDS = 4, 4, 250

# Logs from THREADS threads, half through structlog and half through stdlib logging, records of
# a few hundred to a few thousand bytes.
LOGGER = textwrap.dedent(f"""
    import logging, sys, threading
    import structlog
    from worker import logs

    def run(tag):
        def one(t):
            log = structlog.get_logger("t")
            std = logging.getLogger("third.party")
            for i in range({RECORDS}):
                pad = "x" * (100 + (i * 37) % 3000)
                if i % 2:
                    log.info("structlog record", proc=tag, thread=t, i=i, pad=pad)
                else:
                    std.warning("stdlib record %s %s %s %s", tag, t, i, pad)
        threads = [threading.Thread(target=one, args=(t,)) for t in range({THREADS})]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
""")

SHARED_PIPE = LOGGER + textwrap.dedent("""
    logs.configure(json=True)
    run(sys.argv[1])
""")

DRAMATIQ_PIPES = LOGGER + textwrap.dedent(f"""
    import multiprocessing, threading
    from dramatiq.cli import watch_logs
    from dramatiq.compat import StreamablePipe

    def child(tag, pipe):
        sys.stderr = sys.stdout = StreamablePipe(pipe)  # what dramatiq does in a worker process
        logs.configure(json=True)
        run(tag)

    if __name__ == "__main__":
        ctx = multiprocessing.get_context("fork")
        pipes, procs = [], []
        for n in range({PROCESSES}):
            read, write = ctx.Pipe(duplex=False)
            pipes.append(read)
            procs.append(ctx.Process(target=child, args=(f"p{{n}}", write)))
        stop = threading.Event()
        watcher = threading.Thread(target=watch_logs, args=(sys.argv[1], pipes, stop))
        watcher.start()
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        stop.set()
        watcher.join()
""")


def _check(lines: list[str]) -> None:
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"line {number} is not one JSON record: {line[:200]!r}...") from None
    assert len(records) == PROCESSES * THREADS * RECORDS
    assert {r["event"].split(" ")[0] for r in records} == {"structlog", "stdlib"}


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))


def test_processes_and_threads_sharing_one_stderr_pipe_never_glue_records():
    read, write = os.pipe()
    procs = [subprocess.Popen([sys.executable, "-c", SHARED_PIPE, f"p{n}"], stderr=write, env=_env())
             for n in range(PROCESSES)]
    os.close(write)
    with os.fdopen(read, "rb") as out:
        data = out.read()
    assert [p.wait(60) for p in procs] == [0] * PROCESSES
    _check(data.decode("utf-8").splitlines())


def test_dramatiq_worker_processes_never_glue_records(tmp_path):
    log_file = tmp_path / "worker.log"
    subprocess.run([sys.executable, "-c", DRAMATIQ_PIPES, str(log_file)], env=_env(), check=True, timeout=120)
    _check(log_file.read_text(encoding="utf-8").splitlines())


def test_every_event_name_is_area_dot_event():
    """One style for log event names: `area.event`, dotted snake case (README, Logging)."""
    import re
    from pathlib import Path

    call = re.compile(r"\blog\.(?:debug|info|warning|error|exception|critical)\(\s*([\"'])(.*?)\1")
    root = Path(__file__).resolve().parents[1] / "worker"
    names = {(str(p), m.group(2)) for p in root.rglob("*.py") for m in call.finditer(p.read_text())}
    assert len(names) > 30  # the pattern still finds the calls
    bad = sorted((path, name) for path, name in names if not re.fullmatch(r"[a-z_]+\.[a-z_]+", name))
    assert bad == []
