"""The signature layer: the Provider's real scheme, nonces, SIGNATURE_REQUIRED and ALLOWED_PROVIDERS.

Each test of a fixed defect says what the original did (README, "Differences from the original"); on
the original each would fail.
"""

from __future__ import annotations

import os
import time
from decimal import Decimal

import pytest

from operator_service.api.errors import STATUS_OF_DOMAIN_ERROR
from operator_service.domain.errors import InvalidRequest
from operator_service.domain.signatures import parse_nonce, recover_address, sign_provider_message
from tests.conftest import OWNER, Provider, compute_body, run_together

COMPUTE = "/api/v1/operator/compute"


@pytest.fixture
def settings(make_settings, provider):
    """Unsigned mode (the default) with this test's Provider listed: its nonces are guarded."""
    return make_settings(ALLOWED_PROVIDERS=f'["{provider.address}"]')


def _get(client, provider, nonce, owner=OWNER):
    query = {"owner": owner, **provider.signed(owner, nonce=nonce)}
    return client.get(COMPUTE, query_string=query)


def test_recovery_over_owner_job_and_nonce_finds_the_provider(provider):
    """The original recovered over the message without the nonce, finding a random address."""
    message = f"{OWNER}abc1700000000000000000"
    signature = provider.sign(message)
    assert recover_address(signature, message) == provider.address
    assert recover_address(signature, f"{OWNER}abc") != provider.address


def test_unrecoverable_signatures_are_a_400():
    for signature in ["", "0x", "zz", "0x" + "00" * 64, "0x" + "ff" * 65, None, 12]:
        with pytest.raises(InvalidRequest) as caught:
            recover_address(signature, "message")
        assert (STATUS_OF_DOMAIN_ERROR[caught.type], caught.value.message) == (400, "Failed to recover address")


@pytest.mark.parametrize(
    "nonce, seconds",
    [
        ("1700000000", Decimal("1700000000")),
        ("1700000000.5", Decimal("1700000000.5")),
        (1700000000123, Decimal("1700000000.123")),
        ("1700000000123456", Decimal("1700000000.123456")),
        ("1700000000123456789", Decimal("1700000000.123456789")),
    ],
)
def test_nonce_units_are_read_by_magnitude(nonce, seconds):
    assert parse_nonce(nonce).seconds == seconds
    assert parse_nonce(nonce).text == str(nonce)


@pytest.mark.parametrize("nonce", ["", "abc", "-5", "1e9", "0x10", True, None, [1], {"a": 1}, "1" * 60])
def test_malformed_nonces_are_a_400(nonce):
    with pytest.raises(InvalidRequest) as caught:
        parse_nonce(nonce)
    assert STATUS_OF_DOMAIN_ERROR[caught.type] == 400


def test_a_replayed_nonce_is_a_401_not_a_500(client, provider):
    """The original answered 500 (POST) or a TypeError text (GET)."""
    nonce = str(time.time_ns())
    assert _get(client, provider, nonce).status_code == 200
    replay = _get(client, provider, nonce)
    assert replay.status_code == 401
    assert "already used" in replay.get_json()["error"]


@pytest.mark.parametrize("method", ["PUT", "DELETE", "POST"])
def test_every_signed_route_refuses_a_replayed_nonce(client, submit, provider, method):
    [job] = submit().get_json()
    nonce = str(time.time_ns())
    if method == "POST":
        body = compute_body(agreement_id="0x77")
        body.update(provider.signed(OWNER, nonce=nonce))
        send = lambda: client.post(COMPUTE, json=body)  # noqa: E731
    else:
        query = {"owner": OWNER, "jobId": job["jobId"], **provider.signed(OWNER, job["jobId"], nonce)}
        send = lambda: client.open(COMPUTE, method=method, query_string=query)  # noqa: E731
    assert send().status_code == 200
    replay = send()
    assert replay.status_code == 401 and "already used" in replay.get_json()["error"]


def test_a_post_refused_for_its_agreement_id_does_not_consume_its_nonce(client, submit, provider):
    submit()
    nonce = str(time.time_ns())
    body = compute_body()
    body.update(provider.signed(OWNER, nonce=nonce))
    duplicate = client.post(COMPUTE, json=body)
    assert duplicate.get_json() == {"error": "`agreementId` already in use for other job."}
    assert _get(client, provider, nonce).status_code == 200


def test_out_of_order_nonces_within_the_window_are_accepted(client, provider):
    """The original's strictly increasing rule failed concurrent Provider requests."""
    now = time.time_ns()
    assert _get(client, provider, str(now)).status_code == 200
    assert _get(client, provider, str(now - 5 * 10**9)).status_code == 200


def test_a_nonce_older_than_the_window_is_refused(client, provider):
    now = time.time_ns()
    assert _get(client, provider, str(now)).status_code == 200
    too_old = _get(client, provider, str(now - 301 * 10**9))
    assert too_old.status_code == 401
    assert "300 s window" in too_old.get_json()["error"]


def test_the_window_follows_the_nonce_unit(client, provider):
    now_ms = time.time_ns() // 10**6
    assert _get(client, provider, str(now_ms)).status_code == 200
    assert _get(client, provider, str(now_ms - 200_000)).status_code == 200
    assert _get(client, provider, str(now_ms - 400_000)).status_code == 401


def test_a_nonce_far_in_the_future_is_refused(client, provider):
    future = str(time.time_ns() + 2 * 86400 * 10**9)
    assert _get(client, provider, future).status_code == 401
    assert _get(client, provider, str(time.time_ns())).status_code == 200


def test_nonces_are_per_provider(make_app, db, provider):
    other = Provider("0x" + os.urandom(32).hex())
    client = make_app(ALLOWED_PROVIDERS=f'["{provider.address}", "{other.address}"]').test_client()
    nonce = str(time.time_ns())
    assert _get(client, provider, nonce).status_code == 200
    assert _get(client, other, nonce).status_code == 200
    assert _get(client, other, nonce).status_code == 401


def _nonce_rows(db) -> int:
    with db.transaction() as cur:
        cur.execute("SELECT count(*) FROM nonces")
        return cur.fetchone()[0]


def test_unsigned_mode_records_no_nonce_of_an_unlisted_signer(make_app, db, engine):
    """Any key passes with SIGNATURE_REQUIRED=0: each request with a new random key used to add a
    nonces row that was never pruned (pruning is per provider), so the table grew without bound."""
    client = make_app().test_client()
    for _ in range(20):
        stranger = Provider("0x" + os.urandom(32).hex())
        assert _get(client, stranger, str(time.time_ns())).status_code == 200
    engine.announce()
    body = compute_body()
    body.update(stranger.signed(OWNER))
    assert client.post(COMPUTE, json=body).status_code == 200
    junk = {"owner": OWNER, "nonce": str(time.time_ns()), "providerSignature": "0x" + os.urandom(65).hex()}
    assert client.get(COMPUTE, query_string=junk).status_code in (200, 400)
    assert _nonce_rows(db) == 0


def test_unsigned_mode_still_guards_the_nonces_of_listed_providers(client, provider, db):
    nonce = str(time.time_ns())
    assert _get(client, provider, nonce).status_code == 200
    assert _get(client, provider, nonce).status_code == 401
    assert _nonce_rows(db) == 1


def test_concurrent_requests_with_the_same_nonce_let_exactly_one_through(app, provider):
    nonce = str(time.time_ns())
    query = {"owner": OWNER, **provider.signed(OWNER, nonce=nonce)}
    codes = run_together(8, lambda: app.test_client().get(COMPUTE, query_string=query).status_code)
    assert sorted(codes) == [200] + [401] * 7


def test_old_nonce_records_are_pruned(client, provider, db):
    now = time.time_ns()
    for offset in (400, 350, 0):
        _get(client, provider, str(now - offset * 10**9))
    with db.transaction() as cur:
        cur.execute("SELECT nonce FROM nonces WHERE provider = %s", (provider.address,))
        assert [row[0] for row in cur.fetchall()] == [str(now)]


def test_a_refused_provider_does_not_consume_its_nonce(make_app, db, provider):
    """The original stored nonces before the allow-list check."""
    app = make_app(SIGNATURE_REQUIRED="1", ALLOWED_PROVIDERS="[]")
    nonce = str(time.time_ns())
    assert _get(app.test_client(), provider, nonce).status_code == 401
    with db.transaction() as cur:
        cur.execute("SELECT count(*) FROM nonces")
        assert cur.fetchone()[0] == 0


def test_signature_required_with_allowed_providers_in_any_case(make_app, db, provider):
    """With the original's recovery, every Provider request got a 401."""
    allowed = f'["{provider.address.upper().replace("0X", "0x")}"]'
    app = make_app(SIGNATURE_REQUIRED="1", ALLOWED_PROVIDERS=allowed)
    assert _get(app.test_client(), provider, str(time.time_ns())).status_code == 200


def test_signature_required_refuses_other_signers_with_the_original_text(make_app, db, provider):
    app = make_app(SIGNATURE_REQUIRED="1", ALLOWED_PROVIDERS='["0x1"]')
    nonce = str(time.time_ns())
    query = {"owner": OWNER, **provider.signed(OWNER, nonce=nonce)}
    response = app.test_client().get(COMPUTE, query_string=query)
    assert response.status_code == 401
    assert response.get_json() == {
        "error": f"Invalid signature {query['providerSignature']} of documentId {OWNER}{nonce},"
        f"the signing ethereum account {provider.address} is not authorized to use this service."
    }


def test_signing_matches_the_provider_scheme(provider):
    """keccak(prefix32 + keccak(message)), r ‖ s ‖ v with v in {0, 1}."""
    signature = bytes.fromhex(sign_provider_message(provider.private_key, "hello")[2:])
    assert len(signature) == 65 and signature[64] in (0, 1)
