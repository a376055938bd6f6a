"""Redis Cluster's key slots, computed here so that a batch is split by owner before it is sent.

``HASH_SLOT = CRC16(key) mod 16384`` (CRC16-CCITT/XMODEM), where only the hash tag is hashed when
the key has one: the non-empty text between the first ``{`` and the next ``}``. Every key a script
touches shares one tag (``Store.key``), so the first key's slot is the call's.
"""

from __future__ import annotations

SLOTS = 16384


def _table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return tuple(table)


_TABLE = _table()


def crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[(crc >> 8) ^ byte]
    return crc


def hash_tag(key: bytes) -> bytes:
    """The part of ``key`` that is hashed: its tag when it has a non-empty one, else all of it."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1:end]
    return key


def key_slot(key: str | bytes) -> int:
    raw = key.encode() if isinstance(key, str) else key
    return crc16(hash_tag(raw)) % SLOTS


class SlotCache(dict[str, int]):
    """Slots of the keys seen lately, by key: ``slots[key]``. The request path asks for the same
    keys again and again (a client's limit, the fixed hash tags of shared state), and a dict's own
    lookup costs no Python frame, where CRC16 in Python costs several. Emptied when it grows past
    ``size``."""

    __slots__ = ("size",)

    def __init__(self, size: int = 65536) -> None:
        super().__init__()
        self.size = size

    def __missing__(self, key: str) -> int:
        if len(self) >= self.size:
            self.clear()
        slot = self[key] = key_slot(key)
        return slot
