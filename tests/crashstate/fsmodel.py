"""What a power cut can leave on disk: crash states from a recording.

The model (what the tester assumes of the file system and the disk):

  * Data. A write, truncation or O_TRUNC of a file is durable once an
    fsync() or fdatasync() of the same file (any descriptor: they sync
    the inode) *began after it had returned* and returned itself before
    the crash. fdatasync counts as fsync: it flushes the file size too,
    which the data needs. A write through an O_DSYNC/O_SYNC descriptor
    is durable when it returns (that is how LMDB writes the meta page
    of a synced commit). Everything else written since the last such
    barrier may reach the disk in part, in any order, at the
    granularity of a 512-byte sector: a sector is written whole or not
    at all (the atomic unit every disk provides; LMDB's meta-page update
    is ~130 bytes inside one sector, which is what LMDB itself assumes),
    but a 4 KiB page or a longer write can be torn at any sector
    boundary. A write still in flight at the crash counts as unsynced.
    Syncs made no-ops by DLMDB_FI_ACTION=skip are no barriers.
  * Names. create, mkdir, rename, link, unlink and rmdir are durable
    only once the directory that holds the name (for a rename: either
    directory) was fsynced after them: the strict POSIX view, not ext4's
    data=ordered, which journals them in order and would persist most
    of them anyway. Unsynced name operations on one directory persist as
    a prefix (every journaling file system keeps a directory's updates
    in order); across directories the prefixes are independent; a rename
    between two directories is atomic. An fsync of a file does not make
    its name durable.
  * The snapshot taken before the recording (after sync(2)) is durable.
  * Not modelled: memory-mapped writes (Dovecot and LMDB write only
    lock files that way: lock.mdb's reader table, which LMDB rebuilds
    when the first process opens it) and file attributes (mode, owner,
    times).

State building takes a crash point c (a value of the recorder's global
counter: calls with seq_end <= c had returned, calls with seq_begin <= c
< seq_end were in flight) and a Choice that says which of the unsynced
operations persist.
"""

import hashlib
import os
import random

import record

SECTOR = 512
DIR = object()   # content marker of a directory


class DataOp:
    __slots__ = ('seq_begin', 'seq_end', 'offset', 'data', 'size', 'dsync', 'pid')

    def __init__(self, ev, offset, data=None, size=None):
        self.seq_begin, self.seq_end, self.pid = ev.seq_begin, ev.seq_end, ev.pid
        self.offset = offset
        self.data = data          # a write
        self.size = size          # a truncation to this size
        self.dsync = bool(ev.flags & record.F_DSYNC) and data is not None


class MetaOp:
    __slots__ = ('seq_begin', 'seq_end', 'kind', 'path', 'path2', 'node', 'dirs', 'idx')

    def __init__(self, ev, kind, path, path2=None, node=None):
        self.seq_begin, self.seq_end = ev.seq_begin, ev.seq_end
        self.kind = kind          # create mkdir rename link unlink rmdir
        self.path = path
        self.path2 = path2
        self.node = node          # create/mkdir: the new inode's id
        self.dirs = sorted({os.path.dirname(p) for p in (path, path2) if p is not None})
        self.idx = {}             # dir -> index in that directory's op list

    def __repr__(self):
        return '<%d-%d %s %s%s>' % (self.seq_begin, self.seq_end, self.kind, self.path,
                                    ' -> ' + self.path2 if self.path2 else '')


class Model:
    """The recording, as operations on inodes (data) and names (meta)."""

    def __init__(self, root, snapshot_dir, snap_inodes, events, ignore=('lock.mdb',)):
        """root: the recorded directory (the prefix); snapshot_dir: its copy
        taken before the recording; snap_inodes: {relpath: ino} of the live
        files the snapshot was taken from; ignore: base names whose content
        is not modelled (memory-mapped)."""
        self.root = root.rstrip('/')
        self.snapshot_dir = snapshot_dir
        self.ignore = set(ignore)
        self.nodes = {}           # id -> ('dir'|'file', snapshot path or None)
        self.ns0 = {}             # relpath -> id
        self.data = {}            # id -> [DataOp]
        self.syncs = {}           # id -> [(seq_begin, seq_end)]  file barriers
        self.path_syncs = {}      # relpath -> [(seq_begin, seq_end)]  the same, by name
        self.dir_syncs = {}       # dir relpath -> [(seq_begin, seq_end)]
        self.meta = []            # [MetaOp]
        self.dir_ops = {}         # dir relpath -> [MetaOp]
        self.marks = []           # [(seq, text)]
        self.unknown = []         # events on files the model could not place
        self.max_seq = 0
        cur = {}                  # live inode number -> id
        for rel, ino in sorted(snap_inodes.items()):
            nid = 'snap:%d' % ino
            kind = 'dir' if os.path.isdir(os.path.join(snapshot_dir, rel)) else 'file'
            self.nodes[nid] = (kind, os.path.join(snapshot_dir, rel))
            self.ns0[rel] = nid
            cur[ino] = nid
        self._load(events, cur)

    def rel(self, path):
        if path.endswith(' (deleted)'):
            path = path[:-len(' (deleted)')]
        if path == self.root:
            return ''
        if not path.startswith(self.root + '/'):
            raise ValueError('path outside the recorded root: %s' % path)
        return path[len(self.root) + 1:]

    def _new_node(self, ev, kind, cur):
        nid = '%s:%d@%d' % (kind, ev.ino, ev.seq_end)
        self.nodes[nid] = (kind, None)
        cur[ev.ino] = nid
        return nid

    def _add_meta(self, op):
        self.meta.append(op)
        for d in op.dirs:
            lst = self.dir_ops.setdefault(d, [])
            op.idx[d] = len(lst)
            lst.append(op)

    def _load(self, events, cur):
        for ev in events:
            self.max_seq = max(self.max_seq, ev.seq_end)
            if ev.kind == 'mark':
                self.marks.append((ev.seq_end, ev.text))
                continue
            k = ev.kind
            if k == 'open':
                if ev.flags & record.F_CREATED:
                    nid = self._new_node(ev, 'file', cur)
                    self._add_meta(MetaOp(ev, 'create', self.rel(ev.path), node=nid))
                elif ev.flags & record.F_TRUNCATED:
                    nid = cur.get(ev.ino)
                    if nid is None:
                        self.unknown.append(ev)
                    else:
                        self.data.setdefault(nid, []).append(DataOp(ev, 0, size=0))
            elif k == 'mkdir':
                nid = self._new_node(ev, 'dir', cur)
                self._add_meta(MetaOp(ev, 'mkdir', self.rel(ev.path), node=nid))
            elif k in ('rename', 'link'):
                self._add_meta(MetaOp(ev, k, self.rel(ev.path), self.rel(ev.path2)))
            elif k in ('unlink', 'rmdir'):
                self._add_meta(MetaOp(ev, k, self.rel(ev.path)))
            elif ev.is_sync and ev.flags & record.F_DIR:
                if not ev.flags & record.F_SKIPPED:
                    self.dir_syncs.setdefault(self.rel(ev.path), []).append(
                        (ev.seq_begin, ev.seq_end))
            else:
                nid = cur.get(ev.ino)
                if nid is None:
                    self.unknown.append(ev)
                    continue
                if ev.is_write:
                    self.data.setdefault(nid, []).append(DataOp(ev, ev.offset, data=ev.data))
                elif k == 'ftruncate':
                    self.data.setdefault(nid, []).append(DataOp(ev, 0, size=ev.offset))
                elif ev.is_sync and not ev.flags & record.F_SKIPPED:
                    self.syncs.setdefault(nid, []).append((ev.seq_begin, ev.seq_end))
                    self.path_syncs.setdefault(self.rel(ev.path), []).append(
                        (ev.seq_begin, ev.seq_end))

    def synced_between(self, rel, a, c):
        """whether file rel was synced by a call that began after a and
        returned by c"""
        return any(a < sb and se <= c for sb, se in self.path_syncs.get(rel, ()))

    # -- what is durable at c --------------------------------------------
    @staticmethod
    def _barrier(syncs, c):
        """seq_begin of the latest barrier that had returned by c (0: none)"""
        b = 0
        for sb, se in syncs:
            if se <= c and sb > b:
                b = sb
        return b

    def split_data(self, nid, c):
        """(durable ops, unsynced ops) of inode nid at crash point c"""
        barrier = self._barrier(self.syncs.get(nid, ()), c)
        durable, pending = [], []
        for op in self.data.get(nid, ()):
            if op.seq_begin > c:
                continue
            if op.seq_end <= c and (op.seq_end < barrier or op.dsync):
                durable.append(op)
            else:
                pending.append(op)
        return durable, pending

    def split_meta(self, c):
        """({dir: number of its ops that are durable}, {dir: number begun by c})"""
        durable, begun = {}, {}
        for d, ops in self.dir_ops.items():
            barrier = self._barrier(self.dir_syncs.get(d, ()), c)
            n_begun = n_durable = 0
            for i, op in enumerate(ops):
                if op.seq_begin > c:
                    break
                n_begun = i + 1
                # a rename is durable if either directory was synced
                synced = op.seq_end <= c and (op.seq_end < barrier or any(
                    op.seq_end < self._barrier(self.dir_syncs.get(d2, ()), c)
                    for d2 in op.dirs))
                if synced:
                    n_durable = i + 1   # and everything before it in d
            durable[d], begun[d] = n_durable, n_begun
        return durable, begun

    # -- building a state ----------------------------------------------------
    def namespace(self, c, cuts):
        """{relpath: id} after the name operations each directory's cut
        lets through (an op applies iff it is below the cut of every
        directory it touches)."""
        ns = dict(self.ns0)
        for op in self.meta:
            if op.seq_begin > c:
                continue
            if any(op.idx[d] >= cuts.get(d, 0) for d in op.dirs):
                continue
            parent = os.path.dirname(op.path)
            if op.kind in ('create', 'mkdir'):
                if (parent == '' or ns.get(parent) is not None) and op.path not in ns:
                    ns[op.path] = op.node
            elif op.kind == 'rename':
                if op.path in ns and (os.path.dirname(op.path2) == '' or
                                      os.path.dirname(op.path2) in ns):
                    nid = ns.pop(op.path)
                    if self.nodes[nid][0] == 'dir':
                        for p in [p for p in ns if p.startswith(op.path + '/')]:
                            ns[op.path2 + p[len(op.path):]] = ns.pop(p)
                    ns[op.path2] = nid
            elif op.kind == 'link':
                if op.path in ns:
                    ns[op.path2] = ns[op.path]
            elif op.kind == 'unlink':
                ns.pop(op.path, None)
            elif op.kind == 'rmdir':
                if not any(p.startswith(op.path + '/') for p in ns):
                    ns.pop(op.path, None)
        # a name whose directory went is gone too
        return {p: n for p, n in ns.items()
                if all(q in ns for q in _parents(p))}

    def content(self, nid, ops):
        """bytes of file nid after applying ops [(DataOp, sectors or None)]
        in order; sectors: the set of sector numbers of a torn write that
        reached the disk (None: all)"""
        _kind, snap = self.nodes[nid]
        if snap is not None:
            with open(snap, 'rb') as f:
                buf = bytearray(f.read())
        else:
            buf = bytearray()
        for op, sectors in ops:
            if op.size is not None:
                del buf[op.size:]
                buf.extend(b'\0' * (op.size - len(buf)))
                continue
            off, data = op.offset, op.data
            if sectors is None:
                pieces = [(off, data)]
            else:
                pieces = []
                for s in sorted(sectors):
                    a = max(off, s * SECTOR)
                    b = min(off + len(data), (s + 1) * SECTOR)
                    if a < b:
                        pieces.append((a, data[a - off:b - off]))
            for a, piece in pieces:
                if len(buf) < a:
                    buf.extend(b'\0' * (a - len(buf)))
                buf[a:a + len(piece)] = piece
        return bytes(buf)

    def build(self, c, choice, dest=None):
        """The state at crash point c under choice: {relpath: bytes | DIR}.
        Written below dest if given. Returns (files, digest)."""
        dur_meta, begun_meta = self.split_meta(c)
        cuts = choice.meta_cuts(self, dur_meta, begun_meta)
        ns = self.namespace(c, cuts)
        files = {}
        pending = {}
        durable = {}
        for rel in sorted(ns):
            nid = ns[rel]
            if self.nodes[nid][0] == 'file' and os.path.basename(rel) not in self.ignore:
                durable[rel], pending[rel] = self.split_data(nid, c)
        chosen = choice.select_data(c, {r: p for r, p in pending.items() if p})
        h = hashlib.sha256()
        for rel in sorted(ns):
            nid = ns[rel]
            if self.nodes[nid][0] == 'dir':
                files[rel] = DIR
                h.update(b'D' + rel.encode() + b'\0')
                continue
            ops = sorted([(op, None) for op in durable.get(rel, ())] + chosen.get(rel, []),
                         key=lambda t: t[0].seq_end)
            data = self.content(nid, ops)
            files[rel] = data
            h.update(b'F' + rel.encode() + b'\0' + hashlib.sha256(data).digest())
        if dest is not None:
            write_tree(files, dest)
        return files, h.hexdigest()


def _parents(rel):
    out = []
    p = os.path.dirname(rel)
    while p:
        out.append(p)
        p = os.path.dirname(p)
    return out


def write_tree(files, dest):
    os.makedirs(dest, exist_ok=True)
    for rel in sorted(files):
        path = os.path.join(dest, rel)
        if files[rel] is DIR:
            os.makedirs(path, exist_ok=True)
        else:
            with open(path, 'wb') as f:
                f.write(files[rel])


def read_tree(root, ignore=()):
    """{relpath: bytes | DIR} of a live directory"""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = DIR
        for fn in filenames:
            rel = os.path.relpath(os.path.join(dirpath, fn), root)
            if fn in ignore:
                out[rel] = None
                continue
            with open(os.path.join(dirpath, fn), 'rb') as f:
                out[rel] = f.read()
    return out


def tree_inodes(root):
    """{relpath: inode number} of a live directory (its root excluded)"""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            out[os.path.relpath(p, root)] = os.lstat(p).st_ino
    return out


# -- choices ---------------------------------------------------------------

class Choice:
    """Which unsynced operations persist. policy: 'synced' (none),
    'all' (every one that had returned), 'prefix' (per file and per
    directory a random prefix), 'subset' (each one independently, some
    writes torn), 'torn' (all that had returned, one write torn),
    'lmdb-behind' (data.mdb synced only, everything else all),
    'index-behind' (data.mdb all, everything else synced only),
    'drop-one' (all that had returned but one). Random choices come
    from rng (seeded by the caller)."""

    POLICIES = ('synced', 'all', 'prefix', 'subset', 'torn', 'lmdb-behind',
                'index-behind', 'drop-one')

    def __init__(self, policy, rng: random.Random, lmdb_name='data.mdb'):
        if policy not in self.POLICIES:
            raise ValueError(policy)
        self.policy = policy
        self.rng = rng
        self.lmdb_name = lmdb_name
        self.note = ''            # what a random choice did, for the report

    def meta_cuts(self, model, durable, begun):
        """{dir: how many of its name operations persist}"""
        cuts = {}
        for d in begun:
            lo, hi = durable[d], begun[d]
            if self.policy in ('synced', 'index-behind'):
                cuts[d] = lo
            elif self.policy in ('prefix', 'subset'):
                cuts[d] = self.rng.randint(lo, hi)
            else:
                cuts[d] = hi
        return cuts

    def _torn(self, op):
        """a random set of the sectors of write op that reach the disk"""
        if op.data is None or len(op.data) == 0:
            return None
        first = op.offset // SECTOR
        last = (op.offset + len(op.data) - 1) // SECTOR
        if first == last:
            return {first} if self.rng.random() < 0.5 else set()
        return {s for s in range(first, last + 1) if self.rng.random() < 0.5}

    def select_data(self, c, pending):
        """{rel: [(op, sectors|None)]}: the unsynced data operations that
        persist, per file (pending: {rel: [DataOp]}, in order)"""
        rng = self.rng
        out = {}
        for rel in sorted(pending):
            ops = pending[rel]
            returned = [op for op in ops if op.seq_end <= c]
            pol = self.policy
            if pol in ('lmdb-behind', 'index-behind'):
                is_lmdb = os.path.basename(rel) == self.lmdb_name
                pol = 'synced' if is_lmdb == (pol == 'lmdb-behind') else 'all'
            if pol == 'synced':
                continue
            if pol in ('all', 'torn', 'drop-one'):
                out[rel] = [(op, None) for op in returned]
            elif pol == 'prefix':
                k = rng.randint(0, len(ops))
                out[rel] = [(op, None) for op in ops[:k]]
                if k < len(ops) and rng.random() < 0.5:
                    out[rel].append((ops[k], self._torn(ops[k])))
            else:
                p = rng.choice((0.25, 0.5, 0.75))
                out[rel] = [(op, self._torn(op) if rng.random() < 0.3 else None)
                            for op in ops if rng.random() < p]
        if self.policy in ('torn', 'drop-one'):
            cands = [(rel, i) for rel in sorted(out) for i in range(len(out[rel]))
                     if self.policy == 'drop-one' or out[rel][i][0].data]
            if cands:
                rel, i = rng.choice(cands)
                op = out[rel][i][0]
                if self.policy == 'torn':
                    out[rel][i] = (op, self._torn(op))
                    self.note = 'torn %s@%d+%d' % (rel, op.offset, len(op.data))
                else:
                    del out[rel][i]
                    self.note = 'dropped %s seq %d' % (rel, op.seq_end)
        return out
