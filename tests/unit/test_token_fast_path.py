"""Tokens in this server's own form are checked without PyJWT, and no less strictly.

Their header must be one of the server's own segments byte for byte and
their signature the canonical base64url HMAC of the rest; every other
spelling of a token, even of a valid one, is refused.
"""

from __future__ import annotations

import time

import jwt
import pytest

from lfs_server import tokens
from lfs_server.tokens import Grant, TokenError, TokenSigner, key_id

KEY = b"k" * 40
OID = "a" * 64
GRANT = Grant("team/proj", OID, 10, "download", "alice", "0f" * 16, "read")


@pytest.fixture
def no_pyjwt(monkeypatch: pytest.MonkeyPatch) -> None:
    """PyJWT must not be asked: what these tests check is the server's own code."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("PyJWT was asked")

    monkeypatch.setattr(tokens.jwt, "decode", refuse)
    monkeypatch.setattr(tokens.jwt, "get_unverified_header", refuse)


def token(ttl: int = 60, key: bytes = KEY) -> str:
    return TokenSigner(key).sign(GRANT, int(time.time()) + ttl)


def test_own_tokens_and_pyjwt_made_ones_verify_without_pyjwt(no_pyjwt: None) -> None:
    signer = TokenSigner(KEY)
    mine = token()
    claims = jwt.api_jwt.PyJWT().decode(mine, KEY, algorithms=["HS256"])
    made = jwt.encode(claims, KEY, algorithm="HS256", headers={"kid": key_id(KEY)})
    assert signer.verify(mine, "download", OID) == GRANT
    assert signer.verify(made, "download", OID) == GRANT


def test_a_previous_key_verifies_without_pyjwt(no_pyjwt: None) -> None:
    old = b"o" * 40
    rotated = TokenSigner(KEY, previous_keys=(old,))
    assert rotated.verify(token(key=old), "download", OID) == GRANT


@pytest.mark.parametrize(
    "respell",
    [
        lambda t: t + "=",  # padding
        lambda t: t + "==",
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # another last character
        lambda t: t[:-5] + "*" + t[-5:],  # a character base64 decoding would skip
        lambda t: t + ".",
        lambda t: t.rpartition(".")[0] + ".",  # no signature
    ],
    ids=["padding", "double padding", "last character", "junk character", "dot", "empty"],
)
def test_other_spellings_of_a_valid_token_are_refused(respell) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TokenError, match="invalid"):
        TokenSigner(KEY).verify(respell(token()), "download", OID)


def test_expiry_and_binding_still_hold(no_pyjwt: None) -> None:
    signer = TokenSigner(KEY)
    with pytest.raises(TokenError, match="expired"):
        signer.verify(token(ttl=-1), "download", OID)
    with pytest.raises(TokenError, match="not valid"):
        signer.verify(token(), "upload", OID)
    with pytest.raises(TokenError, match="invalid"):
        signer.verify(token(key=b"x" * 40).replace(*_kid_swap()), "download", OID)


def _kid_swap() -> tuple[str, str]:
    """The header segment of another key's tokens, and this key's."""
    other = token(key=b"x" * 40).partition(".")[0]
    return other, token().partition(".")[0]
