"""Reading form fields: every refusal is a message for the person who typed it."""

from __future__ import annotations

import re

from flask import request

from lfs_server.web.session import WebError

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def field(name: str, label: str, *, max_length: int, required: bool = True) -> str:
    """The field's value, stripped; WebError(400) when empty, too long or with control characters."""
    value = request.form.get(name, "").strip()
    if required and not value:
        raise WebError(400, f"{label} is required.")
    if len(value) > max_length:
        raise WebError(400, f"{label} is too long: at most {max_length} characters.")
    if _CONTROL_RE.search(value):
        raise WebError(400, f"{label} must not contain control characters.")
    return value
