"""A SIGTERM delivered twice at once (process group + dramatiq's master) is one stop request."""

from __future__ import annotations

import os
import signal
import time

from worker.pipeline.stopping import absorb_repeated_stop


def test_a_repeat_within_the_window_is_dropped_and_a_later_one_is_not():
    calls: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    try:
        assert absorb_repeated_stop(window_s=0.5) is True
        assert absorb_repeated_stop(window_s=0.5) is False  # wrapping twice would hide the operator's repeat
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        assert calls == [signal.SIGTERM]
        time.sleep(0.6)
        os.kill(os.getpid(), signal.SIGTERM)  # an operator asking again later still hurries the stop
        assert calls == [signal.SIGTERM, signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_nothing_is_wrapped_without_a_python_handler():
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        assert absorb_repeated_stop() is False
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_real_worker_asked_twice_finishes_its_graceful_stop(db_url, redis_url, queue_name, tmp_path):
    from worker.processes import children, service_env, start_worker, stop, wait_until

    env = service_env(db_url, redis_url, queue_name, {}, tmp_path)
    proc = start_worker(env, processes=1, threads=2)
    log_path = tmp_path / "worker.log"
    try:
        wait_until(lambda: "ready for action" in log_path.read_text(errors="replace"), 60, "the worker to be ready")
        workers = children(proc.pid)
        assert workers, "dramatiq's master has no worker process"
        os.killpg(proc.pid, signal.SIGTERM)  # a process manager signals the group; the master forwards it
        time.sleep(0.3)
        for pid in workers:  # and the manager asks again before the stop is over
            os.kill(pid, signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        stop(proc, signal.SIGKILL)
    log = log_path.read_text(errors="replace")
    assert "Killing worker process" not in log
    assert "Worker has been shut down." in log
