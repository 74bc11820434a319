"""The launcher: nginx in front, gunicorn behind a unix socket, supervised.

The same command runs on a laptop, in the tests and as the Docker entrypoint
(PID 1): it reaps every child, turns SIGTERM/SIGINT into a graceful stop
(nginx drains first, then gunicorn, so uploads in flight are committed)
and exits non-zero when either server dies, so a supervisor restarts it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from lfs_server import cleanup, nginx_conf, privileges
from lfs_server.prehash import PREHASH_SOCKET_ENV
from lfs_server.prehash_process import PREHASH_DIR_ENV
from lfs_server.privileges import PrivilegeError, RunAs
from lfs_server.settings import Settings
from lfs_server.store.factory import store_problem
from lfs_server.store.local import LinkCheckError, check_hard_links
from lfs_server.upgrade import upgrade_store

# After LFS_STOP_GRACE nginx closes what is left itself (worker_shutdown_timeout);
# the launcher kills it if it has not exited this much later.
NGINX_FORCE_SECONDS = 2.0
# gunicorn is stopped once nginx is gone, so it has requests left only when
# nginx was cut: commits still running get this long.
GUNICORN_GRACE_SECONDS = 5
START_TIMEOUT_SECONDS = 30.0
# The supervision loop sweeps stale upload temp files this often (one scandir).
SWEEP_INTERVAL_SECONDS = 600.0
# Settings only the launcher uses: the app never sees them (files it need
# not read, the admin password).
LAUNCHER_ONLY = (
    "LFS_TLS_CERT",
    "LFS_TLS_KEY",
    "LFS_ADMIN_USER",
    "LFS_ADMIN_PASSWORD",
    "LFS_ADMIN_PASSWORD_FILE",
)
# Files of the data dir that hold secrets: 0600 whoever made them.
PRIVATE_FILES = ("secret.key", "lfs.db", "lfs.db-wal", "lfs.db-shm")


class LaunchError(Exception):
    """Start-up failed for a reason the operator can fix; the message says which."""


def find_nginx(name: str) -> str:
    """The nginx binary: Debian puts it in /usr/sbin, often not on a user's PATH."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
    found = shutil.which(name, path=search)
    if not found:
        raise LaunchError(
            f"nginx not found (LFS_NGINX={name}): install it (Debian: apt-get install nginx)"
        )
    return found


def check_port_free(settings: Settings) -> None:
    family = socket.AF_INET6 if ":" in settings.listen_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.listen_host, settings.listen_port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise LaunchError(
                    f"LFS_LISTEN: {settings.listen_host}:{settings.listen_port} is already in use"
                ) from None
            raise LaunchError(
                f"LFS_LISTEN: cannot listen on that address ({exc.strerror})"
            ) from None


def check_data_dir(settings: Settings) -> None:
    """Create the store's folders; refuse them when uploads cannot be linked into place."""
    for path in (settings.objects_dir, settings.upload_tmp_dir):
        path.mkdir(parents=True, exist_ok=True)
    if settings.store != "local":
        return
    try:
        check_hard_links(settings.upload_tmp_dir, settings.objects_dir)
    except LinkCheckError as exc:
        raise LaunchError(f"LFS_DATA_DIR: {exc}") from None


def check_store(settings: Settings) -> None:
    """Refuse to start on a store that cannot take objects, saying in one line why."""
    problem = store_problem(settings)
    if problem:
        raise LaunchError(f"LFS_STORE={settings.store}: {problem}")


def sweep_stale_uploads(settings: Settings) -> None:
    """Remove temp files a crash left behind (see lfs_server.cleanup); never fatal."""
    try:
        swept = cleanup.sweep_stale_uploads(settings.upload_tmp_dir)
    except OSError as exc:
        print(f"lfs-server: warning: could not sweep stale uploads ({exc})", file=sys.stderr)
        return
    if swept.files:
        print(
            f"lfs-server: removed {swept.files} stale upload temp file(s), "
            f"{cleanup.human_bytes(swept.bytes)}",
            file=sys.stderr,
        )


_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def die_with_parent(sig: int) -> Callable[[], None]:
    """For a child: get `sig` if the launcher dies, even by SIGKILL."""

    def set_parent_death_signal() -> None:
        _libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return set_parent_death_signal


def become_subreaper() -> None:
    """Orphans of our children (nginx workers whose master died) become ours,
    so stop() can end them instead of leaving them on the port."""
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def kill_orphans() -> None:
    """Kill and reap whatever is still a child of the launcher."""
    for _ in range(50):
        pids = [
            int(pid)
            for children in Path("/proc/self/task").glob("*/children")
            for pid in children.read_text().split()
        ]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            while os.waitpid(-1, os.WNOHANG)[0] != 0:
                pass
        except ChildProcessError:
            return
        time.sleep(0.02)


def installation() -> list[tuple[str, Path, int]]:
    """What the children run: the unprivileged user must be able to read it."""
    gunicorn = importlib.util.find_spec("gunicorn")
    assert gunicorn is not None and gunicorn.origin is not None
    return [
        ("the Python interpreter", Path(sys.executable), os.X_OK),
        ("the installation", Path(__file__).resolve().parent, os.R_OK | os.X_OK),
        ("the installation", Path(gunicorn.origin).parent, os.R_OK | os.X_OK),
    ]


class Supervisor:
    def __init__(self, settings: Settings, user: RunAs | None = None) -> None:
        self.settings = settings
        self.user = user
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping = False
        self.next_sweep = time.monotonic() + SWEEP_INTERVAL_SECONDS

    def sweep_if_due(self, now: float) -> None:
        """The periodic sweep of stale upload temp files, from the supervision loop."""
        if now >= self.next_sweep:
            self.next_sweep = now + SWEEP_INTERVAL_SECONDS
            sweep_stale_uploads(self.settings)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stopping = True

    def _prepare_app_dir(self, run_dir: Path, app_dir: Path) -> None:
        """The run dir's part the unprivileged processes write: sockets, metrics.

        nginx.conf and nginx's pid stay outside it, so they cannot be changed
        by the user whose processes face the network.
        """
        app_dir.mkdir()
        # prometheus_client's multiprocess mode: each worker's values in files
        # here, summed by /metrics (lfs_server.metrics); run_dir is new each start.
        (app_dir / "metrics").mkdir()
        if self.user is not None:
            run_dir.chmod(0o711)
            for path in (app_dir, app_dir / "metrics"):
                os.chown(path, self.user.uid, self.user.gid)
            data = self.settings.data_dir
            needs = [("LFS_DATA_DIR", data, os.R_OK | os.W_OK | os.X_OK), *installation()]
            needs.append(("TMPDIR (the run dir)", app_dir, os.R_OK | os.W_OK | os.X_OK))
            try:
                privileges.check_reach(self.user, needs)
            except PrivilegeError as exc:
                raise LaunchError(str(exc)) from None

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str], cwd: Path
    ) -> subprocess.Popen[bytes]:
        """Start a child as the unprivileged user (when there is one)."""
        drop: dict[str, object] = {}
        if self.user is not None:
            drop = {"user": self.user.uid, "group": self.user.gid}
            drop["extra_groups"] = list(self.user.groups)
        child = subprocess.Popen(
            argv, env=env, cwd=cwd, preexec_fn=die_with_parent(signal.SIGTERM), **drop
        )
        self.children[name] = child
        return child

    def start(self, run_dir: Path) -> None:
        nginx = find_nginx(self.settings.nginx)
        app_dir = run_dir / "app"
        socket_path = app_dir / "gunicorn.sock"
        try:
            text = nginx_conf.render(self.settings, run_dir, socket_path, "/dev/stdout", self.user)
        except nginx_conf.UnsafeValue as exc:
            raise LaunchError(str(exc)) from None
        check_port_free(self.settings)
        self._prepare_app_dir(run_dir, app_dir)
        prehash_socket = app_dir / "prehash.sock"
        conf = run_dir / "nginx.conf"
        conf.write_text(text)
        checked = subprocess.run(
            [nginx, "-t", "-q", "-p", str(run_dir), "-c", str(conf), "-e", "stderr"],
            capture_output=True,
            text=True,
        )
        if checked.returncode != 0:
            raise LaunchError(f"nginx rejected its configuration: {checked.stderr.strip()}")
        app_env = {
            **{k: v for k, v in os.environ.items() if k not in LAUNCHER_ONLY},
            "LFS_DATA_DIR": str(self.settings.data_dir),
            "LFS_PUBLIC_URL": self.settings.public_url,
            # gunicorn >= 25.1 puts its control socket there (not in ~/.gunicorn).
            "XDG_RUNTIME_DIR": str(app_dir),
            "PROMETHEUS_MULTIPROC_DIR": str(app_dir / "metrics"),
            PREHASH_SOCKET_ENV: str(prehash_socket),
        }
        self._spawn(
            "prehash",
            [sys.executable, "-m", "lfs_server.prehash_process"],
            {**app_env, PREHASH_DIR_ENV: str(self.settings.upload_tmp_dir)},
            app_dir,
        )
        self._spawn(
            "gunicorn",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--bind",
                f"unix:{socket_path}",
                "--workers",
                str(self.settings.workers),
                "--worker-class",
                "gthread",
                "--threads",
                str(self.settings.threads),
                "--timeout",
                "120",
                "--graceful-timeout",
                str(GUNICORN_GRACE_SECONDS),
                "--keep-alive",
                "75",
                "--log-level",
                "warning",
                # nginx already bounds request lines and headers and answers in
                # LFS JSON; gunicorn's own (lower) limits would answer in HTML.
                "--limit-request-line",
                "0",
                "--limit-request-fields",
                "32768",
                "--limit-request-field_size",
                "0",
                "--config",
                "python:lfs_server.gunicorn_conf",
                "lfs_server.wsgi:app",
            ],
            app_env,
            app_dir,
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not socket_path.exists():
            for name, child in self.children.items():
                if child.poll() is not None:
                    raise LaunchError(f"{name} exited during start-up (see the messages above)")
            if time.monotonic() > deadline or self.stopping:
                raise LaunchError("gunicorn did not start in time")
            time.sleep(0.05)
        self.children["nginx"] = subprocess.Popen(
            [nginx, "-p", str(run_dir), "-c", str(conf), "-e", "stderr"],
            preexec_fn=die_with_parent(signal.SIGQUIT),
        )

    def wait(self) -> int:
        """Reap children until a stop signal (exit 0) or a child dies (exit 1)."""
        while not self.stopping:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid, status = 0, 0
            if pid == 0:
                self.sweep_if_due(time.monotonic())
                time.sleep(0.1)
                continue
            for name, child in self.children.items():
                if child.pid == pid:
                    child.returncode = os.waitstatus_to_exitcode(status)
                    print(
                        f"lfs-server: {name} exited ({child.returncode}); stopping", file=sys.stderr
                    )
                    return 1
        return 0

    def _stop_child(self, name: str, sig: int, seconds: float) -> None:
        """Signal one child and wait for it, killing it after `seconds`."""
        child = self.children.get(name)
        if child is None or child.returncode is not None:
            return
        child.send_signal(sig)
        try:
            child.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    def stop(self) -> None:
        """Graceful stop, in order: nginx (QUIT: it closes its port at once and
        finishes the requests in flight, uploads with their commit, within
        LFS_STOP_GRACE), then gunicorn, which those commits needed."""
        self._stop_child("nginx", signal.SIGQUIT, self.settings.stop_grace + NGINX_FORCE_SECONDS)
        self._stop_child("gunicorn", signal.SIGTERM, GUNICORN_GRACE_SECONDS + 1.0)
        self._stop_child("prehash", signal.SIGTERM, 2.0)
        kill_orphans()

    def run(self) -> int:
        become_subreaper()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        run_dir = Path(tempfile.mkdtemp(prefix="lfs-server-"))
        try:
            self.start(run_dir)
            announce(self.settings, self.user)
            return self.wait()
        finally:
            self.stop()
            shutil.rmtree(run_dir, ignore_errors=True)


def announce(settings: Settings, user: RunAs | None) -> None:
    url = settings.public_url
    if user is None:
        print(
            f"lfs-server: not started as root: every process runs as uid {os.getuid()} "
            "(LFS_USER applies only when started as root)",
            file=sys.stderr,
        )
    else:
        print(
            f"lfs-server: nginx's workers, gunicorn and the Prehasher run as {user.name} "
            f"(uid {user.uid}), which owns {settings.data_dir}",
            file=sys.stderr,
        )
    if settings.public_url_guessed:
        print(
            f"lfs-server: warning: LFS_PUBLIC_URL is unset, so hrefs name {url}; "
            "set it to the address clients use",
            file=sys.stderr,
        )
    print(
        f"lfs-server: serving on {url} (data in {settings.data_dir})\n"
        f"  in a git repository:  git config lfs.url {url}/<team>/<project>.git/info/lfs",
        file=sys.stderr,
        flush=True,
    )


def prepare_data_dir(settings: Settings, user: RunAs | None) -> None:
    """The folders the server writes, and its secrets private (0600); started
    as root, everything in the data dir is given to LFS_USER."""
    for path in (settings.objects_dir, settings.upload_tmp_dir):
        path.mkdir(parents=True, exist_ok=True)
    for name in PRIVATE_FILES:
        with contextlib.suppress(FileNotFoundError):
            (settings.data_dir / name).chmod(0o600)
    if user is not None:
        try:
            left = privileges.give_tree(settings.data_dir, user)
        except OSError as exc:
            raise PrivilegeError(
                f"LFS_DATA_DIR: cannot give {exc.filename or settings.data_dir} to "
                f"LFS_USER {user.name} ({exc.strerror})"
            ) from None
        if left:
            print(
                f"lfs-server: warning: left {left} file(s) with several hard links in "
                f"{settings.data_dir} to their owner; give them to {user.name} by hand",
                file=sys.stderr,
            )


def run_upgrade(settings: Settings, user: RunAs | None) -> None:
    """The one-time store upgrade (lfs_server.upgrade), as the serving user
    (in a child that drops root first), so whatever it makes is the server's."""

    def upgrade() -> None:
        try:
            upgrade_store(settings)
        except OSError as exc:
            raise LaunchError(
                f"LFS_DATA_DIR: could not upgrade the object store ({exc}); start again to resume"
            ) from None

    if user is None:
        upgrade()
        return
    data = ("LFS_DATA_DIR", settings.data_dir, os.R_OK | os.W_OK | os.X_OK)
    try:
        privileges.check_reach(user, [data])
    except PrivilegeError as exc:
        raise LaunchError(str(exc)) from None
    pid = os.fork()
    if pid == 0:
        status = 2
        try:
            privileges.become(user)
            upgrade()
            status = 0
        except LaunchError as exc:
            print(f"lfs-server: {exc}", file=sys.stderr, flush=True)
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise LaunchError("LFS_DATA_DIR: the object store upgrade did not complete")


def serve(settings: Settings) -> int:
    """Run the server until a stop signal (0) or a child's death (1); 2 when it cannot start."""
    try:
        user = privileges.run_as(settings.user)
        prepare_data_dir(settings, user)
        check_data_dir(settings)
        check_store(settings)
        run_upgrade(settings, user)
        sweep_stale_uploads(settings)
        return Supervisor(settings, user).run()
    except PrivilegeError as exc:
        print(f"lfs-server: {exc}", file=sys.stderr)
        return 2
    except LaunchError as exc:
        print(f"lfs-server: {exc}", file=sys.stderr)
        return 2
