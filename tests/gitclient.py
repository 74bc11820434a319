"""Drive the real git and git-lfs clients as one isolated user."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from urllib.parse import quote


class GitUser:
    """A person with their own HOME: gitconfig, git-lfs hooks and credentials.

    The environment is built from nothing but HOME, PATH and a locale, so
    none of the developer's configuration, credential helpers, proxies or
    prompts leak in. Credentials go through git's `store` helper, as people
    set it up.
    """

    def __init__(
        self, home: Path, name: str = "tester", password: str | None = None, url: str = ""
    ) -> None:
        self.home = home
        self.name = name
        home.mkdir(parents=True, exist_ok=True)
        self.env = {
            "HOME": str(home),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
            "LANG": "C.UTF-8",
        }
        self.git("config", "--global", "user.name", name, cwd=home)
        self.git("config", "--global", "user.email", f"{name}@example.test", cwd=home)
        self.git("config", "--global", "init.defaultBranch", "main", cwd=home)
        self.git("lfs", "install", "--skip-repo", cwd=home)
        if password is not None:
            self.set_password(name, password, url)

    def set_password(self, name: str, password: str, url: str) -> None:
        scheme, _, host = url.partition("://")
        line = (
            f"{scheme}://{quote(name, safe='')}:{quote(password, safe='')}@{host.split('/')[0]}\n"
        )
        credentials = self.home / ".git-credentials"
        credentials.write_text(line)
        credentials.chmod(0o600)
        self.git("config", "--global", "credential.helper", "store", cwd=self.home)

    def run(
        self, *argv: str, cwd: Path, check: bool = True, timeout: float = 300, **env: str
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` as this user (`env` added to theirs); with `check`, it must succeed."""
        done = subprocess.run(
            argv,
            cwd=cwd,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
            )
        return done

    def git(self, *args: str, cwd: Path, **env: str) -> str:
        """What `git args` printed on stdout; it must succeed."""
        return self.run("git", *args, cwd=cwd, **env).stdout

    def fails(self, *args: str, cwd: Path) -> str:
        """What `git args` printed (stdout and stderr); it must fail."""
        done = self.run("git", *args, cwd=cwd, check=False)
        assert done.returncode != 0, f"git {' '.join(args)} succeeded:\n{done.stdout}"
        return done.stdout + done.stderr

    def new_repo(self, path: Path, lfs_url: str, remote: Path) -> Path:
        """A work tree tracking *.bin with LFS, its remote a bare repository."""
        if not remote.exists():
            self.git("init", "-q", "--bare", str(remote), cwd=self.home)
        self.git("init", "-q", str(path), cwd=self.home)
        self.git("remote", "add", "origin", str(remote), cwd=path)
        self.git("config", "lfs.url", lfs_url, cwd=path)
        self.git("lfs", "track", "*.bin", cwd=path)
        return path

    def clone(self, remote: Path, path: Path, lfs_url: str) -> Path:
        """Clone without smudging and point the clone at the server; `git lfs pull` fetches."""
        self.git("clone", "-q", str(remote), str(path), cwd=self.home, GIT_LFS_SKIP_SMUDGE="1")
        self.git("config", "lfs.url", lfs_url, cwd=path)
        return path

    def commit_files(self, repo: Path, files: dict[str, bytes], message: str = "add files") -> None:
        for name, data in files.items():
            target = repo / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        self.git("add", "-A", cwd=repo)
        self.git("commit", "-q", "-m", message, cwd=repo)
