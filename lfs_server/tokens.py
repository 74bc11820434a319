"""Signed transfer tokens (JWT, HS256).

A token names exactly one repository, oid, size and operation and carries
the user and right it was minted for, so the transfer endpoints never have
to trust the URL. The key id (`kid`) lets old keys keep verifying during a
rotation while only the current key signs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass

import jwt
from jwt.algorithms import HMACAlgorithm

ALGORITHM = "HS256"
OPERATIONS = ("upload", "download", "verify")
_REQUIRED = ["exp", "iat", "repo", "oid", "size", "op", "sub", "right"]


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
    right: str


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"lfs-server-kid:" + key).hexdigest()[:16]


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


class TokenSigner:
    """Signs with the current key; verifies with the current and previous keys.

    A batch signs up to 1000 tokens, so signing skips PyJWT's generic
    encoder: the header segment is built once and PyJWT's HS256 algorithm
    signs `header.payload`. The result is byte-for-byte what `jwt.encode`
    makes (a unit test holds it to that); verification is plain PyJWT.
    """

    def __init__(self, key: bytes, previous_keys: tuple[bytes, ...] = ()) -> None:
        self._key = key
        self._kid = key_id(key)
        self._keys = {key_id(k): k for k in (*previous_keys, key)}
        self._hmac = HMACAlgorithm(HMACAlgorithm.SHA256)
        header = {"alg": ALGORITHM, "kid": self._kid, "typ": "JWT"}
        self._header = _b64(json.dumps(header, separators=(",", ":")).encode())

    def sign(self, grant: Grant, expires_at: int) -> str:
        claims = {
            "repo": grant.repo,
            "oid": grant.oid,
            "size": grant.size,
            "op": grant.op,
            "sub": grant.user,
            "right": grant.right,
            "iat": int(time.time()),
            "exp": expires_at,
        }
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = self._header + b"." + payload
        signature = _b64(self._hmac.sign(signing_input, self._key))
        return (signing_input + b"." + signature).decode()

    def verify(self, token: str, op: str, oid: str) -> Grant:
        """Check signature, expiry and that the token is for this op and oid."""
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
        try:
            grant = Grant(
                repo=str(claims["repo"]),
                oid=str(claims["oid"]),
                size=int(claims["size"]),
                op=str(claims["op"]),
                user=str(claims["sub"]),
                right=str(claims["right"]),
            )
        except (TypeError, ValueError):
            raise TokenError("invalid token") from None
        if grant.op != op or grant.oid != oid:
            raise TokenError(f"token is not valid for {op} of this object")
        return grant
