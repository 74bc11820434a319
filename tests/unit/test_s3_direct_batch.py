"""A direct-mode download batch: one presigned GET per object, written as the
compact JSON a JSON encoder would write, for an object the index holds and
an error for one it does not. Nothing here talks to a bucket."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from lfs_server.services import services
from tests.unit.conftest import direct_s3_app

LFS = "application/vnd.git-lfs+json"
URL = "/team/proj.git/info/lfs/objects/batch"


def test_download_batch_answers_presigned_gets(tmp_path: Path, s3_env: dict[str, str]) -> None:
    app = direct_s3_app(tmp_path / "data", LFS_S3_PREFIX="team/lfs")
    settings = services(app).settings
    stored = [f"{i:064x}" for i in range(1, 4)]
    missing = "f" * 64
    with app.app_context():
        for oid in stored:
            services().objects.record("team/proj", oid, 4096)
    response = app.test_client().post(
        URL,
        data=json.dumps(
            {
                "operation": "download",
                "objects": [{"oid": oid, "size": 4096} for oid in [*stored, missing]],
            }
        ),
        headers={"Accept": LFS},
        content_type=LFS,
    )
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    answer = json.loads(text)
    assert text == json.dumps(answer, separators=(",", ":"))
    *found, absent = answer["objects"]
    assert absent == {
        "oid": missing,
        "size": 4096,
        "error": {"code": 404, "message": "object does not exist"},
    }
    for oid, item in zip(stored, found, strict=True):
        action = item["actions"]["download"]
        assert item["authenticated"] is True
        assert action["header"] == {}
        # Signed during this batch: the whole seconds surely left of a fresh URL.
        assert settings.token_ttl - 1 <= action["expires_in"] <= settings.token_ttl
        url = urlsplit(action["href"])
        assert (url.netloc, url.path) == (
            "127.0.0.1:9",
            f"/lfs-objects/team/lfs/{oid[:2]}/{oid[2:4]}/{oid}",
        )
        query = parse_qs(url.query)
        assert query["X-Amz-Expires"] == [str(settings.token_ttl)]
        assert query["X-Amz-SignedHeaders"] == ["host"]
