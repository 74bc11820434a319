"""Who the server's processes run as.

Started as root (as `make run` on a fresh machine, or a system service),
the launcher only prepares: it gives the data dir to LFS_USER without
following a link, copies what only root may read (the TLS certificate and
key) into the run dir for that user, and then drops root for good, before
it touches anything inside the data dir, which that user controls. Every
process of the server, the launcher included, then runs as LFS_USER.
Started as anyone else, everything runs as that user and LFS_USER does not
apply.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

USERADD = "useradd --system --no-create-home --shell /usr/sbin/nologin"


class PrivilegeError(Exception):
    """The server cannot drop to LFS_USER; the message says what to do."""


@dataclass(frozen=True)
class RunAs:
    name: str
    uid: int
    gid: int
    group: str
    groups: tuple[int, ...]


def run_as(name: str) -> RunAs | None:
    """The user to drop to, or None when not running as root."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise PrivilegeError(
            f"LFS_USER: no user {name!r} on this machine to run the server as; "
            f"create it ({USERADD} {name}) or set LFS_USER to another unprivileged user"
        ) from None
    if entry.pw_uid == 0:
        raise PrivilegeError(f"LFS_USER: {name!r} is root; name an unprivileged user")
    try:
        group = grp.getgrgid(entry.pw_gid).gr_name
    except KeyError:
        raise PrivilegeError(
            f"LFS_USER: the primary group (gid {entry.pw_gid}) of {name!r} has no name"
        ) from None
    groups = tuple(os.getgrouplist(name, entry.pw_gid))
    return RunAs(name, entry.pw_uid, entry.pw_gid, group, groups)


def become(user: RunAs) -> None:
    """Drop root for good (groups first: afterwards there is no right to), and
    make sure of it: every uid and gid is the user's, and root cannot be had back."""
    os.setgroups(list(user.groups))
    os.setgid(user.gid)
    os.setuid(user.uid)
    if os.getresuid() != (user.uid,) * 3 or os.getresgid() != (user.gid,) * 3:
        raise PrivilegeError(f"LFS_USER: could not switch every id to {user.name}")
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise PrivilegeError(f"LFS_USER: switched to {user.name}, but root could be regained")


def give_tree(root: Path, user: RunAs) -> int:
    """Make `user` the owner of everything under `root`; returns the files left alone.

    Walks with directory descriptors and never follows a symbolic link, so
    nothing outside `root` changes hands even if the tree changes meanwhile.
    A file with several hard links is left as it is (a link could lead to a
    file outside the data dir); the server never makes such files at rest.
    """
    top = os.path.realpath(root)
    left = 0
    if _differs(os.stat(top), user):
        os.chown(top, user.uid, user.gid)
    for _dirpath, dirnames, filenames, dirfd in os.fwalk(top, follow_symlinks=False):
        for name in dirnames + filenames:
            info = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            if not _differs(info, user):
                continue
            if not stat.S_ISDIR(info.st_mode) and info.st_nlink > 1:
                left += 1
                continue
            os.chown(name, user.uid, user.gid, dir_fd=dirfd, follow_symlinks=False)
    return left


def give_copy(source: Path, target: Path, user: RunAs) -> None:
    """Copy `source`, which may be root's alone (a TLS key), to a new file
    `target` of `user`'s, 0600; `target`'s folder must be root's still."""
    data = source.read_bytes()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        os.fchown(fd, user.uid, user.gid)
        out.write(data)


def _differs(info: os.stat_result, user: RunAs) -> bool:
    return (info.st_uid, info.st_gid) != (user.uid, user.gid)


def blocked_path(path: Path, mode: int) -> Path | None:
    """The first folder on the way to `path` (symbolic links resolved) this
    process cannot pass, or `path` itself when it lacks `mode`; None when all
    is well."""
    path = Path(os.path.realpath(path))
    for parent in reversed(path.parents):
        if not os.access(parent, os.X_OK):
            return parent
    return None if os.access(path, mode) else path


def check_reach(user: RunAs, needs: list[tuple[str, Path, int]]) -> None:
    """Check, as `user` (in a child process), that it reaches each path.

    `needs` holds (what the path is, for the message; the path; the
    os.access mode). Raises PrivilegeError naming the first blocked one.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop, look, report, never return
        status = 1
        try:
            os.close(read_end)
            become(user)
            for what, path, mode in needs:
                blocked = blocked_path(path, mode)
                if blocked is not None:
                    os.write(write_end, f"{what}\0{path}\0{blocked}".encode())
                    break
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as report:
        found = report.read().decode()
    _, status = os.waitpid(pid, 0)
    if found:
        what, path, blocked = found.split("\0")
        if os.path.realpath(path) == blocked:
            problem = f"it may not use {blocked}"
        else:
            problem = f"{blocked} is not traversable for it"
        raise PrivilegeError(
            f"{what}: LFS_USER {user.name} cannot reach {path}: {problem} "
            "(chmod o+x the folders on the way, or move it where it can)"
        )
    if os.waitstatus_to_exitcode(status) != 0:
        raise PrivilegeError(f"LFS_USER: could not switch to {user.name}")


def become_owner_of(data_dir: Path) -> None:
    """For admin commands run as root: act as the owner of an existing data dir,
    so every file they create (database journal, quarantine) stays the server's."""
    if os.geteuid() != 0:
        return
    try:
        info = os.stat(data_dir)
    except OSError:
        return  # nothing there yet: the server takes ownership at its start
    if info.st_uid == 0:
        return
    try:
        entry = pwd.getpwuid(info.st_uid)
    except KeyError:
        become(RunAs(str(info.st_uid), info.st_uid, info.st_gid, "", (info.st_gid,)))
        return
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    become(RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid, "", groups))
