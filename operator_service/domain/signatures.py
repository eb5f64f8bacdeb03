"""Provider signatures and nonces.

The Provider signs `owner + (jobId or "") + str(nonce)` (`provider_message`): keccak256 of
that text, then keccak256 of the 32-byte personal-sign prefix and that hash, signed with
secp256k1 (r ‖ s ‖ v, v = 0/1). `verify_signature` recovers the signer over the same
message and checks it against ALLOWED_PROVIDERS; the nonce it returns is recorded by the
request's own statement (domain/lifecycle.py), so only accepted requests consume nonces.

A nonce (a time in s, ms, us or ns, by magnitude) is accepted once per provider, and only
if it is no older than NONCE_WINDOW below the newest one accepted from that provider;
one more than a day ahead of our clock is refused too (accepted, it would lock its
provider out for that long).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from operator_service.config import Settings
from operator_service.domain.errors import InvalidRequest, NotAuthorized
from operator_service.metrics.service import NONCE_REFUSALS, SIGNATURE_REFUSALS
from operator_service.model.personal_sign import recover_signer, sign_message
from operator_service.store.nonces import SignedNonce

NONCE_PATTERN = re.compile(r"^[0-9]{1,40}(\.[0-9]{1,40})?$")
# A nonce this far ahead of our clock is refused: accepted, it would push the provider's
# window forward and lock out every honest nonce after it.
MAX_FUTURE_SECONDS = 86400


@dataclass(frozen=True)
class Nonce:
    text: str
    seconds: Decimal


def sign_provider_message(private_key: str, message: str) -> str:
    """Sign as the Ocean Provider does; the 0x-hex signature r ‖ s ‖ v with v in {0, 1}."""
    return sign_message(private_key, message)


def recover_address(signature: Any, message: str) -> str:
    """The lowercase address that signed `message`; InvalidRequest if none can be recovered."""
    try:
        return recover_signer(signature, message)
    except ValueError:
        raise InvalidRequest("Failed to recover address") from None


def parse_nonce(value: Any) -> Nonce:
    """The nonce as signed (str) and as seconds: ns, us, ms or s chosen by magnitude."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidRequest("Invalid nonce: it must be a positive number")
    text = str(value).strip()  # a nonce pasted with the spaces around it is the nonce that was signed
    if not NONCE_PATTERN.match(text):
        raise InvalidRequest("Invalid nonce: it must be a positive number")
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise InvalidRequest("Invalid nonce: it must be a positive number") from None
    return Nonce(text=text, seconds=number / _unit(number))


# (smallest value, unit): a nonce of at least 10^17 counts nanoseconds, and so on down.
NONCE_UNITS = ((Decimal(10) ** 17, 10**9), (Decimal(10) ** 14, 10**6), (Decimal(10) ** 11, 10**3))


def _unit(number: Decimal) -> int:
    for threshold, unit in NONCE_UNITS:
        if number >= threshold:
            return unit
    return 1


def provider_message(owner: str | None, job_id: str | None, nonce: str) -> str:
    """What the Provider signs: the owner, the job id when there is one, then the nonce."""
    return f"{owner or ''}{job_id or ''}{nonce}"


def verify_signature(
    settings: Settings, signature: Any, owner: str | None, job_id: str | None, nonce_value: Any
) -> SignedNonce:
    """Check a signed Provider request (without recording anything): its nonce, to be
    recorded for the signer. InvalidRequest or NotAuthorized when it is refused."""
    try:
        nonce = parse_nonce(nonce_value)
    except InvalidRequest:
        NONCE_REFUSALS.labels("malformed").inc()
        raise
    message = provider_message(owner, job_id, nonce.text)
    try:
        address = recover_address(signature, message)
    except InvalidRequest:
        SIGNATURE_REFUSALS.labels("unrecoverable").inc()
        raise
    if settings.signature_required and address not in settings.allowed_providers:
        SIGNATURE_REFUSALS.labels("not_allowed").inc()
        raise NotAuthorized(
            f"Invalid signature {signature} of documentId {message},the signing ethereum account"
            f" {address} is not authorized to use this service."
        )
    if float(nonce.seconds) > time.time() + MAX_FUTURE_SECONDS:
        NONCE_REFUSALS.labels("future").inc()
        raise NotAuthorized(f"Invalid nonce {nonce.text}: too far in the future")
    guarded = address in settings.allowed_providers
    return SignedNonce(address, nonce.text, nonce.seconds, settings.nonce_window_seconds, guarded)


def nonce_refused(signed: SignedNonce) -> NotAuthorized:
    """The refusal of a nonce already used or too old (counted as such)."""
    NONCE_REFUSALS.labels("used").inc()
    return NotAuthorized(
        f"Invalid nonce {signed.nonce}: already used, or older than the"
        f" {signed.window_seconds} s window below the newest nonce of {signed.provider}"
    )
