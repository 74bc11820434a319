"""The launcher: nginx in front, gunicorn behind a unix socket, supervised.

The same command runs on a laptop, in the tests and as the Docker entrypoint
(PID 1): it reaps every child, turns SIGTERM/SIGINT into a graceful stop
(nginx drains first, then gunicorn, so uploads in flight are committed)
and exits non-zero when either server dies, so a supervisor restarts it.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from lfs_server import child_env, cleanup, nginx_conf, privileges
from lfs_server.db import open_database
from lfs_server.isolated import ChildFailed, in_child
from lfs_server.prehash import PREHASH_SOCKET_ENV
from lfs_server.prehash_process import PREHASH_DIR_ENV, PREHASH_WRITEBACK_ENV
from lfs_server.privileges import PrivilegeError, RunAs
from lfs_server.settings import Settings
from lfs_server.store.factory import store_problem
from lfs_server.store.local import LinkCheckError, check_hard_links
from lfs_server.units import human_bytes
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
# Files of the data dir that hold secrets: 0600 whoever made them.
PRIVATE_FILES = ("secret.key", "lfs.db", "lfs.db-wal", "lfs.db-shm")
# The lowest port the kernel lets an unprivileged process listen on.
UNPRIVILEGED_PORT_START = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")
RWX = os.R_OK | os.W_OK | os.X_OK


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


def unprivileged_port_start() -> int:
    try:
        return int(UNPRIVILEGED_PORT_START.read_text())
    except (OSError, ValueError):
        return 1024


def low_port_refusal(port: int, first_allowed: int) -> str | None:
    """Why an unprivileged launcher cannot listen on `port`, or None when it can."""
    if port >= first_allowed:
        return None
    return (
        f"LFS_LISTEN: port {port} is below {first_allowed}, the lowest port this kernel lets "
        "an unprivileged process listen on, and the server runs unprivileged (as LFS_USER "
        f"when started as root): listen on a port >= {first_allowed} behind a load balancer "
        f"or port forward, or allow it with sysctl net.ipv4.ip_unprivileged_port_start={port}"
    )


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
            refusal = low_port_refusal(settings.listen_port, unprivileged_port_start())
            if exc.errno == errno.EACCES and refusal is not None:
                raise LaunchError(refusal) from None
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
            f"{human_bytes(swept.bytes)}",
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


def copy_out(source: int, target: int) -> None:
    """Copy what `source` reads to `target` until end of file, then close `source`.

    Should `target` fail (a closed stdout), the rest is read and dropped, so
    the writer never blocks on a full pipe.
    """
    writable = True
    while data := os.read(source, 65536):
        while writable and data:
            try:
                data = data[os.write(target, data) :]
            except OSError:
                writable = False
    os.close(source)


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
    def __init__(
        self,
        settings: Settings,
        user: RunAs | None = None,
        bucket: tuple[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.user = user
        # nginx's snippets for the S3 bucket, when start_backends made them.
        self.bucket = bucket
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping = False
        self.next_sweep = time.monotonic() + SWEEP_INTERVAL_SECONDS
        self.access_log: threading.Thread | None = None

    def sweep_if_due(self, now: float) -> None:
        """The periodic sweep of stale upload temp files, from the supervision loop."""
        if now >= self.next_sweep:
            self.next_sweep = now + SWEEP_INTERVAL_SECONDS
            sweep_stale_uploads(self.settings)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stopping = True

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str], cwd: Path
    ) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(argv, env=env, cwd=cwd, preexec_fn=die_with_parent(signal.SIGTERM))
        self.children[name] = child
        return child

    def start(self, run_dir: Path) -> None:
        nginx = find_nginx(self.settings.nginx)
        app_dir = run_dir / "app"
        socket_path = app_dir / "gunicorn.sock"
        try:
            text = nginx_conf.render(
                self.settings, run_dir, socket_path, "/dev/stdout", self.bucket
            )
        except nginx_conf.UnsafeValue as exc:
            raise LaunchError(str(exc)) from None
        check_port_free(self.settings)
        # prometheus_client's multiprocess mode: each worker's values in files
        # here, summed by /metrics (lfs_server.metrics); run_dir is new each start.
        (app_dir / "metrics").mkdir(parents=True)
        prehash_socket = app_dir / "prehash.sock"
        conf = run_dir / "nginx.conf"
        conf.write_text(text)
        checked = subprocess.run(
            [nginx, "-t", "-q", "-p", str(run_dir), "-c", str(conf), "-e", "stderr"],
            env=child_env.nginx_env(os.environ),
            capture_output=True,
            text=True,
        )
        if checked.returncode != 0:
            raise LaunchError(f"nginx rejected its configuration: {checked.stderr.strip()}")
        app_env = child_env.app_env(
            os.environ,
            {
                "LFS_DATA_DIR": str(self.settings.data_dir),
                "LFS_PUBLIC_URL": self.settings.public_url,
                "TMPDIR": str(app_dir),
                # gunicorn >= 25.1 puts its control socket there (not in ~/.gunicorn).
                "XDG_RUNTIME_DIR": str(app_dir),
                "PROMETHEUS_MULTIPROC_DIR": str(app_dir / "metrics"),
                PREHASH_SOCKET_ENV: str(prehash_socket),
            },
        )
        prehasher_env = child_env.prehasher_env(
            os.environ,
            {
                "TMPDIR": str(app_dir),
                PREHASH_DIR_ENV: str(self.settings.upload_tmp_dir),
                PREHASH_SOCKET_ENV: str(prehash_socket),
                PREHASH_WRITEBACK_ENV: "1" if self.settings.store == "local" else "0",
            },
        )
        self._spawn(
            "prehash", [sys.executable, "-m", "lfs_server.prehash_process"], prehasher_env, app_dir
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
        # nginx opens its access log (/dev/stdout) by name, which an
        # unprivileged nginx may not do for the launcher's own stdout (a root
        # terminal or log file): its stdout is a pipe this process copies out.
        read_end, write_end = os.pipe()
        try:
            self.children["nginx"] = subprocess.Popen(
                [nginx, "-p", str(run_dir), "-c", str(conf), "-e", "stderr"],
                env=child_env.nginx_env(os.environ),
                stdout=write_end,
                preexec_fn=die_with_parent(signal.SIGQUIT),
            )
        finally:
            os.close(write_end)
        self.access_log = threading.Thread(
            target=copy_out, args=(read_end, sys.stdout.fileno()), daemon=True
        )
        self.access_log.start()

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
        if self.access_log is not None:
            # nginx and its workers are gone: the pipe ends once it is drained.
            self.access_log.join(timeout=2.0)

    def run(self, run_dir: Path) -> int:
        """Start in `run_dir` (new, empty, this process's own) and supervise until a stop."""
        become_subreaper()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            self.start(run_dir)
            announce(self.settings, self.user)
            return self.wait()
        finally:
            self.stop()


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
            f"lfs-server: started as root, every process (this launcher, nginx, gunicorn, "
            f"the Prehasher) runs as {user.name} (uid {user.uid}), which owns {settings.data_dir}",
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


def hand_over(settings: Settings, user: RunAs, run_dir: Path) -> Settings:
    """Started as root: do what only root may, then drop root for good.

    Root makes the data dir (when new: nothing is in it yet), gives its tree
    to LFS_USER without following a link, copies the TLS certificate and key
    (which may be root's alone) into the run dir, gives the run dir to the
    user and checks the user reaches what it needs. Nothing inside the data
    dir, which the user controls, is opened, made, changed or removed as
    root. The settings returned name the copies.
    """
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
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
    settings = copy_tls(settings, user, run_dir)
    os.chown(run_dir, user.uid, user.gid, follow_symlinks=False)
    needs = [("LFS_DATA_DIR", settings.data_dir, RWX), *installation()]
    needs.append(("TMPDIR (the run dir)", run_dir, RWX))
    privileges.check_reach(user, needs)
    privileges.become(user)
    return settings


def copy_tls(settings: Settings, user: RunAs, run_dir: Path) -> Settings:
    """nginx runs as the user, and the TLS key may be root's alone: nginx reads
    copies in the run dir, the user's and 0600. The run dir must be root's still."""
    if settings.tls_cert is None or settings.tls_key is None:
        return settings
    copies = {}
    for setting, field, source in (
        ("LFS_TLS_CERT", "tls_cert", settings.tls_cert),
        ("LFS_TLS_KEY", "tls_key", settings.tls_key),
    ):
        copies[field] = run_dir / f"{field}.pem"
        try:
            privileges.give_copy(source, copies[field], user)
        except OSError as exc:
            raise PrivilegeError(
                f"{setting}: cannot copy {source} for LFS_USER {user.name} ({exc.strerror})"
            ) from None
    return dataclasses.replace(settings, **copies)


def prepare_data_dir(settings: Settings) -> None:
    """Secrets private (0600) whoever made them. Each is changed through a
    descriptor opened without following a link, so a link planted under one
    of these names changes nothing (and is left as it is)."""
    for name in PRIVATE_FILES:
        path = settings.data_dir / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP):
                continue
            raise LaunchError(f"LFS_DATA_DIR: cannot open {path} ({exc.strerror})") from None
        try:
            os.fchmod(fd, 0o600)
        except OSError as exc:
            raise LaunchError(
                f"LFS_DATA_DIR: cannot make {path} private ({exc.strerror})"
            ) from None
        finally:
            os.close(fd)


def run_upgrade(settings: Settings) -> None:
    """The one-time store upgrade (lfs_server.upgrade), as the serving user."""
    try:
        upgrade_store(settings)
    except OSError as exc:
        raise LaunchError(
            f"LFS_DATA_DIR: could not upgrade the object store ({exc}); start again to resume"
        ) from None


def start_backends(settings: Settings) -> tuple[str, str]:
    """What needs the store's and the database's libraries: the store's check,
    the one-time upgrade, the admin from LFS_ADMIN_USER, and nginx's snippets
    for the bucket (empty without one), which are returned."""
    check_store(settings)
    run_upgrade(settings)
    if settings.admin_user:
        from lfs_server.accounts import ensure_admin

        db = open_database(settings)
        try:
            ensure_admin(db, settings.admin_user, settings.admin_password)
        finally:
            db.close()
    try:
        return nginx_conf.s3_snippets(settings)
    except nginx_conf.UnsafeValue as exc:
        raise LaunchError(str(exc)) from None


def serve(settings: Settings) -> int:
    """Run the server until a stop signal (0) or a child's death (1); 2 when it cannot start."""
    run_dir: Path | None = None
    try:
        user = privileges.run_as(settings.user)
        run_dir = Path(tempfile.mkdtemp(prefix="lfs-server-"))
        if user is not None:
            settings = hand_over(settings, user, run_dir)
        # From here on as the user that serves (root is gone).
        settings = settings.with_secret()
        prepare_data_dir(settings)
        check_data_dir(settings)
        # In a child of its own: the launcher never holds boto3, psycopg or
        # Werkzeug (lfs_server.isolated). It has no thread yet.
        bucket = in_child(lambda: start_backends(settings))
        sweep_stale_uploads(settings)
        return Supervisor(settings, user, bucket).run(run_dir)
    except PrivilegeError as exc:
        print(f"lfs-server: {exc}", file=sys.stderr)
        return 2
    except LaunchError as exc:
        print(f"lfs-server: {exc}", file=sys.stderr)
        return 2
    except ChildFailed as exc:
        print(f"lfs-server: the start-up checks failed: {exc}", file=sys.stderr)
        return 2
    finally:
        if run_dir is not None:
            shutil.rmtree(run_dir, ignore_errors=True)
