"""Endpoints behind the signed hrefs: nginx moves the bytes, these decide.

Upload is two internal calls from nginx: `upload-auth` (auth_request, before
any body byte is read; nginx answers it itself for bodies under 1 MB) and
`upload-commit` (after nginx has written the body to a temp file, whose path
it passes in a header), which checks the token again: the upload is verified,
the store puts it in place, and only then does the object index let the
token's repository see it; the PUT's 200 means all of that, so batch
answers offer no verify action for it. With direct S3 transfers the body
goes to the bucket itself, and `verify` checks and commits it
(store.take_direct). Download and verify look in that index for the
token's repository; a download answers with an X-Accel-Redirect to where
the store keeps the bytes, so nginx sends them itself (Range included).
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, request

from lfs_server import metrics
from lfs_server.access import level
from lfs_server.auth import still_allowed
from lfs_server.errors import LFSError, lfs_json
from lfs_server.jsonbody import read_json_object
from lfs_server.services import services
from lfs_server.store import INSUFFICIENT_STORAGE, CommitError, is_valid_oid
from lfs_server.tokens import Grant, TokenError

bp = Blueprint("transfer", __name__)


NEEDED_RIGHT = {"upload": "write", "download": "read", "verify": "write"}


def check_token(op: str, oid: str | None) -> Grant:
    """The grant of the request's bearer token for `op` on `oid`, or 401/403.

    The token's user must still hold the right now, not only when it was
    minted, so removing a user or a grant stops their transfers at once.
    """
    value = request.headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise LFSError(401, "missing transfer token; request one through the batch API")
    if oid is None or not is_valid_oid(oid):
        raise LFSError(403, "invalid oid")
    try:
        grant = services().signer.verify(token.strip(), op, oid)
    except TokenError as exc:
        raise LFSError(403, str(exc)) from None
    needed = NEEDED_RIGHT[op]
    if level(grant.right) < level(needed) or not still_allowed(
        grant.user, grant.uid, grant.repo, needed
    ):
        raise LFSError(403, f"{grant.user} no longer has {needed} access to this repository")
    return grant


def _upload_grant() -> Grant:
    """The upload token's grant, with the PUT's Content-Length its size.

    Checked before the body (upload-auth, from 1 MB on), at commit, and
    before upload-failed says anything about the disk.
    """
    grant = check_token("upload", request.headers.get("X-LFS-Oid"))
    # A body without Content-Length (chunked) could stream far past the
    # token's size before the commit saw it; nginx refuses a request with
    # both Content-Length and Transfer-Encoding itself (400).
    declared = request.headers.get("X-LFS-Content-Length", "")
    if not declared:
        raise LFSError(411, f"Content-Length required: the object size, {grant.size} bytes")
    if declared != str(grant.size):
        raise LFSError(403, f"Content-Length must be the object size, {grant.size} bytes")
    return grant


@bp.get("/.lfs-internal/upload-auth")
def upload_auth() -> Response:
    """nginx's auth_request: only the status and X-LFS-Error reach the client.

    auth_request passes on 2xx, 401 and 403 only and turns anything else
    into 500; nginx's @e500 gives 411 and 507 back their own status.
    """
    try:
        grant = _upload_grant()
        # Refuse before the body rather than let nginx fail mid-way; should
        # writing the body fail all the same, upload_failed() answers.
        room = services().store.free_space()
        if room is not None and grant.size > room:
            raise LFSError(507, INSUFFICIENT_STORAGE)
    except LFSError as exc:
        # nginx pastes this into a JSON string literal: keep it free of quotes.
        exc.headers["X-LFS-Error"] = exc.message.replace('"', "'").replace("\\", "/")
        raise
    return Response(status=204)


@bp.get("/.lfs-internal/upload-failed")
def upload_failed() -> Response:
    """nginx's error page for an upload whose body it could not write after upload-auth passed.

    nginx knows only that the write failed; the errno is in its error log.
    A full disk (ENOSPC) leaves less free space than the object needs (its
    partial temp file still holds what was written), so the store's free
    space decides: 507 when the object does not fit, else a plain 500 that
    the client retries. Quotas (EDQUOT) do not show in the free space: an
    upload over its quota gets the 500.
    """
    size = _upload_grant().size
    room = services().store.free_space()
    if room is not None and (room == 0 or room < size):
        raise LFSError(507, INSUFFICIENT_STORAGE)
    raise LFSError(500, "could not write the upload; try again")


@bp.post("/.lfs-internal/upload-commit")
def upload_commit() -> Response:
    grant = _upload_grant()
    upload = Path(request.headers.get("X-LFS-Upload-File", ""))
    tmp_dir = services().settings.upload_tmp_dir
    if not upload.is_absolute() or upload.parent != tmp_dir:
        raise LFSError(500, "upload was not received")
    # The body is on the disk now. A small one came in before any look at
    # the free space, and uploads running at once may together have outgrown
    # what each was allowed: none is taken once the store's reserve is gone.
    if services().store.free_space() == 0:
        raise LFSError(507, INSUFFICIENT_STORAGE)
    try:
        stored = services().objects.accept(grant.repo, grant.oid, grant.size, upload)
    except CommitError as exc:
        metrics.upload_verify_failed(exc.reason)
        raise LFSError(exc.status, exc.message) from None
    metrics.upload_accepted(grant.size, newly_stored=stored)
    return lfs_json({})


@bp.route("/.lfs/download/<oid>", methods=["GET", "HEAD"])
def download(oid: str) -> Response:
    grant = check_token("download", oid)
    app = services()
    size = app.objects.size(grant.repo, oid)
    if size is None:
        raise LFSError(404, "object does not exist")
    response = Response(status=200, mimetype="application/octet-stream")
    response.headers["X-Accel-Redirect"] = app.store.internal_uri(oid)
    metrics.download_handed_over(size)
    return response


@bp.post("/.lfs/verify")
def verify() -> Response:
    body = read_json_object("request body must be a JSON object with oid and size")
    oid = body.get("oid")
    grant = check_token("verify", oid if isinstance(oid, str) else None)
    if body.get("size") != grant.size:
        raise LFSError(422, "size does not match the uploaded object")
    app = services()
    stored = app.objects.size(grant.repo, grant.oid)
    if stored is None and app.store.takes_direct_uploads:
        # The body went to the bucket itself: only now, checked, does it
        # become the object and this repository's.
        token = request.headers["Authorization"].partition(" ")[2].strip()
        try:
            newly = app.objects.accept_direct(grant.repo, grant.oid, grant.size, token)
        except CommitError as exc:
            metrics.upload_verify_failed(exc.reason)
            raise LFSError(exc.status, exc.message) from None
        metrics.upload_accepted(grant.size, newly_stored=newly)
        stored = grant.size
    if stored is None:
        raise LFSError(404, "object was not stored; upload it again")
    return lfs_json({})
