"""doveadm lmdb salvage: a damaged data.mdb (leaf pages of links, a leaf
page of bodies, a branch page, a meta page LMDB refuses the file for,
random bytes at random offsets; fixed seed) is rebuilt from what is still
readable, without LMDB's own code ever opening it. Every message the salvage does not
report lost comes back byte-identical over IMAP and POP3 with its UID,
flags, keywords and UIDL; the ones reported lost are exactly the ones
missing (whole bodies that lost their links come back in a recovery
mailbox, and are reported so); verify is clean afterwards and the damaged
file is kept aside. The salvage refuses while a session has the
environment open, and an undamaged environment loses nothing.

The damage is placed by reading data.mdb's B-trees with the LMDB 0.9
on-disk layout of 64-bit little-endian hosts (the same the unit tests
use), so the test knows which pages hold links and bodies."""

import glob
import hashlib
import os
import random
import re
import struct

import harness

USER = 'testuser'
PAGE = 4096
FOLDERS = [('INBOX', 100), ('Work', 50), ('Lists/Daily', 50)]
KEYWORDS = ['$Forwarded', 'Project', 'Later']
SEED = 0x5A17A6E


# --- mail ----------------------------------------------------------------

def make_message(i: int) -> bytes:
    """Varied sizes: most fit one 4 KiB chunk, some need many."""
    size = [300, 1500, 3900, 5000, 12000, 30000, 70000][i % 7] + (i * 37) % 500
    body = ''.join('line %d of message %d %s\r\n' % (n, i, 'x' * (n % 50))
                   for n in range(size // 40))
    return ('From: sender%d@example.com\r\n'
            'To: testuser@example.com\r\n'
            'Subject: salvage %d\r\n'
            'Message-ID: <salvage-%d@example.com>\r\n'
            'Date: Tue, 3 Nov 2026 09:%02d:%02d +0000\r\n'
            '\r\n' % (i, i, i, (i // 60) % 60, i % 60)).encode() + body.encode()


def populate(dc, folders=FOLDERS):
    """INBOX over LMTP, the folders by APPEND; then flags and keywords."""
    n = 0
    inbox = [make_message(i) for i in range(folders[0][1])]
    for r in dc.lmtp_deliver_many([USER], inbox):
        assert r.all_ok(), r
    n = len(inbox)
    imap = dc.imap(USER)
    for name, count in folders[1:]:
        typ, data = imap.create(name)
        assert typ == 'OK', data
        for i in range(count):
            flags = '(\\Seen)' if i % 3 == 0 else None
            typ, data = imap.append(name, flags, None, make_message(n + i))
            assert typ == 'OK', data
        n += count
    for name, count in folders:
        typ, data = imap.select(name)
        assert typ == 'OK', data
        typ, data = imap.uid('SEARCH', 'ALL')
        uids = data[0].decode().split()
        for picked, flags in ((uids[::5], '(\\Flagged)'),
                              (uids[1::4], '(\\Answered %s)' % KEYWORDS[1]),
                              (uids[2::6], '(%s %s)' % (KEYWORDS[0], KEYWORDS[2]))):
            if picked:
                typ, data = imap.uid('STORE', ','.join(picked), '+FLAGS', flags)
                assert typ == 'OK', data
    imap.logout()


def snapshot(dc, mailboxes) -> dict:
    """{(mailbox, uid): {'hash', 'flags', 'keywords', 'message_id',
    'uidl' (INBOX)}} over IMAP and POP3."""
    out = {}
    imap = dc.imap(USER)
    for name in mailboxes:
        typ, data = imap.select(name, readonly=True)
        assert typ == 'OK', (name, data)
        if int(data[0]) == 0:
            continue
        for uid, d in harness.imap_fetch(imap, '1:*', '(FLAGS BODY.PEEK[])').items():
            flags = [str(f) for f in d['FLAGS']]
            body = d['BODY[]']
            m = re.search(rb'Message-ID: (<[^>]*>)', body)
            out[(name, uid)] = {
                'hash': hashlib.sha256(body).hexdigest(),
                'flags': sorted(f for f in flags if f.startswith('\\') and f != '\\Recent'),
                'keywords': sorted(f for f in flags if not f.startswith('\\')),
                'message_id': m.group(1).decode() if m else None,
            }
    imap.logout()
    pop = dc.pop3(USER)
    status, listing = harness.pop3_multiline(pop, 'UIDL')
    pop.quit()
    uidls = [line.split()[1].decode() for line in listing.splitlines() if line.strip()]
    inbox_uids = sorted(uid for (name, uid) in out if name == 'INBOX')
    assert len(uidls) == len(inbox_uids), (len(uidls), len(inbox_uids))
    for uid, uidl in zip(inbox_uids, uidls):
        out[('INBOX', uid)]['uidl'] = uidl
    return out


def list_mailboxes(dc) -> list:
    r = dc.doveadm('mailbox', 'list', user=USER)
    return [line.strip() for line in r.stdout.splitlines() if line.strip()]


# --- data.mdb ------------------------------------------------------------

def u16(b, o):
    return struct.unpack_from('<H', b, o)[0]


def u64(b, o):
    return struct.unpack_from('<Q', b, o)[0]


def newest_meta(data: bytes) -> int:
    """Offset of the meta page LMDB would use (highest txnid)."""
    return max((0, PAGE), key=lambda off: u64(data, off + 144))


def walk(data: bytes, root: int, branches: list, leaves: list, dbis: dict | None = None):
    """Collect the branch and leaf pages of a tree (leaves as (pgno,
    [keys])); with dbis, the named DBIs' roots found in its leaves."""
    page = data[root * PAGE:(root + 1) * PAGE]
    flags, lower = u16(page, 10), u16(page, 12)
    ptrs = [u16(page, 16 + 2 * i) for i in range((lower - 16) // 2)]
    if flags & 0x01:
        branches.append(root)
        for ofs in ptrs:
            child = u16(page, ofs) | u16(page, ofs + 2) << 16 | u16(page, ofs + 4) << 32
            walk(data, child, branches, leaves, dbis)
    elif flags & 0x02:
        keys = []
        for ofs in ptrs:
            nflags, ksize = u16(page, ofs + 4), u16(page, ofs + 6)
            key = page[ofs + 8:ofs + 8 + ksize]
            keys.append(key)
            if dbis is not None and nflags & 0x02:
                dbis[key.decode()] = u64(page, ofs + 8 + ksize + 40)
        leaves.append((root, keys))


def dbi_pages(data: bytes) -> dict:
    """{dbi name: (branch pages, [(leaf page, keys)])}"""
    meta = newest_meta(data)
    dbis = {}
    walk(data, u64(data, meta + 128), [], [], dbis)
    out = {}
    for name, root in dbis.items():
        branches, leaves = [], []
        if root != (1 << 64) - 1:
            walk(data, root, branches, leaves)
        out[name] = (branches, leaves)
    return out


def damage(path: str, inbox_guid: bytes, work_guid: bytes) -> list:
    """Damage data.mdb; returns what was done."""
    rng = random.Random(SEED)
    with open(path, 'rb') as f:
        data = f.read()
    pages = dbi_pages(data)
    done = []
    writes = []
    link_branches, link_leaves = pages['links']
    body_branches, body_leaves = pages['bodies']
    assert len(link_leaves) >= 3 and link_branches, pages['links']
    assert len(body_leaves) >= 2, pages['bodies']

    def leaf_of(guid, avoid=()):
        for pgno, keys in link_leaves:
            if pgno not in avoid and any(k[:16] == guid for k in keys):
                return pgno
        return None
    # leaves of links: their links are gone for good; INBOX's are matched
    # to their bodies again, Work's (whose cache is removed) can't be
    inbox_leaf = leaf_of(inbox_guid)
    work_leaf = leaf_of(work_guid, (inbox_leaf,)) or leaf_of(work_guid)
    for pgno in sorted({inbox_leaf, work_leaf}):
        writes.append((pgno * PAGE, PAGE))
        done.append('links leaf %d' % pgno)
    # the root of the links tree: the other leaves become orphans
    writes.append((link_branches[0] * PAGE + 16, PAGE - 16))
    done.append('links branch %d' % link_branches[0])
    # a leaf of bodies: rebuilt from their chunks
    writes.append((body_leaves[-1][0] * PAGE, PAGE))
    done.append('bodies leaf %d' % body_leaves[-1][0])
    # the older meta page's magic: LMDB refuses to open the file at all,
    # the scanner uses the newer one
    older = min((0, PAGE), key=lambda off: u64(data, off + 144))
    writes.append((older + 16, 4))
    done.append('magic of meta page %d' % (older // PAGE))
    # random bytes anywhere past the meta pages
    for _ in range(8):
        ofs = rng.randrange(2 * PAGE, len(data) - 64)
        writes.append((ofs, 48))
        done.append('48 bytes at %d' % ofs)
    with open(path, 'r+b') as f:
        for ofs, size in writes:
            f.seek(ofs)
            f.write(rng.randbytes(size))
    return done


def mailbox_guid(dc, name: str) -> bytes:
    r = dc.doveadm('mailbox', 'status', '-u', USER, 'guid', name)
    return bytes.fromhex(r.stdout.strip().split('=', 1)[1])


# --- the report ----------------------------------------------------------

def parse_report(stdout: str):
    """-> (lost {(mailbox, uid): message-id}, recovered [(mailbox, uid)],
    totals {what: n}, other rows (restored ones included))."""
    lost, recovered, totals, other = {}, [], {}, []
    lines = stdout.splitlines()
    assert lines and lines[0].split('\t') == ['mailbox', 'uid', 'message-id', 'status'], lines[:1]
    for line in lines[1:]:
        mailbox, uid, mid, status = line.split('\t', 3)
        if status.startswith('lost: '):
            lost[(mailbox, int(uid))] = mid
        elif status.startswith('recovered: '):
            recovered.append((mailbox, int(uid)))
        elif mailbox == '-' and ': ' in status and status.rsplit(': ', 1)[1].isdigit():
            what, n = status.rsplit(': ', 1)
            totals[what] = int(n)
        else:
            other.append(line)
    return lost, recovered, totals, other


def assert_verify_clean(dc):
    v = dc.doveadm('lmdb', 'verify', user=USER, check=False)
    assert v.returncode == 0 and v.stdout.splitlines()[1:] == [], (v.stdout, v.stderr)


def salvage(dc, *args):
    return dc.doveadm('lmdb', 'salvage', *args, user=USER, check=False)


# --- tests ---------------------------------------------------------------

def test_lmdb_salvage_damaged():
    with harness.Dovecot('lmdb') as dc:
        dc.start()
        populate(dc)
        names = [name for name, _ in FOLDERS]
        before = snapshot(dc, names)
        assert len(before) == sum(n for _, n in FOLDERS)
        env_dir = os.path.join(dc.home(USER), 'lmdb')
        guids = mailbox_guid(dc, 'INBOX'), mailbox_guid(dc, 'Work')
        dc.stop()
        done = damage(os.path.join(env_dir, 'data.mdb'), *guids)
        # without Work's cache its lost links' Message-IDs are unknown:
        # their bodies go to the recovery mailbox
        caches = glob.glob(os.path.join(env_dir, 'mailboxes', 'Work', '*',
                                        'dovecot.index.cache'))
        assert caches, os.listdir(env_dir)
        for c in caches:
            os.unlink(c)
        dc.start()
        # LMDB itself can't open it: the salvage never lets it try
        st = dc.doveadm('lmdb', 'stats', user=USER, check=False)
        assert st.returncode != 0 and 'MDB_INVALID' in st.stderr, (st.stdout, st.stderr)

        r = salvage(dc)
        lost, recovered, totals, other = parse_report(r.stdout)
        info = 'damage: %s\nstdout:\n%s\nstderr:\n%s' % (done, r.stdout, r.stderr)
        # each way a message can go: lost with its body, its link
        # restored by Message-ID, its body linked in a recovery mailbox
        assert lost, info
        assert recovered, info
        assert totals['messages restored'] > 0, info
        assert totals['bodies rebuilt'] > 0, info
        assert totals['records kept from orphan pages'] > 0, info
        assert r.returncode != 0, info
        assert totals['messages lost'] == len(lost), info
        assert set(lost) <= set(before), info
        # a reported Message-ID is the lost message's own
        for key, mid in lost.items():
            assert mid in ('-', before[key]['message_id']), (key, mid, info)
        assert glob.glob(os.path.join(env_dir, 'data.mdb.damaged-*')), os.listdir(env_dir)
        assert not os.path.exists(os.path.join(env_dir, 'salvage.tmp'))

        after = snapshot(dc, names)
        # exactly the reported ones are missing, the rest as they were
        assert set(after) == set(before) - set(lost), info
        for key, want in after.items():
            assert want == before[key], (key, want, before[key])

        # whole bodies whose links were lost: in the recovery mailbox,
        # each one a lost message's content
        boxes = list_mailboxes(dc)
        rec_boxes = sorted({mailbox for mailbox, _ in recovered})
        for b in rec_boxes:
            assert b in boxes, (b, boxes)
        extra = snapshot_plain(dc, rec_boxes)
        assert sorted(extra) == sorted(recovered), (extra.keys(), recovered)
        lost_hashes = {before[key]['hash'] for key in lost}
        for key, h in extra.items():
            assert h in lost_hashes, (key, info)

        assert_verify_clean(dc)
        dc.assert_no_log_errors()


def snapshot_plain(dc, mailboxes) -> dict:
    """{(mailbox, uid): sha256 of the message} (no POP3)."""
    out = {}
    imap = dc.imap(USER)
    for name in mailboxes:
        typ, data = imap.select(name, readonly=True)
        assert typ == 'OK', (name, data)
        if int(data[0]) == 0:
            continue
        for uid, d in harness.imap_fetch(imap, '1:*', '(BODY.PEEK[])').items():
            out[(name, uid)] = hashlib.sha256(d['BODY[]']).hexdigest()
    imap.logout()
    return out


def test_lmdb_salvage_undamaged():
    folders = [('INBOX', 20), ('Work', 10)]
    with harness.Dovecot('lmdb') as dc:
        dc.start()
        populate(dc, folders)
        names = [name for name, _ in folders]
        before = snapshot(dc, names)
        boxes_before = list_mailboxes(dc)
        # no process may have the environment open (LMTP keeps it)
        dc.restart()

        r = salvage(dc)
        assert r.returncode == 0, (r.stdout, r.stderr)
        lost, recovered, totals, other = parse_report(r.stdout)
        assert not lost and not recovered and not other, r.stdout
        assert totals['messages restored'] == 0, r.stdout
        assert totals['messages kept'] == len(before), r.stdout
        assert totals['records damaged'] == 0, r.stdout
        assert totals['pages unreadable'] == 0, r.stdout

        assert snapshot(dc, names) == before
        assert list_mailboxes(dc) == boxes_before
        assert_verify_clean(dc)
        dc.assert_no_log_errors()


def test_lmdb_salvage_refuses_open_session():
    """Without -f the salvage refuses while a session has the environment
    open (it would go on writing into the damaged file); with -f it goes
    ahead and warns."""
    folders = [('INBOX', 5)]
    with harness.Dovecot('lmdb') as dc:
        dc.start()
        populate(dc, folders)
        dc.restart()
        env_dir = os.path.join(dc.home(USER), 'lmdb')
        imap = dc.imap(USER)
        typ, data = imap.select('INBOX')
        assert typ == 'OK', data
        pid = dc.server_pid(imap.sock, 'imap')

        r = salvage(dc)
        assert r.returncode != 0, (r.stdout, r.stderr)
        assert 'is open by process(es) %d' % pid in r.stderr, r.stderr
        assert not glob.glob(os.path.join(env_dir, '*.damaged-*')), os.listdir(env_dir)
        # the session goes on as before
        typ, data = imap.noop()
        assert typ == 'OK', data

        # -f salvages anyway, and says what that costs
        r = salvage(dc, '-f')
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert 'is open by process(es) %d (-f)' % pid in r.stderr, r.stderr
        assert glob.glob(os.path.join(env_dir, 'data.mdb.damaged-*')), os.listdir(env_dir)
        imap.logout()
        assert [uid for uid, _ in dc.message_ids(USER)] == [1, 2, 3, 4, 5]
