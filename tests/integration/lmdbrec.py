"""Reading and writing the lmdb storage's records from tests.

A test's own, independent reading of docs/schema.md (schema 2), for
damaging one record (a byte flipped: its checksum no longer holds) or
crafting a hostile one (valid checksum, invalid field) in a user's
environment.  Uses python3-lmdb (Debian's package), opened by the test
process while Dovecot is stopped or idle: LMDB's own locking keeps the
writers apart.
"""

import os
import struct
import sys
import zlib

try:
    import lmdb
except ImportError:  # a python3 other than Debian's: use Debian's module
    sys.path.append('/usr/lib/python3/dist-packages')
    import lmdb

TYPE_ENV, TYPE_BODY, TYPE_LINK, TYPE_MAILBOX, TYPE_GC, TYPE_CHUNK = 1, 2, 3, 4, 5, 6
VERSION = 2


def seal(rtype: int, key: bytes, fields: bytes) -> bytes:
    """A schema-2 value: version, CRC-32 of type + key + fields, fields."""
    crc = zlib.crc32(bytes([rtype]) + key + fields)
    return bytes([VERSION]) + struct.pack('>I', crc) + fields


def unseal(value: bytes) -> bytes:
    assert value[0] == VERSION, value[:8]
    return value[5:]


def open_env(mail_dir: str, readonly: bool = False) -> lmdb.Environment:
    return lmdb.open(mail_dir, max_dbs=16, readonly=readonly, lock=True,
                     map_size=1 << 34, subdir=True, create=False)


def mailbox_guid(env, name: str) -> bytes:
    """The GUID of the active mailbox of that name."""
    db = env.open_db(b'mailboxes', create=False)
    with env.begin(db=db) as txn:
        for key, val in txn.cursor():
            f = unseal(val)
            state = f[0]
            n = struct.unpack('>H', f[27:29])[0]
            if state == 0 and f[29:29 + n].decode() == name:
                return bytes(key)
    raise KeyError(name)


def link_key(guid: bytes, uid: int) -> bytes:
    return guid + struct.pack('>I', uid)


def decode_link(value: bytes) -> dict:
    f = unseal(value)
    flags, _, body_id, save_date, order, modseq = struct.unpack('>BHQQIQ', f[:31])
    p = 31
    n = struct.unpack('>H', f[p:p + 2])[0]
    uidl = f[p + 2:p + 2 + n]
    p += 2 + n
    count = struct.unpack('>H', f[p:p + 2])[0]
    p += 2
    keywords = []
    for _ in range(count):
        n = f[p]
        keywords.append(f[p + 1:p + 1 + n])
        p += 1 + n
    return {'flags': flags, 'body_id': body_id, 'save_date': save_date,
            'pop3_order': order, 'modseq': modseq, 'pop3_uidl': uidl,
            'keywords': keywords}


def encode_link(rec: dict) -> bytes:
    out = struct.pack('>BHQQIQ', rec['flags'], 0, rec['body_id'], rec['save_date'],
                      rec['pop3_order'], rec['modseq'])
    out += struct.pack('>H', len(rec['pop3_uidl'])) + rec['pop3_uidl']
    out += struct.pack('>H', len(rec['keywords']))
    for kw in rec['keywords']:
        out += bytes([len(kw)]) + kw
    return out


def get(env, dbi: bytes, key: bytes) -> bytes:
    db = env.open_db(dbi, create=False)
    with env.begin(db=db) as txn:
        v = txn.get(key)
        assert v is not None, (dbi, key.hex())
        return bytes(v)


def put(env, dbi: bytes, key: bytes, value: bytes):
    db = env.open_db(dbi, create=False)
    with env.begin(db=db, write=True) as txn:
        txn.put(key, value)


def flip(env, dbi: bytes, key: bytes, offset: int = -1, mask: int = 0x01):
    """Damage one record: one bit of its value flipped (the checksum then
    fails). offset counts from the end when negative."""
    v = bytearray(get(env, dbi, key))
    v[offset] ^= mask
    put(env, dbi, key, bytes(v))


def craft_link(env, guid: bytes, uid: int, **changes):
    """Rewrite a link with changed fields and a valid checksum: what an
    attacker who can write the file (or a bug) would leave."""
    key = link_key(guid, uid)
    rec = decode_link(get(env, b'links', key))
    rec.update(changes)
    put(env, b'links', key, seal(TYPE_LINK, key, encode_link(rec)))


def link_body_id(env, guid: bytes, uid: int) -> int:
    return decode_link(get(env, b'links', link_key(guid, uid)))['body_id']


def body_key(body_id: int) -> bytes:
    return struct.pack('>Q', body_id)


def chunk_key(body_id: int, idx: int) -> bytes:
    return struct.pack('>QI', body_id, idx)


def decode_body(value: bytes) -> dict:
    """A body record (docs/schema.md, `bodies`)."""
    f = unseal(value)
    (state, _, refcount, physical, message, virtual, received, saved, since,
     chunk_count, chunk_size) = struct.unpack('>BHIQQQQQQII', f[:63])
    n = struct.unpack('>H', f[111:113])[0]
    return {'state': state, 'refcount': refcount, 'physical_size': physical,
            'message_size': message, 'virtual_size': virtual,
            'received_date': received, 'save_date': saved, 'state_since': since,
            'chunk_count': chunk_count, 'chunk_size': chunk_size,
            'sha256': f[63:95], 'orig_mailbox_guid': f[95:111],
            'guid': f[113:113 + n]}
