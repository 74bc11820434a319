"""Every setting, read from the environment once, typed and validated.

This module is the single list of settings: env.list, the README table and
`lfs-server --help` agree with SETTINGS below. A bad value raises
SettingsError whose message names the variable, so the launcher can stop with
one clear line instead of a traceback.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import socket
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from lfs_server.durable import fsync_dir

MIN_SECRET_BYTES = 32
ANONYMOUS_MODES = ("none", "read", "write")
METRICS_MODES = ("off", "admin", "local", "public")
GIT_PASSWORD_MODES = ("allow", "deny")
WILDCARD_HOSTS = ("0.0.0.0", "::")
S3_ADDRESSING_STYLES = ("path", "virtual")
S3_TRANSFER_MODES = ("proxy", "direct")
# S3's limits on a multipart upload's parts (the last one may be smaller).
S3_MIN_PART_SIZE = 5 << 20
S3_MAX_PART_SIZE = 5 << 30
STORE_KINDS = ("local", "s3")
MAX_REPLICA_NAME = 253  # the longest host name, LFS_REPLICA_NAME's default

# name -> (default shown to people, description). Defaults are applied in
# Settings.from_env; this table documents them for --help and the README.
SETTINGS: dict[str, tuple[str, str]] = {
    "LFS_DATA_DIR": ("./data", "where objects, temp files, the secret and the database live"),
    "LFS_LISTEN": ("127.0.0.1:8080", "host:port nginx listens on (the only public port)"),
    "LFS_PUBLIC_URL": (
        "http://<LFS_LISTEN>",
        "base URL clients use; every href is built from it (localhost stands in for 0.0.0.0)",
    ),
    "LFS_SECRET_KEY": (
        "generated",
        "token signing key, at least 32 bytes; when unset generated once and kept in the "
        "data dir (in the database with LFS_DATABASE_URL, shared by every server on it)",
    ),
    "LFS_PREVIOUS_SECRET_KEYS": (
        "",
        "comma-separated old keys still accepted for verifying tokens (key rotation)",
    ),
    "LFS_DATABASE_URL": (
        "",
        "postgresql://user[:password]@host[:port]/database[?sslmode=...]: keep accounts, "
        "tokens, locks and the object index in PostgreSQL (empty: SQLite in LFS_DATA_DIR)",
    ),
    "LFS_DATABASE_PASSWORD_FILE": (
        "",
        "file holding the password of the LFS_DATABASE_URL user (a Docker secret)",
    ),
    "LFS_STORE": (
        "local",
        "where objects are kept: local (LFS_DATA_DIR/objects, on the same filesystem as "
        "uploads) or s3 (the LFS_S3_BUCKET; credentials from the AWS SDK's chain)",
    ),
    "LFS_TOKEN_TTL": ("3600", "lifetime of signed transfer URLs, seconds (60 .. 604800)"),
    "LFS_SESSION_IDLE": (
        "28800",
        "a web page session ends after this many seconds without a request (300 .. 604800)",
    ),
    "LFS_MAX_OBJECT_SIZE": ("50G", "largest object accepted, bytes or with K/M/G/T suffix"),
    "LFS_WORKERS": ("2", "gunicorn worker processes"),
    "LFS_THREADS": ("8", "threads per gunicorn worker: requests one worker serves at once"),
    "LFS_ANONYMOUS": ("none", "what callers without credentials may do: none, read or write"),
    "LFS_USER": (
        "lfs",
        "started as root, the launcher prepares, then drops to this user, which owns the "
        "data dir: every process runs as it (ignored when not started as root)",
    ),
    "LFS_NGINX": (
        "nginx",
        "the nginx binary: a path, or a name looked up in PATH and the sbin folders",
    ),
    "LFS_ADMIN_USER": ("", "create or update this admin user at start (for docker run set-ups)"),
    "LFS_ADMIN_PASSWORD": ("", "password of LFS_ADMIN_USER (prefer LFS_ADMIN_PASSWORD_FILE)"),
    "LFS_ADMIN_PASSWORD_FILE": (
        "",
        "file holding the password of LFS_ADMIN_USER (a Docker secret)",
    ),
    "LFS_TLS_CERT": (
        "",
        "PEM certificate (chain) file: when set with LFS_TLS_KEY, nginx serves HTTPS",
    ),
    "LFS_TLS_KEY": ("", "PEM private key file for LFS_TLS_CERT"),
    "LFS_STOP_GRACE": (
        "60",
        "seconds a stop (SIGTERM) waits for transfers in flight before cutting them (1 .. 3600)",
    ),
    "LFS_METRICS": (
        "admin",
        "who may read /metrics: off, admin (server admins' Basic credentials), "
        "local (also anyone connecting from loopback), public",
    ),
    "LFS_REPLICA_NAME": (
        "the host name",
        "this server's name among replicas behind one load balancer: /metrics says "
        "which replica answered in lfs_replica_info{replica=...}",
    ),
    "LFS_GIT_PASSWORDS": (
        "allow",
        "allow, or deny: the batch and locking APIs then take only access tokens, no passwords",
    ),
    "LFS_TRUSTED_PROXIES": (
        "",
        "comma-separated addresses or CIDR networks of reverse proxies whose "
        "X-Forwarded-For names the client (empty: trust none)",
    ),
    "LFS_S3_BUCKET": ("", "S3 bucket holding the objects (with the S3 store)"),
    "LFS_S3_PREFIX": (
        "",
        "key prefix inside the bucket, like lfs/ (letters, digits, . _ - and /; "
        "a trailing / is added)",
    ),
    "LFS_S3_ENDPOINT": (
        "",
        "http(s)://host[:port] of an S3-compatible server; empty for AWS S3",
    ),
    "LFS_S3_REGION": ("us-east-1", "region the bucket lives in (signs every request)"),
    "LFS_S3_ADDRESSING": (
        "path with LFS_S3_ENDPOINT, else virtual",
        "path (endpoint/bucket/key) or virtual (bucket.endpoint/key)",
    ),
    "LFS_S3_TRANSFER": (
        "proxy",
        "proxy (bytes go through nginx, one public port) or direct "
        "(clients use presigned bucket URLs)",
    ),
    "LFS_S3_PART_SIZE": (
        "16M",
        "part size of multipart uploads to the bucket (5M .. 5G); larger objects go in parts",
    ),
    "LFS_S3_CONCURRENCY": ("4", "parts of one upload sent to the bucket at once (1 .. 64)"),
}


class SettingsError(ValueError):
    """A setting has a bad value; the message names the variable."""


_SIZE_RE = re.compile(r"\s*(\d+)\s*([KMGT]?)(i?B?)?\s*", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(name: str, raw: str) -> int:
    """Parse `123`, `10G`, `512MiB`: binary units, as people mean for files."""
    match = _SIZE_RE.fullmatch(raw)
    if not match:
        raise SettingsError(f"{name}: expected bytes or a size like 10G, got {raw!r}")
    value = int(match.group(1)) * _SIZE_UNITS[match.group(2).upper()]
    if value <= 0:
        raise SettingsError(f"{name}: must be greater than zero, got {raw!r}")
    return value


def parse_int(name: str, raw: str, lo: int, hi: int) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(f"{name}: expected an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name}: must be between {lo} and {hi}, got {value}")
    return value


def parse_listen(name: str, raw: str) -> tuple[str, int]:
    host, sep, port = raw.strip().rpartition(":")
    if not sep or not host:
        raise SettingsError(f"{name}: expected host:port, got {raw!r}")
    return host.strip("[]"), parse_int(name, port, 1, 65535)


def parse_public_url(name: str, raw: str) -> str:
    url = raw.strip().rstrip("/")
    if not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", url):
        raise SettingsError(f"{name}: expected an absolute http(s) URL, got {raw!r}")
    return url


def parse_networks(name: str, raw: str) -> tuple[str, ...]:
    """Comma-separated IPv4/IPv6 addresses or networks, normalised (`10.1.2.3/8` is `10.0.0.0/8`)."""
    networks = []
    for entry in raw.split(","):
        if not entry.strip():
            continue
        try:
            networks.append(str(ipaddress.ip_network(entry.strip(), strict=False)))
        except ValueError:
            raise SettingsError(
                f"{name}: expected comma-separated addresses or CIDR networks "
                f"(like 10.0.0.0/8, fd00::/8), got {entry.strip()!r}"
            ) from None
    return tuple(networks)


def parse_replica_name(name: str, raw: str) -> str:
    """A label value for /metrics: printable, so a scrape stays one line per sample."""
    value = raw.strip()
    if len(value) > MAX_REPLICA_NAME or not value.isprintable():
        raise SettingsError(
            f"{name}: expected at most {MAX_REPLICA_NAME} printable characters, got {raw!r}"
        )
    return value


def readable_file(name: str, raw: str) -> Path | None:
    if not raw.strip():
        return None
    path = Path(raw.strip()).expanduser().absolute()
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise SettingsError(f"{name}: cannot read {raw.strip()!r} ({exc.strerror})") from None
    return path


def check_secret(name: str, secret: str) -> bytes:
    if not secret.strip():
        raise SettingsError(f"{name}: is only whitespace; unset it to have a key generated")
    key = secret.encode()
    if len(key) < MIN_SECRET_BYTES:
        raise SettingsError(
            f"{name}: must be at least {MIN_SECRET_BYTES} bytes (got {len(key)}); "
            "unset it to have one generated"
        )
    return key


# Key prefixes and bucket names stay within characters that URL-encoding
# leaves alone, so a key is the same string in a signed URL, in nginx's
# internal redirect and in the bucket.
_S3_PREFIX_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*/?")
_S3_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]")
_S3_ENDPOINT_RE = re.compile(r"https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:(\d{1,5}))?")
_S3_REGION_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class S3Settings:
    """Where the S3 store keeps objects; credentials come from the AWS SDK's chain."""

    bucket: str = ""
    prefix: str = ""
    endpoint: str = ""
    region: str = "us-east-1"
    addressing: str = "virtual"
    transfer: str = "proxy"
    part_size: int = 16 << 20
    concurrency: int = 4


def s3_settings_from(get: Callable[[str, str], str]) -> S3Settings:
    """Validate the LFS_S3_* settings (whichever store is chosen: a typo fails early)."""
    bucket = get("LFS_S3_BUCKET", "").strip()
    if bucket and not _S3_BUCKET_RE.fullmatch(bucket):
        raise SettingsError(
            "LFS_S3_BUCKET: expected 3 to 63 lowercase letters, digits, dots, hyphens "
            f"or underscores, starting and ending with a letter or digit, got {bucket!r}"
        )
    prefix = get("LFS_S3_PREFIX", "").strip()
    if prefix:
        if not _S3_PREFIX_RE.fullmatch(prefix):
            raise SettingsError(
                "LFS_S3_PREFIX: expected path segments of letters, digits, '.', '_' and '-' "
                f"joined by single '/', not starting with '/' or '.', got {prefix!r}"
            )
        prefix = prefix.rstrip("/") + "/"
    endpoint = get("LFS_S3_ENDPOINT", "").strip().rstrip("/")
    if endpoint:
        match = _S3_ENDPOINT_RE.fullmatch(endpoint)
        if not match or (match.group(3) and not 1 <= int(match.group(3)) <= 65535):
            raise SettingsError(
                "LFS_S3_ENDPOINT: expected http(s)://host[:port] with no path, "
                f"or empty for AWS S3, got {endpoint!r}"
            )
    region = get("LFS_S3_REGION", "us-east-1").strip()
    if not _S3_REGION_RE.fullmatch(region):
        raise SettingsError(f"LFS_S3_REGION: expected a region name like eu-west-1, got {region!r}")
    addressing = get("LFS_S3_ADDRESSING", "path" if endpoint else "virtual").strip().lower()
    if addressing not in S3_ADDRESSING_STYLES:
        raise SettingsError(f"LFS_S3_ADDRESSING: expected path or virtual, got {addressing!r}")
    transfer = get("LFS_S3_TRANSFER", "proxy").strip().lower()
    if transfer not in S3_TRANSFER_MODES:
        raise SettingsError(f"LFS_S3_TRANSFER: expected proxy or direct, got {transfer!r}")
    part_size = parse_size("LFS_S3_PART_SIZE", get("LFS_S3_PART_SIZE", "16M"))
    if not S3_MIN_PART_SIZE <= part_size <= S3_MAX_PART_SIZE:
        raise SettingsError(
            f"LFS_S3_PART_SIZE: must be between 5M and 5G (S3's part limits), got {part_size}"
        )
    concurrency = parse_int("LFS_S3_CONCURRENCY", get("LFS_S3_CONCURRENCY", "4"), 1, 64)
    return S3Settings(
        bucket=bucket,
        prefix=prefix,
        endpoint=endpoint,
        region=region,
        addressing=addressing,
        transfer=transfer,
        part_size=part_size,
        concurrency=concurrency,
    )


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    listen_host: str
    listen_port: int
    public_url: str
    secret_key: bytes = field(repr=False)
    previous_secret_keys: tuple[bytes, ...] = field(repr=False)
    token_ttl: int
    max_object_size: int
    workers: int
    threads: int
    anonymous: str
    tls_cert: Path | None = None
    tls_key: Path | None = None
    nginx: str = "nginx"
    admin_user: str = ""
    admin_password: str = field(default="", repr=False)
    metrics: str = "admin"
    git_passwords: str = "allow"
    replica_name: str = "localhost"
    trusted_proxies: tuple[str, ...] = ()
    stop_grace: int = 60
    session_idle: int = 28800
    user: str = "lfs"
    s3: S3Settings = field(default_factory=S3Settings)
    store: str = "local"
    # PostgreSQL's connection URL without its password (empty: SQLite), and the password.
    database_url: str = field(default="", repr=False)
    database_password: str = field(default="", repr=False)
    # True when the signing key is the one kept in the shared database (PostgreSQL
    # and no LFS_SECRET_KEY): secret_key is then empty until the app reads it.
    secret_in_database: bool = False
    # True when LFS_PUBLIC_URL is unset and LFS_LISTEN is a wildcard address:
    # hrefs then name localhost, and the launcher warns.
    public_url_guessed: bool = False

    @property
    def objects_dir(self) -> Path:
        return self.data_dir / "objects"

    @property
    def database_path(self) -> Path:
        return self.data_dir / "lfs.db"

    @property
    def upload_tmp_dir(self) -> Path:
        return self.data_dir / "tmp" / "uploads"

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, read_key_file: bool = True
    ) -> Settings:
        """Read and validate every setting; create the data dir and secret.

        With `read_key_file` false and LFS_SECRET_KEY unset, secret_key stays
        empty and nothing in the data dir is touched: the launcher started as
        root reads the key file only as LFS_USER (with_secret).
        """
        env = os.environ if env is None else env

        def get(name: str, default: str) -> str:
            value = env.get(name, "")
            return value if value.strip() else default

        data_dir = data_dir_from(env)
        host, port = parse_listen("LFS_LISTEN", get("LFS_LISTEN", "127.0.0.1:8080"))
        tls_cert = readable_file("LFS_TLS_CERT", get("LFS_TLS_CERT", ""))
        tls_key = readable_file("LFS_TLS_KEY", get("LFS_TLS_KEY", ""))
        if (tls_cert is None) != (tls_key is None):
            raise SettingsError("LFS_TLS_CERT and LFS_TLS_KEY: set both or neither")
        # A wildcard address is no address a client can use: default to localhost
        # (the launcher warns) until LFS_PUBLIC_URL names the real one.
        public_host = "localhost" if host in WILDCARD_HOSTS else host
        shown_host = f"[{public_host}]" if ":" in public_host else public_host
        scheme = "https" if tls_cert else "http"
        public_url = parse_public_url(
            "LFS_PUBLIC_URL", get("LFS_PUBLIC_URL", f"{scheme}://{shown_host}:{port}")
        )
        anonymous = get("LFS_ANONYMOUS", "none").strip().lower()
        if anonymous not in ANONYMOUS_MODES:
            raise SettingsError(
                f"LFS_ANONYMOUS: expected one of none, read, write, got {anonymous!r}"
            )
        metrics = get("LFS_METRICS", "admin").strip().lower()
        if metrics not in METRICS_MODES:
            raise SettingsError(
                f"LFS_METRICS: expected one of off, admin, local, public, got {metrics!r}"
            )
        git_passwords = get("LFS_GIT_PASSWORDS", "allow").strip().lower()
        if git_passwords not in GIT_PASSWORD_MODES:
            raise SettingsError(f"LFS_GIT_PASSWORDS: expected allow or deny, got {git_passwords!r}")
        store = get("LFS_STORE", "local").strip().lower()
        if store not in STORE_KINDS:
            raise SettingsError(
                f"LFS_STORE: expected one of {', '.join(STORE_KINDS)}, got {store!r}"
            )
        replica_name = parse_replica_name(
            "LFS_REPLICA_NAME", get("LFS_REPLICA_NAME", socket.gethostname() or "localhost")
        )
        trusted_proxies = parse_networks("LFS_TRUSTED_PROXIES", get("LFS_TRUSTED_PROXIES", ""))
        s3 = s3_settings_from(get)
        previous = tuple(
            check_secret("LFS_PREVIOUS_SECRET_KEYS", key)
            for key in get("LFS_PREVIOUS_SECRET_KEYS", "").split(",")
            if key.strip()
        )
        token_ttl = parse_int("LFS_TOKEN_TTL", get("LFS_TOKEN_TTL", "3600"), 60, 604800)
        max_size = parse_size("LFS_MAX_OBJECT_SIZE", get("LFS_MAX_OBJECT_SIZE", "50G"))
        workers = parse_int("LFS_WORKERS", get("LFS_WORKERS", "2"), 1, 64)
        threads = parse_int("LFS_THREADS", get("LFS_THREADS", "8"), 1, 64)
        stop_grace = parse_int("LFS_STOP_GRACE", get("LFS_STOP_GRACE", "60"), 1, 3600)
        session_idle = parse_int("LFS_SESSION_IDLE", get("LFS_SESSION_IDLE", "28800"), 300, 604800)
        admin_user = get("LFS_ADMIN_USER", "").strip()
        admin_password = admin_password_from(env, admin_user)
        database_url, database_password = database_from(env)
        explicit_secret = env.get("LFS_SECRET_KEY", "")
        if explicit_secret:
            secret = check_secret("LFS_SECRET_KEY", explicit_secret)
        elif database_url:
            secret = b""  # every server on the database shares one: tokens.signing_key
        elif read_key_file:
            secret = load_or_create_secret(data_dir)
        else:
            secret = b""
        return cls(
            data_dir=data_dir,
            listen_host=host,
            listen_port=port,
            public_url=public_url,
            secret_key=secret,
            previous_secret_keys=previous,
            token_ttl=token_ttl,
            max_object_size=max_size,
            workers=workers,
            threads=threads,
            anonymous=anonymous,
            tls_cert=tls_cert,
            tls_key=tls_key,
            public_url_guessed=host in WILDCARD_HOSTS and not get("LFS_PUBLIC_URL", ""),
            admin_user=admin_user,
            admin_password=admin_password,
            nginx=get("LFS_NGINX", "nginx").strip(),
            metrics=metrics,
            git_passwords=git_passwords,
            replica_name=replica_name,
            trusted_proxies=trusted_proxies,
            stop_grace=stop_grace,
            session_idle=session_idle,
            user=get("LFS_USER", "lfs").strip(),
            s3=s3,
            store=store,
            database_url=database_url,
            database_password=database_password,
            secret_in_database=database_url != "" and not explicit_secret,
        )

    def with_secret(self) -> Settings:
        """These settings with the key file read (or created) if it was not yet."""
        if self.secret_key or self.secret_in_database:
            return self
        return replace(self, secret_key=load_or_create_secret(self.data_dir))


def data_dir_from(env: Mapping[str, str]) -> Path:
    """LFS_DATA_DIR alone: admin commands look at its owner before reading the rest."""
    raw = env.get("LFS_DATA_DIR", "")
    return Path(raw if raw.strip() else "./data").expanduser().absolute()


def database_from(env: Mapping[str, str]) -> tuple[str, str]:
    """LFS_DATABASE_URL without its password, and the password (from the URL or
    LFS_DATABASE_PASSWORD_FILE). No message shows the URL: it may hold the password."""
    raw = env.get("LFS_DATABASE_URL", "").strip()
    password_file = env.get("LFS_DATABASE_PASSWORD_FILE", "").strip()
    if not raw:
        if password_file:
            raise SettingsError("LFS_DATABASE_PASSWORD_FILE: set LFS_DATABASE_URL too")
        return "", ""
    return parse_database_url("LFS_DATABASE_URL", raw, password_file)


def parse_database_url(name: str, raw: str, password_file: str) -> tuple[str, str]:
    """A PostgreSQL URL given as `name` (a setting or an option) without its
    password, and the password: from the URL or from `password_file`, not both."""
    parts = urlsplit(raw.strip())
    expected = f"{name}: expected postgresql://user@host[:port]/database"
    if parts.scheme not in ("postgresql", "postgres"):
        raise SettingsError(f"{expected} (scheme {parts.scheme!r} is not postgresql)")
    try:
        parts.port  # noqa: B018 (validates the port)
    except ValueError:
        raise SettingsError(f"{name}: the port is not a number from 1 to 65535") from None
    if not parts.hostname or not parts.path.strip("/") or not parts.username:
        raise SettingsError(f"{expected} (a user, a host and a database name)")
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, url_password = userinfo.partition(":")
    password = unquote(url_password)
    if password_file:
        if password:
            raise SettingsError(
                f"LFS_DATABASE_PASSWORD_FILE: the password is in {name} already; set one of them"
            )
        path = readable_file("LFS_DATABASE_PASSWORD_FILE", password_file)
        assert path is not None
        password = path.read_text().strip("\r\n")
    url = urlunsplit((parts.scheme, f"{user}@{hostport}", parts.path, parts.query, ""))
    return url, password


def admin_password_from(env: Mapping[str, str], admin_user: str) -> str:
    password = env.get("LFS_ADMIN_PASSWORD", "")
    password_file = env.get("LFS_ADMIN_PASSWORD_FILE", "").strip()
    if password_file:
        path = readable_file("LFS_ADMIN_PASSWORD_FILE", password_file)
        assert path is not None
        password = path.read_text().strip("\r\n")
    if admin_user and not password:
        raise SettingsError("LFS_ADMIN_USER: needs LFS_ADMIN_PASSWORD or LFS_ADMIN_PASSWORD_FILE")
    if password and not admin_user:
        raise SettingsError("LFS_ADMIN_PASSWORD: set LFS_ADMIN_USER too")
    return password


def load_or_create_secret(data_dir: Path) -> bytes:
    """Keep a generated key in the data dir (0600) so tokens survive restarts.

    A new data dir is made 0700: it holds the key and the accounts database.
    """
    path = data_dir / "secret.key"
    name = f"LFS_SECRET_KEY (from {path.name} in LFS_DATA_DIR)"
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            write_new_secret(path)
        key = path.read_text().strip()
    except OSError as exc:
        raise SettingsError(
            f"LFS_DATA_DIR: cannot create or read the secret key ({exc.strerror})"
        ) from None
    if not key:
        raise SettingsError(
            f"{name}: the file is empty or only whitespace; remove it to have a new key "
            "generated (transfer URLs signed with the lost key then fail) or set LFS_SECRET_KEY"
        )
    return check_secret(name, key)


def write_new_secret(path: Path) -> None:
    """Write a fresh key to `path` atomically, unless another process got there first.

    The key is written and fsynced under a temporary name, then hard-linked
    into place: the link fails rather than replace a key a concurrent start
    just wrote, and a crash leaves either no key or a whole one (at worst a
    stray temp file, which nothing reads).
    """
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48))
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temp, path)
    finally:
        os.unlink(temp)
    fsync_dir(path.parent)
