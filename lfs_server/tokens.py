"""Signed transfer tokens (JWT, HS256).

A token names exactly one repository, oid, size and operation and carries
the user and right it was minted for, so the transfer endpoints never have
to trust the URL. The user is both a name (`sub`, for messages) and an
identity (`uid`), which a user removed and added again under the same name
does not share. The key id (`kid`) lets old keys keep verifying during a
rotation while only the current key signs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jwt

if TYPE_CHECKING:
    from lfs_server.db import Database
    from lfs_server.settings import Settings

# The name of the signing key kept in a shared database (server_keys).
SHARED_SIGNING_KEY = "transfer-token-signing"

ALGORITHM = "HS256"
OPERATIONS = ("upload", "download", "verify")
_REQUIRED = ["exp", "iat", "repo", "oid", "size", "op", "sub", "uid", "right"]


class TokenError(Exception):
    """A token is missing, forged, expired or not for this transfer."""


@dataclass(frozen=True)
class Grant:
    """What a verified token allows."""

    repo: str
    oid: str
    size: int
    op: str
    user: str
    uid: str
    right: str


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"lfs-server-kid:" + key).hexdigest()[:16]


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def _header(kid: str) -> bytes:
    """The header segment of the tokens signed with the key `kid` names."""
    return _b64(_json({"alg": ALGORITHM, "kid": kid, "typ": "JWT"}).encode())


class TokenSigner:
    """Signs with the current key; verifies with the current and previous keys.

    A batch signs up to 1000 tokens, so signing skips PyJWT's generic
    encoder (about 30 us a token): the header segment is built once per key,
    the claims a batch shares once per batch (see BatchSigner), and the
    one-shot HMAC-SHA256 of the standard library signs `header.payload`.
    The result is byte-for-byte what `jwt.encode` makes (a unit test holds
    it to that). Every upload and download checks a token, so verification
    of the tokens this server makes skips PyJWT too (about 150 us a token):
    their header segment must be one of this server's own, byte for byte
    (so the algorithm is HS256 and the key is the kid's), and their
    signature the canonical base64url of the HMAC, compared in constant
    time. Any other token goes through plain PyJWT with an explicit
    algorithm list and required claims, which words what is wrong with it.
    """

    def __init__(self, key: bytes, previous_keys: tuple[bytes, ...] = ()) -> None:
        self._key = key
        self._kid = key_id(key)
        self._keys = {key_id(k): k for k in (*previous_keys, key)}
        self._header = _header(self._kid)
        # The header segment of each key's tokens, as this server makes them.
        self._by_header = {_header(kid).decode(): k for kid, k in self._keys.items()}

    def for_batch(self, repo: str, user: str, uid: str, right: str, expires_at: int) -> BatchSigner:
        return BatchSigner(self, repo, user, uid, right, expires_at)

    def sign(self, grant: Grant, expires_at: int) -> str:
        batch = self.for_batch(grant.repo, grant.user, grant.uid, grant.right, expires_at)
        return batch.sign(grant.op, grant.oid, grant.size)

    def _sign_payload(self, payload: str) -> str:
        signing_input = self._header + b"." + _b64(payload.encode())
        signature = hmac.digest(self._key, signing_input, "sha256")
        return (signing_input + b"." + _b64(signature)).decode()

    def verify(self, token: str, op: str, oid: str) -> Grant:
        """Check signature, expiry and that the token is for this op and oid."""
        claims = self._own_claims(token)
        grant = self._grant(claims if claims is not None else self._pyjwt_claims(token))
        if grant.op != op or grant.oid != oid:
            raise TokenError(f"token is not valid for {op} of this object")
        return grant

    def _own_claims(self, token: str) -> dict[str, Any] | None:
        """The claims of a token in this server's own form, checked; None for any other form."""
        header, _, rest = token.partition(".")
        payload, _, signature = rest.partition(".")
        key = self._by_header.get(header)
        if key is None or not payload or "." in signature:
            return None
        expected = _b64(hmac.digest(key, f"{header}.{payload}".encode(), "sha256")).decode()
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise TokenError("invalid token")
        try:
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except ValueError:
            raise TokenError("invalid token") from None
        if not isinstance(claims, dict) or any(name not in claims for name in _REQUIRED):
            raise TokenError("invalid token")
        expires = claims["exp"]
        if not isinstance(expires, int) or isinstance(expires, bool):
            raise TokenError("invalid token")
        if expires <= time.time():
            raise TokenError("token expired; request a new one through the batch API")
        return claims

    def _pyjwt_claims(self, token: str) -> dict[str, Any]:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = self._keys.get(kid) if isinstance(kid, str) else None
            if key is None:
                raise TokenError("token signed with an unknown key")
            claims = jwt.decode(token, key, algorithms=[ALGORITHM], options={"require": _REQUIRED})
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired; request a new one through the batch API") from None
        except jwt.PyJWTError:
            raise TokenError("invalid token") from None
        return claims

    @staticmethod
    def _grant(claims: dict[str, Any]) -> Grant:
        try:
            return Grant(
                repo=str(claims["repo"]),
                oid=str(claims["oid"]),
                size=int(claims["size"]),
                op=str(claims["op"]),
                user=str(claims["sub"]),
                uid=str(claims["uid"]),
                right=str(claims["right"]),
            )
        except (TypeError, ValueError):
            raise TokenError("invalid token") from None


class BatchSigner:
    """Tokens of one batch: repo, user, right and times are encoded once;
    per object only the oid (hex), size (int) and operation are added."""

    def __init__(
        self, signer: TokenSigner, repo: str, user: str, uid: str, right: str, expires_at: int
    ):
        self._signer = signer
        self._head = f'{{"repo":{_json(repo)},"oid":"'
        tail = {"sub": user, "uid": uid, "right": right, "iat": int(time.time()), "exp": expires_at}
        self._tail = "," + _json(tail)[1:]

    def sign(self, op: str, oid: str, size: int) -> str:
        if op not in OPERATIONS or not oid.isalnum() or not oid.isascii():
            raise ValueError("tokens are only signed for a valid operation and oid")
        payload = f'{self._head}{oid}","size":{size:d},"op":"{op}"{self._tail}'
        return self._signer._sign_payload(payload)


def signing_key(settings: Settings, db: Database) -> bytes:
    """LFS_SECRET_KEY, or the data dir's generated key; on PostgreSQL without
    LFS_SECRET_KEY, the key generated once and kept in the database, so a token
    one server signs is valid on every other (never a key per server)."""
    if not settings.secret_in_database:
        return settings.secret_key
    return db.shared_key(SHARED_SIGNING_KEY, secrets.token_urlsafe(48)).encode()
