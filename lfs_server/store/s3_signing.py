"""Presigned S3 URLs from botocore's own SigV4 query signer, without the
per-call work of `generate_presigned_url`.

`generate_presigned_url` resolves the endpoint, validates and serializes the
parameters and runs the client's event hooks on every call before it hands
the request to `botocore.auth.S3SigV4QueryAuth`, the signer it picks for
`s3v4` presigned URLs. All of that gives the same answer for every key of
one bucket, so it is asked once: one `generate_presigned_url` of a sample
key gives the bucket's base URL and the signing scope (region and service
as botocore resolved them). Each URL is then the key percent-encoded as
botocore's serializer encodes a greedy path label, signed by
`S3SigV4QueryAuth` itself: the signing, the canonical request and the query
layout stay botocore's, and the URL is the one `generate_presigned_url`
would give at the same instant (a unit test compares them).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from botocore.utils import percent_encode

# The key whose presigned URL shows where a bucket's objects live.
SAMPLE_KEY = "sample"


@dataclass(frozen=True)
class SignedURL:
    url: str
    # Unix time from which the bucket refuses the URL: its X-Amz-Date (whole
    # seconds, as signed) plus its X-Amz-Expires.
    expires_at: int


class QuerySigner:
    """Signs GET and PUT URLs for the keys of one bucket."""

    def __init__(self, base_url: str, region: str, service: str) -> None:
        self.base_url = base_url  # ends in "/": the key follows
        self.region = region
        self.service = service

    @classmethod
    def from_sample(cls, sample_url: str) -> QuerySigner:
        """The signer for the bucket whose presigned GET of SAMPLE_KEY this is."""
        parts = urlsplit(sample_url)
        scope = parse_qs(parts.query).get("X-Amz-Credential", [""])[0].split("/")
        if not parts.path.endswith("/" + SAMPLE_KEY) or len(scope) < 5:
            raise ValueError("unexpected presigned URL layout")
        base = f"{parts.scheme}://{parts.netloc}{parts.path[: -len(SAMPLE_KEY)]}"
        return cls(base, region=scope[-3], service=scope[-2])

    def sign(
        self,
        credentials: ReadOnlyCredentials,
        method: str,
        key: str,
        expires: int,
        query: str = "",
        headers: dict[str, str] | None = None,
    ) -> SignedURL:
        """`method` on `key` for `expires` seconds; `query` ("?a=b", encoded
        as botocore encodes it) and `headers` are signed with it."""
        url = f"{self.base_url}{percent_encode(key, safe='/~')}{query}"
        request = AWSRequest(method=method, url=url, headers=headers or {})
        S3SigV4QueryAuth(credentials, self.service, self.region, expires).add_auth(request)
        return SignedURL(request.url, _unix(request.context["timestamp"]) + expires)


def _unix(stamp: str) -> int:
    """Unix time of a SigV4 timestamp (`20261201T120000Z`)."""
    fields = (stamp[0:4], stamp[4:6], stamp[6:8], stamp[9:11], stamp[11:13], stamp[13:15])
    return calendar.timegm((*map(int, fields), 0, 0, 0))
