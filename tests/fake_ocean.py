"""Ocean's metadata cache (Aquarius) and Provider (v2.x), faked over real HTTP, and the pytest
fixture that starts them (`fake_ocean`).

They are the package's stand-ins (operator_service/tools/ocean_standins.py: what they answer
and check, and why it is the real ones' behaviour), with controls that only tests need.

Test controls (Provider): `trickle(chunk, pause)` streams files slowly; `hang_downloads()`
holds every download answer until the fixture ends; `remember_nonce(address, nonce)` as if
that address had already used `nonce` (so lower nonces are refused, as after a clock skew
or another client using the same key); `order_check_seconds` the time the order check takes
between the nonce check and its recording (the window in which the real one races);
`downloads` lists every download query received; `c2d_consumers` the consumer addresses of
the compute environments. Metadata cache: `forget(did)` removes a DDO.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from eth_keys import keys
from eth_utils import to_checksum_address

from operator_service.tools.ocean_standins import (
    AssetFile,
    MetadataCache,
    OceanStandIns,
    Order,
    Provider,
    Purchase,
    provider_stage,
)

__all__ = ["FakeFile", "FakeOcean", "Order", "Purchase", "provider_stage"]

FakeFile = AssetFile
HANG_SECONDS = 120.0


class FakeMetadataCache(MetadataCache):
    def forget(self, did: str) -> None:
        self.ddos.pop(did, None)


class FakeProvider(Provider):
    def __init__(self, metadata: MetadataCache, key: keys.PrivateKey | None = None):
        super().__init__(metadata, key)
        self.order_check_seconds = 0.0
        self.released = threading.Event()
        self._trickle: tuple[int, float] | None = None
        self._hang = False

    def trickle(self, chunk: int, pause: float) -> None:
        """Stream every file `chunk` bytes at a time, `pause` seconds apart."""
        self._trickle = (chunk, pause)

    def hang_downloads(self) -> None:
        """Hold every download without an answer until the fixture ends."""
        self._hang = True

    def remember_nonce(self, address: str, nonce: int | str) -> None:
        with self._lock:
            self.nonces[to_checksum_address(address)] = str(nonce)

    def answers_download(self) -> bool:
        if self._hang:
            self.released.wait(HANG_SECONDS)
            return False
        return True

    def pieces(self, content: bytes) -> Iterator[bytes]:
        if self._trickle is None:
            yield from super().pieces(content)
            return
        step, pause = self._trickle
        for start in range(0, len(content), step):
            yield content[start : start + step]
            if self.released.wait(pause):
                return

    def check_order(self, tx_id: str, did: str, service_id: str, consumer: str) -> None:
        super().check_order(tx_id, did, service_id, consumer)
        if self.order_check_seconds:
            self.released.wait(self.order_check_seconds)

    def close(self) -> None:
        self.released.set()
        super().close()


class FakeOcean(OceanStandIns):
    """The stand-ins with the tests' controls."""

    aquarius: FakeMetadataCache
    provider: FakeProvider

    def new_metadata_cache(self) -> FakeMetadataCache:
        return FakeMetadataCache()

    def new_provider(self, metadata: MetadataCache, key: keys.PrivateKey | None) -> FakeProvider:
        return FakeProvider(metadata, key)


@pytest.fixture
def fake_ocean() -> Iterator[FakeOcean]:
    ocean = FakeOcean()
    yield ocean
    ocean.close()
