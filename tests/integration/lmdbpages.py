"""Where a DBI's B-tree pages are in an LMDB 0.9 data.mdb, for tests that
damage a page (not a record): read from the file as LMDB lays it out
(mdb.c: MDB_page, MDB_meta, MDB_db, MDB_node; 64-bit build, PAGEBASE 0).
A test's own, minimal reading: it trusts the undamaged file it walks."""

import struct

P_BRANCH, P_LEAF, P_OVERFLOW, P_META = 0x01, 0x02, 0x04, 0x08
F_BIGDATA, F_SUBDATA = 0x01, 0x02
HDR = 16                      # pgno, pad, flags, lower, upper
DB_FMT = '<IHHQQQQQ'          # pad, flags, depth, branch, leaf, overflow, entries, root
DB_SIZE = struct.calcsize(DB_FMT)
META_MAGIC = 0xBEEFC0DE


class Pages:
    def __init__(self, path: str, page_size: int = 4096):
        with open(path, 'rb') as f:
            self.data = f.read()
        self.psize = page_size
        metas = []
        for pgno in (0, 1):
            base = pgno * page_size + HDR
            magic, version = struct.unpack_from('<II', self.data, base)
            if magic != META_MAGIC:
                continue
            dbs = base + 8 + 8 + 8
            main = struct.unpack_from(DB_FMT, self.data, dbs + DB_SIZE)
            last_pg, txnid = struct.unpack_from('<QQ', self.data, dbs + 2 * DB_SIZE)
            metas.append((txnid, main, last_pg))
        assert metas, 'no valid meta page in %s' % path
        self.txnid, self.main, self.last_pg = max(metas)

    def page(self, pgno: int) -> bytes:
        return self.data[pgno * self.psize:(pgno + 1) * self.psize]

    def _nodes(self, pgno):
        p = self.page(pgno)
        flags, lower = struct.unpack_from('<HH', p, 10)
        for i in range((lower - HDR) // 2):
            off = struct.unpack_from('<H', p, HDR + 2 * i)[0]
            lo, hi, nflags, ksize = struct.unpack_from('<HHHH', p, off)
            key = p[off + 8:off + 8 + ksize]
            data_off = off + 8 + ksize
            yield flags, lo, hi, nflags, key, data_off, p

    def walk(self, root: int, depth: int = 0):
        """[(pgno, 'branch'|'leaf', depth)] of the tree under root."""
        if root == 0xffffffffffffffff:   # P_INVALID: an empty tree
            return []
        out = []
        flags = struct.unpack_from('<H', self.page(root), 10)[0]
        if flags & P_LEAF:
            return [(root, 'leaf', depth)]
        out.append((root, 'branch', depth))
        for _flags, lo, hi, nflags, _key, _doff, _p in self._nodes(root):
            child = lo | hi << 16 | nflags << 32
            out += self.walk(child, depth + 1)
        return out

    def dbi_root(self, name: str) -> int:
        """Root page of a named DBI (from the main DB's leaves)."""
        for pgno, kind, _d in self.walk(self.main[7]):
            if kind != 'leaf':
                continue
            for _f, _lo, _hi, nflags, key, doff, p in self._nodes(pgno):
                if key == name.encode() and nflags & F_SUBDATA:
                    return struct.unpack_from(DB_FMT, p, doff)[7]
        raise KeyError(name)

    def dbi_pages(self, name: str):
        return self.walk(self.dbi_root(name))
