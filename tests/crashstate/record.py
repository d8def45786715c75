"""Reading the recorder's files (tests/tools/fault-record.c).

Every process that ran with DLMDB_FI_RECORD=<dir> left one or more
<dir>/p<pid>-<n>.rec files; read_record(dir) merges them into one list
of Event, ordered by seq_end (the global counter's value when the call
had returned; markers have seq_begin == seq_end).
"""

import glob
import os
import struct

ENTRY = struct.Struct('<IHHQQIIQQQqqIIIIQ')
FILE_HDR = struct.Struct('<8sII')
MAGIC = 0x31524946

# enum fi_kind of fault-inject.c, and the marker
KINDS = ('rename', 'unlink', 'mkdir', 'fsync', 'fdatasync', 'commit', 'write',
         'ftruncate', 'open', 'link', 'rmdir')
MARK = 100

F_DSYNC = 0x01
F_APPEND = 0x02
F_SKIPPED = 0x04
F_CREATED = 0x08
F_TRUNCATED = 0x10
F_DIR = 0x20


class RecordError(Exception):
    pass


class Event:
    __slots__ = ('kind', 'flags', 'seq_begin', 'seq_end', 'pid', 'tid', 'dev', 'ino',
                 'ino2', 'offset', 'result', 'mode', 'path', 'path2', 'data')

    def __init__(self, fields, path, path2, data):
        (_magic, kind, self.flags, self.seq_begin, self.seq_end, self.pid, self.tid,
         self.dev, self.ino, self.ino2, self.offset, self.result, self.mode,
         _plen, _p2len, _reserved, _dlen) = fields
        self.kind = 'mark' if kind == MARK else KINDS[kind]
        self.path = path
        self.path2 = path2
        self.data = data

    @property
    def is_write(self):
        return self.kind in ('write', 'commit')

    @property
    def is_sync(self):
        return self.kind in ('fsync', 'fdatasync')

    @property
    def text(self):
        return self.path

    def __repr__(self):
        extra = ''
        if self.is_write:
            extra = ' off=%d len=%d%s' % (self.offset, len(self.data),
                                          ' dsync' if self.flags & F_DSYNC else '')
        elif self.kind == 'ftruncate':
            extra = ' size=%d' % self.offset
        if self.path2:
            extra += ' -> %s' % self.path2
        return '<%d-%d %s pid=%d %s%s%s>' % (
            self.seq_begin, self.seq_end, self.kind, self.pid, self.path, extra,
            ' SKIPPED' if self.flags & F_SKIPPED else '')


def read_file(path):
    with open(path, 'rb') as f:
        blob = f.read()
    if len(blob) < FILE_HDR.size:
        return []
    magic, entry_size, _pid = FILE_HDR.unpack_from(blob, 0)
    if magic != b'FIREC001' or entry_size != ENTRY.size:
        raise RecordError('%s: not a record file of this version (%r, entry %d != %d)'
                          % (path, magic, entry_size, ENTRY.size))
    out = []
    pos = FILE_HDR.size
    while pos < len(blob):
        if pos + ENTRY.size > len(blob):
            raise RecordError('%s: entry cut short at %d' % (path, pos))
        fields = ENTRY.unpack_from(blob, pos)
        if fields[0] != MAGIC:
            raise RecordError('%s: bad entry magic at %d' % (path, pos))
        plen, p2len, dlen = fields[13], fields[14], fields[16]
        pos += ENTRY.size
        end = pos + plen + p2len + dlen
        if end > len(blob):
            raise RecordError('%s: entry payload cut short at %d' % (path, pos))
        p = blob[pos:pos + plen].decode('utf-8', 'surrogateescape')
        p2 = blob[pos + plen:pos + plen + p2len].decode('utf-8', 'surrogateescape')
        data = blob[pos + plen + p2len:end]
        out.append(Event(fields, p, p2, data))
        pos = end
    return out


def read_record(dirpath):
    events = []
    for fn in sorted(glob.glob(os.path.join(dirpath, 'p*.rec'))):
        events.extend(read_file(fn))
    events.sort(key=lambda e: (e.seq_end, e.seq_begin))
    seen = set()
    for e in events:
        for s in {e.seq_begin, e.seq_end}:
            if s in seen:
                raise RecordError('sequence number %d used twice: %r' % (s, e))
            seen.add(s)
    return events


def summary(events):
    """{kind: count} (writes split by file name)"""
    out = {}
    for e in events:
        key = e.kind
        if e.is_write or e.is_sync:
            key += ' ' + os.path.basename(e.path.replace(' (deleted)', ''))
        out[key] = out.get(key, 0) + 1
    return out
