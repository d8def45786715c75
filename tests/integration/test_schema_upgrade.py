"""Upgrade on open (issue "Trust", item 3; docs/schema.md, "Upgrade-on-open
rule").

fixtures/schema1.tar.gz is one user's ~/lmdb as the schema-1 module
(commit 95ad4a8) left it (fixtures/make_schema1.py): INBOX with flags,
keywords, an expunged message (a dead body), a body shared with Archive,
a message moved there; fixtures/schema1.json says what each message must
read back as.  Unpacked as a fresh user's mail root:

* the first process that opens it upgrades it in place ("upgraded from
  schema 1 to 2"); every message reads back as the manifest says over
  IMAP (UID, flags, keywords, body, INTERNALDATE from the schema-1 body
  record, UIDVALIDITY) and POP3 (UIDL listing, RETR); verify is clean;
  every record is version 2 with its checksum, chunks stay version 1,
  the uidls index is built; a second start upgrades nothing and writes
  none of the records again;
* the same with every Dovecot index file deleted first: force-resync and
  `doveadm lmdb recover` bring every message back from the links;
* an environment whose env record says schema 3 (a valid version-2
  record) is refused with "upgrade the module", and nothing is written;
* links schema 2 refuses (an 8-bit UIDL, a keyword with a space, a UIDL
  two messages share, as schema 1 could leave them) are upgraded, and a
  shared UIDL stays indexed when one of its holders is expunged;
* a schema-1 copy (same body, same UIDL as its original) moved back into
  INBOX, where the original still is, gets a UIDL of its own.

The schema-1 records are read from a pristine copy of the fixture by the
test's own decoding of docs/schema.md (schema 1: the same fields as
schema 2, version byte 1, no CRC).
"""

import datetime
import hashlib
import json
import os
import poplib
import re
import struct
import tarfile
import zlib

import harness
import lmdbrec
import test_index_loss

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures')
TARBALL = os.path.join(FIXTURES, 'schema1.tar.gz')
MANIFEST = os.path.join(FIXTURES, 'schema1.json')
# as the fixture was written (make_schema1.py); and POP3's RETR must not
# set \Seen: the checks read every message several times
EXTRA = ('lmtp_add_received_header = no\n'
         'pop3_uidl_format = %08Xu%08Xv\n'
         'pop3_no_flag_updates = yes\n'
         'plugin {\n  lmdb_autopurge_interval = 0\n}\n')
USER = 'testuser'
UPGRADE_RE = re.compile(r'lmdb: (\S+): upgraded from schema 1 to 2 \((\d+) records\)')
REFUSED = 'environment has schema version 3, this module only knows up to 2: upgrade the module'
TYPES = {b'meta': 1, b'bodies': 2, b'links': 3, b'mailboxes': 4, b'gc': 5, b'uidls': 8}


def manifest() -> list:
    with open(MANIFEST) as f:
        return json.load(f)


def unpack(dest: str, uid: int, gid: int) -> str:
    """The fixture's lmdb/ under dest, owned by uid:gid, 0700/0600."""
    with tarfile.open(TARBALL) as t:
        # (extraction filters: Python 3.11.4 and Debian's 3.11.2 backport)
        if hasattr(tarfile, 'data_filter'):
            t.extractall(dest, filter='data')
        else:
            t.extractall(dest)
    root = os.path.join(dest, 'lmdb')
    for d, dirs, files in os.walk(root):
        os.chown(d, uid, gid)
        os.chmod(d, 0o700)
        for f in files:
            os.chown(os.path.join(d, f), uid, gid)
            os.chmod(os.path.join(d, f), 0o600)
    return root


def dump(root: str, dbis=(b'meta', b'bodies', b'chunks', b'links', b'mailboxes', b'gc',
                          b'uidls', b'quarantine')) -> dict:
    """{dbi: {key: value}} of the environment (DBIs that don't exist: absent)."""
    env = lmdbrec.open_env(root, readonly=True)
    out = {}
    try:
        with env.begin() as txn:
            names = {bytes(k) for k, _v in txn.cursor()}
        for name in dbis:
            if name not in names:
                continue
            db = env.open_db(name, create=False)
            with env.begin(db=db) as txn:
                out[name] = {bytes(k): bytes(v) for k, v in txn.cursor()}
    finally:
        env.close()
    return out


def v1(value: bytes) -> bytes:
    """The fields of a schema-1 value."""
    assert value[:1] == b'\x01', value[:8]
    return value[1:]


def as_v2(value: bytes) -> bytes:
    """A schema-1 value with a schema-2 header, for lmdbrec's decoders
    (the fields are the same; they don't check the CRC)."""
    return b'\x02' + bytes(4) + v1(value)


def schema1_messages(recs: dict) -> dict:
    """(mailbox, uid) -> what the schema-1 records say: flags, keywords,
    UIDL, received date, GUID, UIDVALIDITY."""
    boxes = {}
    for key, val in recs[b'mailboxes'].items():
        f = v1(val)
        n = struct.unpack('>H', f[27:29])[0]
        boxes[key] = (f[29:29 + n].decode(), struct.unpack('>I', f[3:7])[0])
    out = {}
    for key, val in recs[b'links'].items():
        name, uidvalidity = boxes[key[:16]]
        uid = struct.unpack('>I', key[16:20])[0]
        link = lmdbrec.decode_link(as_v2(val))
        body = lmdbrec.decode_body(as_v2(recs[b'bodies'][lmdbrec.body_key(link['body_id'])]))
        out[(name, uid)] = {'flags': link['flags'],
                            'keywords': sorted(k.decode() for k in link['keywords']),
                            'pop3_uidl': link['pop3_uidl'].decode(),
                            'received': body['received_date'], 'guid': body['guid'].decode(),
                            'uidvalidity': uidvalidity}
    return out


SYSTEM_FLAGS = {0x01: '\\Answered', 0x02: '\\Flagged', 0x04: '\\Deleted', 0x08: '\\Seen',
                0x10: '\\Draft'}


def expected(man: list, old: dict) -> dict:
    """(mailbox, uid) -> manifest entry, checked against the schema-1
    records (so that the records give the INTERNALDATE and UIDVALIDITY)."""
    out = {}
    for m in man:
        key = (m['mailbox'], m['uid'])
        rec = old[key]
        flags = sorted(set(m['flags']) - {'\\Recent'})
        mirror = sorted([f for bit, f in SYSTEM_FLAGS.items() if rec['flags'] & bit] +
                        rec['keywords'])
        assert flags == mirror, (key, flags, mirror)
        assert m['pop3_uidl'] == rec['pop3_uidl'] and m['guid'] == rec['guid'], (m, rec)
        out[key] = dict(m, flags=flags, received=rec['received'],
                        uidvalidity=rec['uidvalidity'])
    assert set(out) == set(old), (sorted(out), sorted(old))
    return out


def check_messages(dc, want: dict) -> None:
    """Every message over IMAP, POP3 and doveadm as `want` says."""
    imap = dc.imap()
    for box in sorted({b for b, _u in want}):
        typ, _data = imap.select(box, readonly=True)
        assert typ == 'OK', (box, _data)
        uidvalidity = int(imap.response('UIDVALIDITY')[1][0])
        got = harness.imap_fetch(imap, '1:*', '(UID FLAGS BODY.PEEK[] INTERNALDATE)')
        uids = sorted(u for b, u in want if b == box)
        assert sorted(got) == uids, (box, sorted(got), uids)
        for uid in uids:
            w, g = want[(box, uid)], got[uid]
            assert uidvalidity == w['uidvalidity'], (box, uidvalidity, w)
            flags = sorted(set(g['FLAGS']) - {'\\Recent'})
            assert flags == w['flags'], (box, uid, flags, w['flags'])
            body = g['BODY[]']
            assert (len(body), hashlib.sha256(body).hexdigest()) == (w['size'], w['sha256']), \
                (box, uid, len(body))
            date = datetime.datetime.strptime(g['INTERNALDATE'].decode(),
                                              '%d-%b-%Y %H:%M:%S %z').timestamp()
            assert date == w['received'], (box, uid, g['INTERNALDATE'], w['received'])
    imap.logout()

    inbox = [want[k] for k in sorted(want) if k[0] == 'INBOX']
    pop = dc.pop3()
    _resp, lines, _octets = pop.uidl()
    listing = [tuple(line.decode().split(' ', 1)) for line in lines]
    assert listing == [(str(i + 1), m['pop3_uidl']) for i, m in enumerate(inbox)], listing
    for i, m in enumerate(inbox):
        _st, body = harness.pop3_multiline(pop, 'RETR %d' % (i + 1))
        assert hashlib.sha256(body).hexdigest() == m['sha256'], (i + 1, len(body))
    pop.quit()

    r = dc.doveadm('fetch', 'mailbox uid guid pop3.uidl', 'all', user=USER)
    got = test_index_loss.parse_fetch(r.stdout)
    assert sorted(got) == sorted(want), (sorted(got), sorted(want))
    for key, rec in got.items():
        assert (rec['guid'], rec['pop3.uidl']) == (want[key]['guid'], want[key]['pop3_uidl']), \
            (key, rec)


def check_schema2(new: dict, old: dict) -> None:
    """Every record of the upgraded environment `new` is a valid version-2
    record (CRC over type, key and fields) with the fields of its schema-1
    form in `old`; chunks keep their version-1 form; the uidls index
    points at every link's UIDL; quarantine exists."""
    def fields(dbi, key, val):
        assert val[:1] == b'\x02', (dbi, key.hex(), val[:8])
        crc = struct.unpack('>I', val[1:5])[0]
        assert crc == zlib.crc32(bytes([TYPES[dbi]]) + key + val[5:]), (dbi, key.hex())
        return val[5:]

    env_new = fields(b'meta', b'env', new[b'meta'][b'env'])
    env_old = v1(old[b'meta'][b'env'])
    assert struct.unpack('>I', env_new[:4])[0] == 2, env_new[:4]
    assert struct.unpack('>I', env_old[:4])[0] == 1, env_old[:4]
    # generation, next_body_id, created and the counters are kept
    assert env_new[4:] == env_old[4:], (env_new.hex(), env_old.hex())
    for dbi in (b'bodies', b'links', b'mailboxes', b'gc'):
        assert set(new[dbi]) == set(old[dbi]), dbi
        for key, val in new[dbi].items():
            # (schema-1 gc values were empty)
            was = v1(old[dbi][key]) if old[dbi][key] else b''
            assert fields(dbi, key, val) == was, (dbi, key.hex(), val.hex(), was.hex())
    assert new[b'chunks'] == old[b'chunks']
    for key, val in new[b'chunks'].items():
        assert val[:4] == b'\x01\x00\x00\x00', (key.hex(), val[:8])
        assert struct.unpack('>I', val[4:8])[0] == zlib.crc32(val[8:]), key.hex()
    # one uidls entry per link: mailbox GUID, UIDL, NUL, UID; the value
    # is the header alone
    uidls = set()
    for key, val in new[b'links'].items():
        uidl = lmdbrec.decode_link(val)['pop3_uidl']
        if uidl:
            uidls.add(key[:16] + uidl + b'\0' + key[16:20])
    assert len(uidls) == len(new[b'links']), 'a link without a UIDL in the fixture'
    assert set(new[b'uidls']) == uidls, (sorted(new[b'uidls']), sorted(uidls))
    for key, val in new[b'uidls'].items():
        assert fields(b'uidls', key, val) == b'', key
    assert new.get(b'quarantine') == {}, new.get(b'quarantine')


def upgrade_lines(text: str) -> list:
    return UPGRADE_RE.findall(text)


def new_instance():
    dc = harness.Dovecot('lmdb', extra=EXTRA, name='schema')
    pristine = unpack(dc.path('pristine'), os.getuid(), os.getgid())
    old = dump(pristine)
    root = unpack(dc.home(USER), dc.uid, dc.gid)
    assert root == dc.mail_dir(USER)
    return dc, root, old


def assert_clean_log(dc, extra_text='', ignore=None):
    bad = [line for line in (dc.log() + '\n' + extra_text).splitlines()
           if re.search(r'(Error|Panic|Fatal|Warning):', line) and not dc.is_benign(line)
           and not (ignore and re.search(ignore, line))]
    assert not bad, '\n'.join(bad)


def test_schema1_upgrade_on_open():
    dc, root, old = new_instance()
    want = expected(manifest(), schema1_messages(old))
    n_records = sum(len(old[d]) for d in (b'bodies', b'links', b'mailboxes', b'gc'))
    with dc:
        check_messages(dc, want)
        lines = upgrade_lines(dc.wait_log('upgraded from schema 1'))
        assert lines == [(root, str(n_records))], lines
        r = dc.doveadm('lmdb', 'verify', user=USER, check=False)
        assert r.returncode == 0 and r.stdout.strip() == 'mailbox\tuid\tbody\tproblem', r
        dc.stop()
        upgraded = dump(root)
        check_schema2(upgraded, old)

        # a second start: nothing to upgrade, no record written again
        dc.start()
        check_messages(dc, want)
        r = dc.doveadm('lmdb', 'verify', user=USER, check=False)
        assert r.returncode == 0, r
        dc.stop()
        assert len(upgrade_lines(dc.log())) == 1, upgrade_lines(dc.log())
        again = dump(root)
        for dbi in (b'bodies', b'chunks', b'links', b'mailboxes', b'gc', b'uidls'):
            assert again[dbi] == upgraded[dbi], dbi
        assert struct.unpack('>I', again[b'meta'][b'env'][5:9])[0] == 2
        assert_clean_log(dc)


def test_schema1_upgrade_without_index():
    """The fixture without any Dovecot index file: the upgrade happens in
    force-resync, and the links give back every UID, flag, keyword and
    UIDL."""
    dc, root, old = new_instance()
    want = expected(manifest(), schema1_messages(old))
    deleted = test_index_loss.delete_index_files(dc.home(USER))
    assert any(f.endswith('INBOX/lmdb-Mails/dovecot.index.log') for f in deleted), deleted
    assert any('dovecot.list.index' in f for f in deleted), deleted
    with dc:
        r = dc.doveadm('force-resync', '*', user=USER, check=False)
        assert r.returncode == 0, r
        stderr = r.stderr
        r = dc.doveadm('lmdb', 'recover', user=USER, check=False)
        assert r.returncode == 0, r
        stderr += r.stderr
        lines = upgrade_lines(dc.log() + '\n' + stderr)
        assert len(lines) == 1 and lines[0][0] == root, lines
        check_messages(dc, want)
        r = dc.doveadm('lmdb', 'verify', user=USER, check=False)
        assert r.returncode == 0 and r.stdout.strip() == 'mailbox\tuid\tbody\tproblem', r
        dc.stop()
        check_schema2(dump(root), old)
        assert len(upgrade_lines(dc.log() + '\n' + stderr)) == 1
        # (doveadm's own log lines, the upgrade's among them, are on its
        # stderr; force-resync says what it rebuilt)
        assert_clean_log(dc, stderr, ignore=r'Warning: Mailbox (INBOX|Archive): lmdb: '
                                            r'Rebuilding index of \S+ from LMDB$')


def snapshot(root: str) -> dict:
    out = {}
    for d, _dirs, files in os.walk(root):
        for f in files:
            path = os.path.join(d, f)
            with open(path, 'rb') as fh:
                out[os.path.relpath(path, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def test_schema3_refused():
    """An environment of a newer schema than the module knows: every
    process refuses it with "upgrade the module" and writes nothing."""
    dc, root, _old = new_instance()
    env = lmdbrec.open_env(root)
    try:
        fields = lmdbrec.unseal(as_v2(lmdbrec.get(env, b'meta', b'env')))
        fields = struct.pack('>I', 3) + fields[4:]
        lmdbrec.put(env, b'meta', b'env', lmdbrec.seal(lmdbrec.TYPE_ENV, b'env', fields))
    finally:
        env.close()
    before = snapshot(root)
    with dc:
        imap = dc.imap()
        try:
            typ, data = imap.select('INBOX')
        except imap.abort as e:       # BYE: the session can't go on
            typ, data = 'BYE', [str(e).encode()]
        assert typ != 'OK', data
        # (with pop3_lock_session = no, Dovecot answers PASS before it
        # opens the storage, then closes the connection)
        pop = dc.pop3(login=False)
        pop.user(USER)
        try:
            reply = pop.pass_('testpass')
            if reply.startswith(b'+OK'):
                reply = pop.stat()
        except (poplib.error_proto, OSError) as e:    # -ERR, EOF, reset
            reply = e
        assert isinstance(reply, Exception), reply
        r = dc.doveadm('mailbox', 'status', 'messages', 'INBOX', user=USER, check=False)
        assert r.returncode != 0 and REFUSED in r.stderr, r
        log = dc.wait_log('imap(%s)' % USER, 'pop3(%s)' % USER)
    refusals = [line for line in log.splitlines() if REFUSED in line and 'Error:' in line]
    assert any('imap(' in line for line in refusals), log
    assert any('pop3(' in line for line in refusals), log
    assert not re.search(r'(Panic|Fatal):', log), log
    assert not upgrade_lines(log)
    after = snapshot(root)
    # LMDB's lock file has the reader table: the only file that may change
    changed = sorted(k for k in set(before) | set(after)
                     if before.get(k) != after.get(k) and k != 'lock.mdb')
    assert not changed, changed


def test_schema1_links_schema2_refuses():
    """Schema 1 stored UIDLs and keywords from outside unchecked, and its
    COPY within INBOX gave the copy the original's UIDL.  Such links are
    upgraded, not lost: an 8-bit UIDL becomes its digest, a keyword with
    a space is left out of the mirror, a shared UIDL is left as it is
    (either holder may be what a client has seen) and verify lists it;
    once one of the two is expunged, the other holds it alone and verify
    is clean again."""
    dc, root, old = new_instance()
    inbox = [k for k, v in old[b'mailboxes'].items() if b'INBOX' in v][0]
    shared = lmdbrec.decode_link(as_v2(old[b'links'][inbox + struct.pack('>I', 1)]))
    assert shared['pop3_uidl'] == b'000000016b14bc1c', shared
    crafted = {7: {'pop3_uidl': 'uidl-\u00e9-7'.encode()},
               8: {'pop3_uidl': shared['pop3_uidl']},
               2: {'keywords': [b'$Forwarded', b'bad keyword', b'Work']}}
    env = lmdbrec.open_env(root)
    try:
        for uid, changes in crafted.items():
            key = inbox + struct.pack('>I', uid)
            rec = lmdbrec.decode_link(as_v2(lmdbrec.get(env, b'links', key)))
            rec.update(changes)
            lmdbrec.put(env, b'links', key, b'\x01' + lmdbrec.encode_link(rec))
    finally:
        env.close()
    want = expected(manifest(), schema1_messages(old))
    want[('INBOX', 7)]['pop3_uidl'] = hashlib.sha1('uidl-\u00e9-7'.encode()).digest()[-16:].hex()
    want[('INBOX', 8)]['pop3_uidl'] = '000000016b14bc1c'
    # (the index would serve the keywords and UIDLs it has: without it,
    # what is served comes from the upgraded links)
    test_index_loss.delete_index_files(dc.home(USER))
    with dc:
        r = dc.doveadm('force-resync', '*', user=USER, check=False)
        assert r.returncode == 0, r
        stderr = r.stderr
        assert len(upgrade_lines(dc.log() + stderr)) == 1, stderr
        assert re.search(r'Warning: lmdb: \S+: 1 messages share their POP3 UIDL with another '
                         r'message of their mailbox', stderr), stderr
        r = dc.doveadm('lmdb', 'recover', user=USER, check=False)
        assert r.returncode == 0, r
        # uid 2's flags from the mirror: the bad keyword is gone
        assert want[('INBOX', 2)]['flags'] == ['$Forwarded', 'Work', '\\Answered']
        pop = dc.pop3()
        listing = [tuple(line.decode().split(' ', 1)) for line in pop.uidl()[1]]
        pop.quit()
        inbox_want = [want[k] for k in sorted(want) if k[0] == 'INBOX']
        assert listing == [(str(i + 1), m['pop3_uidl']) for i, m in enumerate(inbox_want)], \
            listing
        imap = dc.imap()
        imap.select('INBOX')
        flags = harness.imap_fetch(imap, '2', '(FLAGS)')[2]['FLAGS']
        assert sorted(set(flags) - {'\\Recent'}) == want[('INBOX', 2)]['flags'], flags
        r = dc.doveadm('lmdb', 'verify', user=USER, check=False)
        problems = r.stdout.strip().split('\n')[1:]
        assert problems == ['INBOX\t8\t-\tPOP3 UIDL 000000016b14bc1c is also uid 1\'s'], r

        # uid 1 goes: uid 8 keeps the UIDL its clients saw, alone now
        imap.uid('STORE', '1', '+FLAGS.SILENT', '(\\Deleted)')
        imap.expunge()
        imap.logout()
        pop = dc.pop3()
        listing = [tuple(line.decode().split(' ', 1)) for line in pop.uidl()[1]]
        pop.quit()
        assert [u for _n, u in listing] == [m['pop3_uidl'] for m in inbox_want[1:]], listing
        # the UIDL index names uid 8 for it now (else a later save given
        # that UIDL would not see it is taken)
        entries = dump(root, dbis=(b'uidls',))[b'uidls']
        entry = entries.get(inbox + shared['pop3_uidl'] + b'\0' + struct.pack('>I', 8))
        r = dc.doveadm('lmdb', 'verify', user=USER, check=False)
        assert entry is not None, \
            'expunging uid 1 left uid 8 holding UIDL %s without its UIDL index entry (%r); ' \
            'verify says: %s' % (shared['pop3_uidl'].decode(), entry, r.stdout)
        assert r.returncode == 0 and r.stdout.strip() == 'mailbox\tuid\tbody\tproblem', r
        assert_clean_log(dc, stderr, ignore=r'(Warning: Mailbox (INBOX|Archive): lmdb: '
                                            r'Rebuilding index of \S+ from LMDB|1 messages '
                                            r'share their POP3 UIDL)')


def test_schema1_copy_moved_back_into_inbox():
    """The fixture's Archive uid 1 is a schema-1 COPY of INBOX uid 4: the
    same body, and the same UIDL (schema 1 gave a copy the original's).
    After the upgrade, moving it back into INBOX, where uid 4 still is,
    must not give INBOX two messages with one UIDL: uid 4 keeps the one
    its POP3 clients saw, the newcomer gets one of its own."""
    dc, _root, old = new_instance()
    want = expected(manifest(), schema1_messages(old))
    assert want[('Archive', 1)]['sha256'] == want[('INBOX', 4)]['sha256']
    assert want[('Archive', 1)]['pop3_uidl'] == want[('INBOX', 4)]['pop3_uidl']
    with dc:
        check_messages(dc, want)      # a POP3 client has seen INBOX's UIDLs
        seen = {u: want[('INBOX', u)]['pop3_uidl'] for b, u in want if b == 'INBOX'}
        imap = dc.imap()
        imap.select('Archive')
        typ, data = imap.uid('MOVE', '1', 'INBOX')
        assert typ == 'OK', data
        imap.select('INBOX', readonly=True)
        uids = sorted(harness.imap_fetch(imap, '1:*', '(UID)'))
        imap.logout()
        pop = dc.pop3()
        listing = [line.decode().split(' ', 1)[1] for line in pop.uidl()[1]]
        pop.quit()
        assert len(listing) == len(uids) == len(seen) + 1, (uids, listing)
        shown = dict(zip(uids, listing))
        new_uid = max(uids)
        dupes = sorted(u for u in set(listing) if listing.count(u) > 1)
        changed = {u: (seen[u], shown[u]) for u in seen if shown[u] != seen[u]}
        assert not dupes and not changed, \
            'INBOX after the MOVE: duplicate UIDLs %r, changed (uid: before, after) %r; ' \
            'the moved message (uid %d) shows %s' % (dupes, changed, new_uid, shown[new_uid])
        r = dc.doveadm('lmdb', 'verify', user=USER, check=False)
        assert r.returncode == 0 and r.stdout.strip() == 'mailbox\tuid\tbody\tproblem', r
        assert_clean_log(dc)


def test_schema1_message_guid_from_outside():
    """Schema 1 stored message GUIDs from outside unchecked (any byte but
    NUL). One with a control character comes through the upgrade readable,
    its GUID replaced by the digest a save gives such a GUID now (as a
    UIDL is), not as a damaged body."""
    dc, root, old = new_instance()
    inbox = [k for k, v in old[b'mailboxes'].items() if b'INBOX' in v][0]
    link = lmdbrec.decode_link(as_v2(old[b'links'][inbox + struct.pack('>I', 1)]))
    bkey = lmdbrec.body_key(link['body_id'])
    env = lmdbrec.open_env(root)
    try:
        f = v1(lmdbrec.get(env, b'bodies', bkey))
        # schema 1 body: ... the message GUID as str16 at offset 111
        n = struct.unpack('>H', f[111:113])[0]
        guid = b'imported\x7fguid'
        f = f[:111] + struct.pack('>H', len(guid)) + guid + f[113 + n:]
        lmdbrec.put(env, b'bodies', bkey, b'\x01' + f)
    finally:
        env.close()
    with dc:
        imap = dc.imap(USER)
        imap.select('INBOX')
        typ, data = imap.uid('FETCH', '1', '(BODY.PEEK[])')
        assert typ == 'OK' and data and isinstance(data[0], tuple), \
            'message unreadable after the upgrade: %r' % (data,)
        imap.logout()
        g = dc.doveadm('fetch', 'guid', 'mailbox', 'INBOX', 'uid', '1', user=USER)
        got = g.stdout.split('guid: ', 1)[1].strip()
        assert got and '\x7f' not in got and got != 'imported\x7fguid', got
        r = dc.doveadm('lmdb', 'verify', user=USER, check=False)
        assert r.returncode == 0, r
