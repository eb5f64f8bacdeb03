"""Ethereum personal-message signatures, the scheme the Provider, pod-configuration and web3 use.

The signed hash is keccak256 of the 32-byte personal-sign prefix and keccak256 of the
message; the signature is secp256k1's r ‖ s ‖ v. Pure functions over bytes and text.
"""

from __future__ import annotations

import re
from typing import Any

import coincurve
from eth_keys.datatypes import PrivateKey
from eth_utils.exceptions import ValidationError
from sha3 import keccak_256

PERSONAL_SIGN_PREFIX = b"\x19Ethereum Signed Message:\n32"
PRIVATE_KEY_DIGITS = re.compile(r"[0-9a-fA-F]{64}")


def keccak(data: bytes) -> bytes:
    """Keccak-256 through safe-pysha3's C code: eth-hash's pycryptodome backend took 8x longer."""
    return keccak_256(data).digest()


def message_hash(message: str) -> bytes:
    return keccak(PERSONAL_SIGN_PREFIX + keccak(message.encode("utf-8")))


def parse_private_key(text: str) -> PrivateKey:
    """A secp256k1 private key written as 64 hex digits, 0x optional.

    ValueError otherwise, with a message that says what is wrong without repeating the key.
    """
    digits = text.strip().removeprefix("0x")
    if not PRIVATE_KEY_DIGITS.fullmatch(digits):
        what = "characters" if re.search(r"[^0-9a-fA-F]", digits) else "hex digits"
        raise ValueError(
            f"a private key is 32 bytes written as 64 hex digits (0x optional); this one has {len(digits)} {what}"
        )
    try:
        return PrivateKey(bytes.fromhex(digits))
    except ValidationError:
        raise ValueError(
            "this is not a valid secp256k1 private key (it must be above 0 and below the curve order)"
        ) from None


def sign_message(private_key: str, message: str) -> str:
    """The 0x-hex signature r ‖ s ‖ v (v in {0, 1}) of `message` by the hex `private_key`;
    ValueError if it is not a private key (parse_private_key)."""
    key = parse_private_key(private_key)
    return "0x" + key.sign_msg_hash(message_hash(message)).to_bytes().hex()


def recover_signer(signature: Any, message: str) -> str:
    """The lowercase address that signed `message`; ValueError if none can be recovered.

    Recovery calls libsecp256k1 through coincurve (eth-keys' own fast backend) directly:
    eth-keys' object layer and checksum formatting would double the cost of every request.
    """
    try:
        raw = bytes.fromhex(str(signature).strip().removeprefix("0x"))
    except (ValueError, TypeError):
        raise ValueError("the signature is not hex") from None
    if len(raw) < 65:
        raise ValueError("signature shorter than 65 bytes")
    v = raw[64] - 27 if raw[64] in (27, 28) else raw[64]
    if v not in (0, 1):
        raise ValueError("v must be 0, 1, 27 or 28")
    try:
        public_key = coincurve.PublicKey.from_signature_and_message(
            raw[:64] + bytes([v]), message_hash(message), hasher=None
        )
    except (ValueError, TypeError) as exc:
        raise ValueError(str(exc)) from None
    return "0x" + keccak(public_key.format(compressed=False)[1:])[-20:].hex()
