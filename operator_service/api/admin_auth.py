"""The admin secret check of the admin routes: the `Admin` header against ALLOWED_ADMINS."""

from __future__ import annotations

import hmac

from flask import request

from operator_service.api.errors import ApiError
from operator_service.config import Settings

ADMIN_HEADER = "Admin"


def require_admin(settings: Settings) -> None:
    """Pass only if the `Admin` header equals (case-insensitively) one of ALLOWED_ADMINS.

    A missing header is a 401 like a wrong one (the original answered 400): both are
    missing credentials, and a 401 tells a client to authenticate.

    Every configured secret is compared, in constant time, so the answer's timing tells
    nothing about which secret came close. Neither the header nor the list is ever logged.
    """
    given = request.headers.get(ADMIN_HEADER, "")
    if not given:
        raise ApiError("Admin header is empty.", 401)
    candidate = given.lower().encode("utf-8")
    matched = False
    for secret in settings.allowed_admins:
        matched |= hmac.compare_digest(candidate, secret.lower().encode("utf-8"))
    if not matched:
        raise ApiError("Access admin route failed due to invalid admin address.", 401)
