"""Write a stored zip archive encrypted with the legacy PKWARE ("ZipCrypto") cipher, which Python's `zipfile`
can read with `pwd=` but cannot write; the First Impressions organisers' parts use it. Follows APPNOTE.TXT 6.1."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

KEYS = (0x12345678, 0x23456789, 0x34567890)


def _crc_byte(crc: int, byte: int) -> int:
    """One step of the raw CRC-32 register (no pre/post inversion, as the cipher uses it)."""
    return zlib.crc32(bytes([byte]), crc ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


def _encrypt(data: bytes, password: bytes) -> bytes:
    k0, k1, k2 = KEYS

    def update(byte: int) -> None:
        nonlocal k0, k1, k2
        k0 = _crc_byte(k0, byte)
        k1 = ((k1 + (k0 & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        k2 = _crc_byte(k2, k1 >> 24)

    for byte in password:
        update(byte)
    out = bytearray()
    for byte in data:
        temp = (k2 | 2) & 0xFFFF
        out.append(byte ^ (((temp * (temp ^ 1)) >> 8) & 0xFF))
        update(byte)
    return bytes(out)


def write_encrypted_zip(path: Path, members: dict[str, bytes], password: str) -> Path:
    """members: name -> bytes, stored (no compression), each encrypted with `password`."""
    local, central = bytearray(), bytearray()
    for name, data in members.items():
        crc, raw_name = zlib.crc32(data), name.encode()
        header = os.urandom(11) + bytes([crc >> 24])  # the last header byte checks the password
        body = _encrypt(header + data, password.encode())
        offset = len(local)
        local += struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 1, 0, 0, 0, crc, len(body), len(data), len(raw_name), 0)
        local += raw_name + body
        central += struct.pack(
            "<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 1, 0, 0, 0, crc, len(body), len(data), len(raw_name), 0, 0, 0, 0, 0,
            offset,
        )  # fmt: skip
        central += raw_name
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), len(local), 0)
    path.write_bytes(bytes(local + central + end))
    return path
