"""Reading and damaging the records of the pop3_policy environment
(dovecot-pop3-policy.mdb) from tests.

The test's own reading of docs/pop3-policy.md ("Records", schema 3):
every value is u8 version 2, u32 CRC-32 (big-endian, zlib's) over one
record-type byte, the key and the value bytes after the CRC, then the
fields.  Uses python3-lmdb, opened by the test process while Dovecot is
idle: LMDB's own locking keeps the writers apart.
"""

import struct
import zlib

import lmdbrec  # python3-lmdb, found the way lmdbrec finds it

lmdb = lmdbrec.lmdb

TYPE_SCHEMA, TYPE_FLAG, TYPE_SWEEP, TYPE_MSG, TYPE_UIDL, TYPE_DOWNLOAD = range(1, 7)
VERSION = 2
HEADER = 5


def seal(rtype: int, key: bytes, fields: bytes) -> bytes:
    crc = zlib.crc32(bytes([rtype]) + key + fields)
    return bytes([VERSION]) + struct.pack('>I', crc) + fields


def unseal(rtype: int, key: bytes, value: bytes) -> bytes:
    """The fields of a value, after checking its version and CRC."""
    assert value[0] == VERSION, value[:8]
    assert struct.unpack('>I', value[1:5])[0] == zlib.crc32(bytes([rtype]) + key + value[5:]), \
        'CRC mismatch in %r' % key
    return value[5:]


def open_env(path: str, readonly: bool = False):
    return lmdb.open(path, subdir=False, readonly=readonly, lock=True, max_dbs=16,
                     map_size=1 << 32, create=False)


def get(path: str, dbi: bytes, key: bytes) -> bytes | None:
    env = open_env(path, readonly=True)
    try:
        db = env.open_db(dbi, create=False)
        with env.begin(db=db) as txn:
            v = txn.get(key)
            return None if v is None else bytes(v)
    finally:
        env.close()


def put(path: str, dbi: bytes, key: bytes, value: bytes) -> None:
    env = open_env(path)
    try:
        db = env.open_db(dbi, create=False)
        with env.begin(db=db, write=True) as txn:
            txn.put(key, value)
    finally:
        env.close()


def decode_msg(key: bytes, value: bytes) -> dict:
    """A "msgs" value: u8 flags, u64 first download, str UIDL, str GUID
    (str = u16 length + bytes)."""
    f = unseal(TYPE_MSG, key, value)
    flags, first = struct.unpack('>BQ', f[:9])
    n = struct.unpack('>H', f[9:11])[0]
    uidl = f[11:11 + n]
    p = 11 + n
    g = struct.unpack('>H', f[p:p + 2])[0]
    return {'flags': flags, 'first_download': first, 'uidl': uidl.decode(),
            'guid': f[p + 2:p + 2 + g].decode()}


# offsets of the fields inside a "msgs" value
MSG_FIRST_DOWNLOAD = HEADER + 1
MSG_UIDL = HEADER + 1 + 8 + 2


def flip(path: str, dbi: bytes, key: bytes, offset: int, mask: int = 0x01) -> bytes:
    """Change one byte of a value in place (its CRC then fails); returns
    the value as it was."""
    v = get(path, dbi, key)
    assert v is not None, (dbi, key)
    b = bytearray(v)
    b[offset] ^= mask
    put(path, dbi, key, bytes(b))
    return v
