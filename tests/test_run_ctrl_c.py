"""Ctrl-C on `iotledger run` reaches only `run`, which asks honcho once to stop web, worker and clock."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from datetime import datetime

import httpx
import psycopg
import pytest

from tests import cli
from tests.factories import MERCHANTS_JSON


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ctrl_c_on_run_stops_every_process_gracefully(db_url, redis_url, queue_name, tmp_path):
    port, console_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IOTPAY_", "IOTLEDGER_"))}
    env.update(DATABASE_URL=db_url, REDIS_URL=redis_url, IOTLEDGER_WEB_PORT=str(port), IOTLEDGER_QUEUE=queue_name,
               IOTLEDGER_DATA_DIR=str(tmp_path / "data"), IOTLEDGER_WORKER_PROCESSES="1",
               IOTLEDGER_CONSOLE_PORT=str(console_port), IOTLEDGER_CONSOLE_WORKERS="1",
               IOTPAY_MERCHANTS=MERCHANTS_JSON)
    # a terminal's Ctrl-C goes to the whole foreground process group: start `run` as one and signal the group
    out_path, err_path = tmp_path / "run.out", tmp_path / "run.err"
    with open(out_path, "w") as out_f, open(err_path, "w") as err_f:
        proc = subprocess.Popen([str(cli.BIN), "run"], env=env, cwd=tmp_path, stdout=out_f, stderr=err_f,
                                text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # every process up: the web answers and the worker says it is ready
            try:
                web_up = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
                # the console, on its own address, shows nothing but its sign-in page without a session
                web_up = web_up and httpx.get(f"http://127.0.0.1:{console_port}/", timeout=2).status_code == 302
            except httpx.HTTPError:
                web_up = False
            if web_up and "ready for action" in out_path.read_text():
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the processes never came up: {out_path.read_text()[-2000:]}")
        # the clock's sweep starts at each minute and polls for 50 s: press Ctrl-C in the middle of it
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with psycopg.connect(db_url) as conn:
                passes = conn.execute("SELECT count(*) FROM sweep_runs").fetchone()[0]
            if passes >= 2 and 5 <= datetime.now().second <= 40:
                break
            time.sleep(0.5)
        else:
            pytest.fail("the clock's sweep never ran")
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out, err = out_path.read_text(), err_path.read_text()
    assert "stopping the processes gracefully" in err
    assert "Stopping worker process..." in out  # dramatiq was asked to stop gracefully first
    # honcho signals each process group and dramatiq's master forwards the signal: the repeat is
    # absorbed (worker/pipeline/stopping.py), so the worker finishes its stop instead of being killed
    assert "Killing worker process" not in out
    assert "Worker has been shut down." in out
    assert "SIGKILL" not in out + err
    assert out.count("Shutting down: Master") == 2  # gunicorn's graceful stop, the ingress's and the console's
    assert "Traceback" not in out + err
    assert '"event": "clock.stop"' in out  # the clock stopped its schedule rather than dying mid-job
    assert "sending SIGKILL" not in out  # the sweep it was running returned after its pass
    assert proc.returncode == 130, (proc.returncode, out[-3000:], err[-2000:])  # as for any Ctrl-C


@pytest.mark.slow
def test_sigterm_on_run_is_a_ctrl_c(db_url, redis_url, queue_name, tmp_path):
    # a process manager (systemd, supervisord, kill) stops `run` with SIGTERM: one graceful stop
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IOTPAY_", "IOTLEDGER_"))}
    env.update(DATABASE_URL=db_url, REDIS_URL=redis_url, IOTLEDGER_WEB_PORT=str(port), IOTLEDGER_QUEUE=queue_name,
               IOTLEDGER_DATA_DIR=str(tmp_path / "data"), IOTLEDGER_WORKER_PROCESSES="1")
    out_path = tmp_path / "run.out"
    with open(out_path, "w") as out_f:
        proc = subprocess.Popen([str(cli.BIN), "run", "web"], env=env, cwd=tmp_path, stdout=out_f,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        else:
            pytest.fail(out_path.read_text()[-2000:])
        proc.send_signal(signal.SIGTERM)  # to `run` alone, not its group
        assert proc.wait(30) == 130
        with pytest.raises(httpx.HTTPError):  # nothing left behind: the web is gone with it
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "Shutting down: Master" in out_path.read_text()
