"""Pre-signed requests, written one per line for bench/replay.lua: METHOD <tab> PATH [<tab> BODY].

Each signed request carries a fresh nanosecond nonce, strictly increasing in file order
(which is the order wrk replays them in), and a Provider signature over
owner + (jobId or "") + nonce made exactly as the Ocean Provider makes it
(operator_service.domain.signatures.sign_provider_message; checked at start-up). The signing
itself uses coincurve directly, because eth-keys' wrapper is about three times slower
and a run needs tens of thousands of signatures.
"""

from __future__ import annotations

import json
import os
import random
import time
from multiprocessing import Pool
from pathlib import Path
from urllib.parse import urlencode

import coincurve
from eth_keys import keys

from bench import database
from operator_service.domain.signatures import provider_message, sign_provider_message
from operator_service.model.personal_sign import message_hash

API = "/api/v1/operator"
CHAIN_ID = 8996


class Signer:
    """One Provider key; hands out increasing nonces across all the batches of a run."""

    def __init__(self, private_key_hex: str | None = None):
        self.private_key_hex = private_key_hex or os.urandom(32).hex()
        self.address = keys.PrivateKey(bytes.fromhex(self.private_key_hex)).public_key.to_checksum_address().lower()
        self._last_nonce = 0
        probe = "0xprobe" + str(time.time_ns())
        assert _sign(self.private_key_hex, probe) == sign_provider_message(self.private_key_hex, probe)

    def nonces(self, count: int) -> list[str]:
        start = max(time.time_ns(), self._last_nonce + 1)
        self._last_nonce = start + count - 1
        return [str(start + i) for i in range(count)]


_worker_key: coincurve.PrivateKey | None = None


def _init_worker(private_key_hex: str) -> None:
    global _worker_key
    _worker_key = coincurve.PrivateKey(bytes.fromhex(private_key_hex))


def _sign_many(messages: list[str]) -> list[str]:
    return ["0x" + _worker_key.sign_recoverable(message_hash(m), hasher=None).hex() for m in messages]


def _sign(private_key_hex: str, message: str) -> str:
    return (
        "0x"
        + coincurve.PrivateKey(bytes.fromhex(private_key_hex))
        .sign_recoverable(message_hash(message), hasher=None)
        .hex()
    )


def sign_all(signer: Signer, messages: list[str]) -> list[str]:
    """Signatures of `messages`, in order, using every core."""
    processes = max(1, os.cpu_count() or 1)
    if len(messages) < 2000 or processes == 1:
        _init_worker(signer.private_key_hex)
        return _sign_many(messages)
    size = (len(messages) + processes * 4 - 1) // (processes * 4)
    chunks = [messages[i : i + size] for i in range(0, len(messages), size)]
    with Pool(processes, initializer=_init_worker, initargs=(signer.private_key_hex,)) as pool:
        return [signature for chunk in pool.map(_sign_many, chunks) for signature in chunk]


def status_requests(signer: Signer, rows: int, count: int, rng: random.Random) -> list[str]:
    """Signed GET /compute?owner&jobId of random seeded jobs (as the Provider asks for one job)."""
    picks = [rng.randint(1, rows) for _ in range(count)]
    owners = [database.job_owner(i) for i in picks]
    job_ids = [database.job_id(i) for i in picks]
    nonces = signer.nonces(count)
    signatures = sign_all(signer, [provider_message(o, j, n) for o, j, n in zip(owners, job_ids, nonces)])
    lines = []
    for owner, job, nonce, signature in zip(owners, job_ids, nonces, signatures):
        query = urlencode(
            {
                "providerAddress": signer.address,
                "owner": owner,
                "jobId": job,
                "nonce": nonce,
                "providerSignature": signature,
            }
        )
        lines.append(f"GET\t{API}/compute?{query}")
    return lines


def start_requests(signer: Signer, count: int, rng: random.Random) -> list[str]:
    """Signed POST /compute bodies as the newest Provider sends them, a new agreementId each."""
    owners = [database.owner_address(rng.randrange(database.OWNERS)) for _ in range(count)]
    nonces = signer.nonces(count)
    signatures = sign_all(signer, [provider_message(o, None, n) for o, n in zip(owners, nonces)])
    lines = []
    for owner, nonce, signature in zip(owners, nonces, signatures):
        algo = "did:op:" + rng.getrandbits(256).to_bytes(32, "big").hex()
        dataset = "did:op:" + rng.getrandbits(256).to_bytes(32, "big").hex()
        body = {
            "workflow": {"stages": [database.workflow_stage(algo, dataset)]},
            "providerSignature": signature,
            "agreementId": "0x" + rng.getrandbits(256).to_bytes(32, "big").hex(),
            "owner": owner,
            "providerAddress": signer.address,
            "environment": database.ENVIRONMENT,
            "validUntil": int(time.time()) + 3600,
            "nonce": nonce,
            "chainId": CHAIN_ID,
        }
        lines.append(f"POST\t{API}/compute\t{json.dumps(body)}")
    return lines


def plain_requests(path: str) -> list[str]:
    return [f"GET\t{path}"]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path
