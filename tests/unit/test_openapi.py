"""The OpenAPI document (lfs_server/openapi.json) is valid and true to the routes.

Both directions: every public route of the Flask app is documented with its
methods, and every documented operation is served, by the app or (marked
`x-lfs-served-by: nginx`) by nginx alone. Documented paths under `/.lfs/`
must also get past nginx, whose `/.lfs/` block answers 404 to anything it
does not list.
"""

from __future__ import annotations

import json
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate

ROOT = Path(__file__).resolve().parents[2]
NGINX_TEMPLATE = ROOT / "nginx" / "nginx.conf.template"
HTTP_METHODS = {"get", "put", "post", "delete", "patch"}  # HEAD/OPTIONS: implicit in Flask
LFS_MEDIA_TYPE = "application/vnd.git-lfs+json"
SAMPLES = {"oid": "ab" * 32, "lock_id": "cd" * 16, "repo_path": "team/proj.git"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return json.loads(resources.files("lfs_server").joinpath("openapi.json").read_text())


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (path, method.upper()): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }


def app_routes(app: Flask) -> set[tuple[str, str]]:
    """(OpenAPI-style path, method) of every public API route of the app.

    The web pages for people (the `web` blueprint, under /.lfs/ui/) are HTML
    forms, not part of the API the document describes.
    """
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.rule.startswith("/.lfs-internal/"):
            continue
        if rule.endpoint.startswith("web."):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        routes.update(
            (path, method) for method in rule.methods or () if method.lower() in HTTP_METHODS
        )
    return routes


def test_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"].startswith("3.")


def test_version_is_the_package_version(document: dict[str, Any]) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert document["info"]["version"] == project["project"]["version"]


def test_document_is_package_data() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "openapi.json" in project["tool"]["setuptools"]["package-data"]["lfs_server"]


def test_every_route_is_documented(app: Flask, document: dict[str, Any]) -> None:
    undocumented = app_routes(app) - set(operations(document))
    assert not undocumented, f"routes missing from openapi.json: {sorted(undocumented)}"


def test_every_documented_operation_is_served(app: Flask, document: dict[str, Any]) -> None:
    by_app = {
        key for key, operation in operations(document).items() if "x-lfs-served-by" not in operation
    }
    unserved = by_app - app_routes(app)
    assert not unserved, f"documented but not served by the app: {sorted(unserved)}"


def _sample(path: str) -> str:
    return re.sub(r"\{([^}]+)\}", lambda match: SAMPLES[match.group(1)], path)


def _nginx_lfs_locations() -> tuple[set[str], list[re.Pattern[str]]]:
    """Exact and regex locations of nginx's `/.lfs/` block (the rest is 404 there)."""
    text = NGINX_TEMPLATE.read_text()
    exact = set(re.findall(r"location = (/\.lfs/\S+) \{", text))
    regexes = [re.compile(raw) for raw in re.findall(r'location ~ "(\^/\\\.lfs/[^"]+)"', text)]
    return exact, regexes


def test_lfs_paths_get_past_nginx(document: dict[str, Any]) -> None:
    exact, regexes = _nginx_lfs_locations()
    assert regexes, "no regex location found in the nginx template"
    for path in document["paths"]:
        if not path.startswith("/.lfs/"):
            continue
        sample = _sample(path)
        assert sample in exact or any(regex.match(sample) for regex in regexes), (
            f"nginx answers 404 to {path}: add a location to the /.lfs/ block"
        )


def test_nginx_served_operations_are_routed(document: dict[str, Any]) -> None:
    for (path, _), operation in operations(document).items():
        if operation.get("x-lfs-served-by") == "nginx":
            assert path.startswith("/.lfs/"), path


def test_security_schemes(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["basicAuth"] == {**schemes["basicAuth"], "type": "http", "scheme": "basic"}
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    for (path, method), operation in operations(document).items():
        names = {name for requirement in operation["security"] for name in requirement}
        if "/info/lfs/" in path or path == "/metrics":
            assert names == {"basicAuth"}, (path, method)
        elif path.startswith(("/.lfs/upload/", "/.lfs/download/", "/.lfs/verify")):
            assert names == {"bearerAuth"}, (path, method)
        else:
            assert names == set(), (path, method)


def test_errors_are_lfs_json(document: dict[str, Any]) -> None:
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["message"]
    assert set(error["properties"]) == {"message", "documentation_url", "request_id"}
    for (path, method), operation in operations(document).items():
        for status, response in operation["responses"].items():
            if not status.startswith(("4", "5")):
                continue
            if "$ref" in response:
                name = response["$ref"].rsplit("/", 1)[1]
                response = document["components"]["responses"][name]
            assert list(response["content"]) == [LFS_MEDIA_TYPE], (path, method, status)


def test_served_at_a_stable_url(client: FlaskClient, document: dict[str, Any]) -> None:
    response = client.get("/.lfs/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == document
