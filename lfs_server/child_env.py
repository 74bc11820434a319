"""The environment of each process the launcher starts: named variables only.

The launcher's own environment may hold the admin password, the signing
keys and whatever else a service manager or shell put there. A child gets
only what it needs, because its memory (the environment included) is
readable by the user it runs as, and nginx and the Prehasher face uploads
from the network: nginx gets the time zone alone, the Prehasher what any
Python process needs, and gunicorn (the app) also its settings, signing
keys included, and the S3 SDK's variables.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from lfs_server.settings import SETTINGS

# Settings only the launcher uses: files the app need not read (the TLS key
# may be root's alone) and the admin it creates at start.
LAUNCHER_ONLY = frozenset(
    {
        "LFS_TLS_CERT",
        "LFS_TLS_KEY",
        "LFS_ADMIN_USER",
        "LFS_ADMIN_PASSWORD",
        "LFS_ADMIN_PASSWORD_FILE",
    }
)
APP_SETTINGS = frozenset(SETTINGS) - LAUNCHER_ONLY
# What any Python process may need: the search path, locale, time zone, Python's own.
BASICS = frozenset({"PATH", "LANG", "LANGUAGE", "TZ"})
BASIC_PREFIXES = ("LC_", "PYTHON")
# The S3 store's SDK: credentials, region, CA bundle and proxies.
SDK_PREFIXES = ("AWS_",)
PROXIES = frozenset(
    name
    for base in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")
    for name in (base, base.lower())
)


def _pick(
    env: Mapping[str, str], names: Iterable[str], prefixes: tuple[str, ...]
) -> dict[str, str]:
    wanted = frozenset(names)
    return {
        name: value for name, value in env.items() if name in wanted or name.startswith(prefixes)
    }


def nginx_env(env: Mapping[str, str]) -> dict[str, str]:
    """nginx needs nothing but the time zone of its log lines."""
    return _pick(env, {"TZ"}, ())


def prehasher_env(env: Mapping[str, str], own: Mapping[str, str]) -> dict[str, str]:
    """The Prehasher: a Python process, plus its `own` variables (folder, socket)."""
    return {**_pick(env, BASICS, BASIC_PREFIXES), **own}


def app_env(env: Mapping[str, str], own: Mapping[str, str]) -> dict[str, str]:
    """gunicorn: a Python process with the app's settings, the S3 SDK's
    variables and its `own` (run-time folders, the Prehasher's socket)."""
    return {
        **_pick(env, BASICS | APP_SETTINGS | PROXIES, BASIC_PREFIXES + SDK_PREFIXES),
        **own,
    }
