"""The launcher: start-up errors, supervision and graceful stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.procs import child_pids, cmdline, descendants
from tests.stack import LAUNCHER, Stack
from tests.waiting import wait_until


def run_launcher(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "LFS_DATA_DIR": str(tmp_path / "data"), **env}
    return subprocess.run(LAUNCHER, env=full_env, capture_output=True, text=True, timeout=60)


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_launcher(tmp_path, LFS_LISTEN=f"127.0.0.1:{port}")
    assert done.returncode != 0
    assert f"LFS_LISTEN: 127.0.0.1:{port} is already in use" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("nginx", ["nginx-not-installed", "/nonexistent/nginx"])
def test_missing_nginx_is_a_clear_error(tmp_path: Path, nginx: str) -> None:
    done = run_launcher(tmp_path, LFS_NGINX=nginx, LFS_LISTEN="127.0.0.1:1")
    assert done.returncode != 0
    assert f"nginx not found (LFS_NGINX={nginx}): install it" in done.stderr


@pytest.mark.parametrize(("name", "value"), [("LFS_WORKERS", "many"), ("LFS_SECRET_KEY", "short")])
def test_bad_setting_stops_with_one_line(tmp_path: Path, name: str, value: str) -> None:
    done = run_launcher(tmp_path, **{name: value})
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and name in done.stderr


def test_prints_the_url_and_a_git_config_line(tmp_path: Path) -> None:
    stack = Stack(tmp_path).start()
    stack.stop()
    log = stack.log.read_text()
    assert f"serving on {stack.url}" in log
    assert f"git config lfs.url {stack.url}/<team>/<project>.git/info/lfs" in log


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_graceful_stop(tmp_path: Path, sig: int) -> None:
    stack = Stack(tmp_path).start()
    assert stack.proc is not None
    children = child_pids(stack.proc.pid)
    assert len(children) == 3  # nginx, gunicorn, the Prehasher
    started = time.monotonic()
    assert stack.stop(sig) == 0
    assert time.monotonic() - started < 10
    for pid in children:
        assert not Path(f"/proc/{pid}").exists()


@pytest.mark.parametrize("which", ["nginx", "gunicorn"])
def test_a_dying_child_stops_everything(tmp_path: Path, which: str) -> None:
    stack = Stack(tmp_path).start()
    assert stack.proc is not None
    children = child_pids(stack.proc.pid)
    everyone = descendants(stack.proc.pid)
    assert len(everyone) >= 4  # both masters and their workers
    victim = next(pid for pid in children if which in cmdline(pid))
    os.kill(victim, signal.SIGKILL)
    assert stack.proc.wait(timeout=20) != 0
    assert f"{which} exited" in stack.log.read_text()
    # the dead master's workers too: none is left holding the port
    for pid in everyone:
        assert not Path(f"/proc/{pid}").exists()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", stack.port))


def test_killed_launcher_takes_its_children_along(tmp_path: Path) -> None:
    stack = Stack(tmp_path).start()
    assert stack.proc is not None
    masters = child_pids(stack.proc.pid)
    assert len(masters) == 3  # nginx, gunicorn and the Prehasher
    stack.proc.kill()
    stack.proc.wait()
    assert wait_until(
        lambda: not any(Path(f"/proc/{pid}").exists() for pid in masters), timeout=15
    ), f"children of the killed launcher still alive: {masters}"
