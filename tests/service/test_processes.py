"""Process helpers shared by the tests and the load tools: ports, readiness, stopping by PID."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from service.processes import free_port, stop_process, wait_ready


def test_free_port_is_bindable_on_loopback():
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_stop_process_kills_what_ignores_sigterm():
    ignores_term = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " \
        "print('up', flush=True); time.sleep(60)"  # fmt: skip
    process = subprocess.Popen([sys.executable, "-c", ignores_term], stdout=subprocess.PIPE)
    assert process.stdout.readline() == b"up\n"  # the handler is installed
    started = time.monotonic()
    stop_process(process, timeout=0.5)
    assert process.returncode == -9
    assert time.monotonic() - started < 10


def test_wait_ready_reports_a_process_that_exited():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    with pytest.raises(RuntimeError, match="exited"):
        wait_ready(f"http://127.0.0.1:{free_port()}", timeout=5, process=process)
