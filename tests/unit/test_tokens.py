from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from lfs_server.tokens import Grant, TokenError, TokenSigner, key_id

KEY = b"k" * 40
OID = "a" * 64
UID = "0f" * 16
GRANT = Grant("team/proj", OID, 10, "download", "alice", UID, "read")


def sign(signer: TokenSigner, grant: Grant = GRANT, ttl: int = 60) -> str:
    return signer.sign(grant, int(time.time()) + ttl)


def test_round_trip() -> None:
    signer = TokenSigner(KEY)
    assert signer.verify(sign(signer), "download", OID) == GRANT


def test_header_names_the_key() -> None:
    token = sign(TokenSigner(KEY))
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "kid": key_id(KEY), "typ": "JWT"}


@pytest.mark.parametrize(("op", "oid"), [("upload", OID), ("verify", OID), ("download", "b" * 64)])
def test_bound_to_operation_and_oid(op: str, oid: str) -> None:
    signer = TokenSigner(KEY)
    with pytest.raises(TokenError, match="not valid"):
        signer.verify(sign(signer), op, oid)


def test_expired() -> None:
    signer = TokenSigner(KEY)
    with pytest.raises(TokenError, match="expired"):
        signer.verify(sign(signer, ttl=-5), "download", OID)


def test_forged_with_another_key() -> None:
    forged = sign(TokenSigner(b"x" * 40))
    with pytest.raises(TokenError):
        TokenSigner(KEY).verify(forged, "download", OID)


def test_forged_key_id_cannot_pick_a_key() -> None:
    claims = jwt.decode(sign(TokenSigner(KEY)), KEY, algorithms=["HS256"])
    forged = jwt.encode(claims, b"x" * 40, algorithm="HS256", headers={"kid": key_id(KEY)})
    with pytest.raises(TokenError, match="invalid"):
        TokenSigner(KEY).verify(forged, "download", OID)


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_tampered_payload() -> None:
    header, _, signature = sign(TokenSigner(KEY)).split(".")
    claims = {"repo": "other/repo", "oid": OID, "size": 10, "op": "download"}
    claims |= {"sub": "alice", "uid": UID, "right": "read", "iat": 1, "exp": int(time.time()) + 60}
    with pytest.raises(TokenError):
        TokenSigner(KEY).verify(f"{header}.{_b64(claims)}.{signature}", "download", OID)


def test_alg_none_refused() -> None:
    claims = jwt.decode(sign(TokenSigner(KEY)), KEY, algorithms=["HS256"])
    unsigned = f"{_b64({'alg': 'none', 'kid': key_id(KEY)})}.{_b64(claims)}."
    with pytest.raises(TokenError):
        TokenSigner(KEY).verify(unsigned, "download", OID)


def test_missing_claim_refused() -> None:
    claims = {"repo": "team/proj", "oid": OID, "op": "download", "exp": int(time.time()) + 60}
    token = jwt.encode(claims, KEY, algorithm="HS256", headers={"kid": key_id(KEY)})
    with pytest.raises(TokenError):
        TokenSigner(KEY).verify(token, "download", OID)


def test_rotation_keeps_old_tokens_valid() -> None:
    old = b"o" * 40
    token = sign(TokenSigner(old))
    rotated = TokenSigner(KEY, previous_keys=(old,))
    assert rotated.verify(token, "download", OID) == GRANT
    assert jwt.get_unverified_header(sign(rotated))["kid"] == key_id(KEY)
    with pytest.raises(TokenError, match="unknown key"):
        TokenSigner(KEY).verify(token, "download", OID)


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "Bearer x"])
def test_garbage(garbage: str) -> None:
    with pytest.raises(TokenError):
        TokenSigner(KEY).verify(garbage, "download", OID)


def test_signing_matches_pyjwt_byte_for_byte() -> None:
    signer = TokenSigner(KEY)
    token = sign(signer)
    claims = jwt.decode(token, KEY, algorithms=["HS256"])
    assert token == jwt.encode(claims, KEY, algorithm="HS256", headers={"kid": key_id(KEY)})


def test_batch_signer_refuses_what_it_cannot_encode_safely() -> None:
    batch = TokenSigner(KEY).for_batch("team/proj", "alice", UID, "read", int(time.time()) + 60)
    assert TokenSigner(KEY).verify(batch.sign("download", OID, 10), "download", OID) == GRANT
    for op, oid, size in [("delete", OID, 1), ("download", 'a"b', 1), ("download", "é" * 64, 1)]:
        with pytest.raises(ValueError):
            batch.sign(op, oid, size)
    with pytest.raises(ValueError):
        batch.sign("download", OID, "1")  # type: ignore[arg-type]
