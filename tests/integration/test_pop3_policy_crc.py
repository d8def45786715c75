"""pop3_policy with a damaged record in its own environment
(dovecot-pop3-policy.mdb): every value carries a CRC over its type, key
and fields (docs/pop3-policy.md, "Records"), and a record that fails it
is reported and never served (docs/pop3-policy.md, "Damaged records").

One byte of a message record is changed on disk (python3-lmdb, with
Dovecot idle): its frozen UIDL, or its first-download time.  Before the
CRC a changed UIDL character that stayed printable was served as the
message's UIDL (a POP3 client downloads it again, or skips another one
given that UIDL), and a record and index entry both damaged to an
earlier download time made keep_days delete the message early.

The helpers read the version byte, so that the same test runs against a
module of schema 2 (version-1 values, no CRC): that is how it was shown
to fail without the CRC."""

import contextlib
import glob
import hashlib
import os
import poplib
import struct

import harness
import policyrec
import test_pop3_policy as tp

USER = tp.USER


def header(value: bytes) -> int:
    """The bytes before the fields: version and CRC (version 2), or the
    version alone (version 1, schema 2 and older)."""
    return policyrec.HEADER if value[0] == policyrec.VERSION else 1


def flip_msg(dc, guid: str, field: str, byte: int = 0, mask: int = 0x01) -> None:
    """Change one byte of a field of the "msgs" record of guid."""
    path = tp.policy_env_path(dc)
    value = policyrec.get(path, b'msgs', guid.encode())
    assert value is not None, 'no msgs record for %s' % guid
    # fields: u8 flags, u64 first download, u16 + UIDL, u16 + GUID
    off = header(value) + (1 if field == 'first_download' else 1 + 8 + 2) + byte
    policyrec.flip(path, b'msgs', guid.encode(), off, mask)


def msg_first_download(dc, guid: str) -> int:
    value = policyrec.get(tp.policy_env_path(dc), b'msgs', guid.encode())
    h = header(value)
    return struct.unpack('>Q', value[h + 1:h + 9])[0]


def move_download_entry(dc, guid: str, old: int, new: int) -> None:
    """Move the "downloads" index entry of guid from time old to new,
    its value as it was: a damaged key."""
    path = tp.policy_env_path(dc)
    env = policyrec.open_env(path)
    try:
        db = env.open_db(b'downloads', create=False)
        with env.begin(db=db, write=True) as txn:
            old_key = struct.pack('>Q', old) + guid.encode()
            value = txn.get(old_key)
            assert value is not None, 'no downloads entry %r' % old_key
            value = bytes(value)
            txn.delete(old_key)
            txn.put(struct.pack('>Q', new) + guid.encode(), value)
    finally:
        env.close()


def damage_lines(text: str, guid: str) -> list[str]:
    """Log lines naming the damaged message record of guid"""
    return [l for l in text.splitlines()
            if 'pop3_policy: ' in l and 'damaged message record' in l and guid in l
            and 'checksum mismatch' in l]


@harness.drivers('maildir')
def test_damaged_msgs_record_keeps_uidl(driver):
    """A flipped bit in the frozen UIDL of a message record: the next POP3
    session shows the same UIDL as before (taken from the reservation
    that names the message's GUID), a warning names the damaged record,
    and the record is written again at the session's end."""
    with tp.make_dc(driver) as dc:
        tp.deliver(dc, [tp.make_msg('cu', i) for i in range(3)])
        before = tp.pop3_view(dc)
        guid = {m: r['guid'] for m, r in tp.mailbox_msgs(dc).items()}
        g1 = guid[tp.mid('cu', 1)]
        # its first character: '0'..'9', 'A'..'F' (%08Xu%08Xv) stay
        # printable with bit 0 flipped, and no other message's UIDL
        # starts with '1'
        flip_msg(dc, g1, 'uidl', byte=0, mask=0x01)

        after = tp.pop3_view(dc)
        assert after == before, 'a damaged record changed the UIDLs: %r -> %r' % (
            before, after)
        log = dc.wait_log('(written again)')
        lines = damage_lines(log, g1)
        assert any('UIDL %s recovered from its reservation' % before[tp.mid('cu', 1)] in l
                   for l in lines), log
        assert any('(written again)' in l for l in lines), log
        # written again: it decodes, with the UIDL shown
        path = tp.policy_env_path(dc)
        rec = policyrec.decode_msg(g1.encode(), policyrec.get(path, b'msgs', g1.encode()))
        assert rec['uidl'] == before[tp.mid('cu', 1)], rec
        assert tp.policy_uidl(dc)[g1] == before[tp.mid('cu', 1)]
        # and the next session has nothing more to say about it
        n = len(damage_lines(dc.log(), g1))
        assert tp.pop3_view(dc) == before
        assert len(damage_lines(dc.log(), g1)) == n


@harness.drivers('maildir')
def test_damaged_msgs_record_not_deleted_early(driver):
    """keep_days never deletes on the word of a damaged record.  All three
    messages downloaded now, keep_days = 7; then (Dovecot idle):
    - cd1: its record's first-download time and its index entry both
      moved ~34 years back (two damaged records that agree);
    - cd2: its record's first-download time changed, its index entry
      intact.
    A day later keep_days removes nothing (cd1 is not due by its real
    time); eight days later it removes cd0 only.  Each damaged record is
    named in the log; cd1 and cd2 stay, also on the next pass."""
    with tp.make_dc(driver, {'pop3_policy_keep_days': 7}) as dc:
        tp.deliver(dc, [tp.make_msg('cd', i) for i in range(3)])
        p = dc.pop3(USER)
        for n in (1, 2, 3):
            p.retr(n)
        tp.pop3_quit_and_wait(dc, p)
        guid = {m: r['guid'] for m, r in tp.mailbox_msgs(dc).items()}
        g0, g1, g2 = (guid[tp.mid('cd', i)] for i in range(3))
        t1 = msg_first_download(dc, g1)
        assert t1 > 1700000000, t1
        # bit 30 of the time: 0x69.. -> 0x29..
        flip_msg(dc, g1, 'first_download', byte=4, mask=0x40)
        early = msg_first_download(dc, g1)
        assert early == t1 ^ (0x40 << 24), (t1, early)
        move_download_entry(dc, g1, t1, early)
        flip_msg(dc, g2, 'first_download', byte=4, mask=0x40)

        r = tp.doveadm_at(dc, '+1d', 'pop3-policy', 'run', user=USER, check=False)
        assert r.returncode == 0, 'run failed (exit %d): %s' % (r.returncode, r.stderr)
        left = sorted(m for _, m in dc.message_ids(USER))
        assert left == [tp.mid('cd', i) for i in range(3)], \
            'keep_days deleted a message on the word of a damaged record: %r' % left
        log = dc.log() + '\n' + r.stderr
        assert [l for l in log.splitlines() if 'damaged downloads index entry' in l
                and g1 in l and 'checksum mismatch' in l], log

        r = tp.doveadm_at(dc, '+8d', 'pop3-policy', 'run', user=USER, check=False)
        assert r.returncode == 0, 'run failed (exit %d): %s' % (r.returncode, r.stderr)
        left = sorted(m for _, m in dc.message_ids(USER))
        assert left == [tp.mid('cd', 1), tp.mid('cd', 2)], left
        log = dc.log() + '\n' + r.stderr
        assert damage_lines(log, g2), log
        assert [e['guid'] for e in tp.keep_days_entries(log)] == [g0], log

        r = tp.doveadm_at(dc, '+9d', 'pop3-policy', 'run', user=USER, check=False)
        assert r.returncode == 0, 'run failed (exit %d): %s' % (r.returncode, r.stderr)
        assert sorted(m for _, m in dc.message_ids(USER)) == left
        assert len(damage_lines(dc.log() + '\n' + r.stderr, g2)) >= 1

        # doveadm pop3-policy show lists the damaged ones as such, and
        # names them in the log
        r = dc.doveadm('pop3-policy', 'show', user=USER)
        shown = {row['guid']: row for row in
                 tp.parse_table(r.stdout, ['guid', 'uidl', 'downloaded', 'hidden'])}
        assert shown[g1]['downloaded'] == 'damaged', shown
        assert shown[g2]['downloaded'] == 'damaged', shown
        assert damage_lines(dc.log() + '\n' + r.stderr, g1), dc.log() + r.stderr


def downgrade_to_schema2(path: str) -> int:
    """Rewrite a schema-3 environment as a module of schema 2 wrote it:
    every value version 1 (the version byte 1, no CRC, the same fields),
    the schema record saying 2.  Returns the number of values."""
    env = policyrec.open_env(path)
    count = 0
    try:
        with env.begin(write=True) as txn:
            for name in (b'meta', b'msgs', b'uidls', b'downloads'):
                db = env.open_db(name, txn=txn, create=False)
                items = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=db)]
                for k, v in items:
                    assert v[0] == policyrec.VERSION, (name, k, v)
                    fields = v[policyrec.HEADER:]
                    if name == b'meta' and k == b'schema':
                        fields = struct.pack('>I', 2) + fields[4:]
                    txn.put(k, b'\x01' + fields, db=db)
                    count += 1
    finally:
        env.close()
    return count


def check_all_sealed(path: str) -> int:
    """Every value of every DBI is version 2 with a CRC that holds."""
    types = {b'msgs': policyrec.TYPE_MSG, b'uidls': policyrec.TYPE_UIDL,
             b'downloads': policyrec.TYPE_DOWNLOAD}
    meta_types = {b'schema': policyrec.TYPE_SCHEMA, b'sweep': policyrec.TYPE_SWEEP,
                  b'deleted-flag': policyrec.TYPE_FLAG}
    env = policyrec.open_env(path, readonly=True)
    count = 0
    try:
        with env.begin() as txn:
            for name in (b'meta', b'msgs', b'uidls', b'downloads'):
                db = env.open_db(name, txn=txn, create=False)
                for k, v in txn.cursor(db=db):
                    k, v = bytes(k), bytes(v)
                    rtype = meta_types[k] if name == b'meta' else types[name]
                    fields = policyrec.unseal(rtype, k, v)
                    if k == b'schema':
                        assert struct.unpack('>I', fields[:4])[0] == 3, fields
                    count += 1
    finally:
        env.close()
    return count


@harness.drivers('maildir')
def test_schema2_environment_converted_on_open(driver):
    """An environment of schema 2 (version-1 values: rewritten here from a
    real one, byte for byte as the module of schema 2 wrote them) is
    converted when a process opens it: every value is version 2 with a
    CRC that holds, one log line says so, and the POP3 client sees the
    same UIDLs, the same download time is kept."""
    with tp.make_dc(driver, {'pop3_policy_keep_days': 7}) as dc:
        tp.deliver(dc, [tp.make_msg('cv', i) for i in range(3)])
        before = tp.pop3_view(dc)
        p = dc.pop3(USER)
        p.retr(2)
        tp.pop3_quit_and_wait(dc, p)
        shown = tp.policy_show(dc)
        path = tp.policy_env_path(dc)
        dc.stop()
        values = downgrade_to_schema2(path)
        # schema, sweep, 3 msgs, 3 uidls, 1 downloads entry at least
        assert values >= 8, values
        dc.start()

        assert tp.pop3_view(dc) == before
        log = dc.wait_log('converted from schema 2 to 3')
        assert len([l for l in log.splitlines()
                    if 'pop3_policy: ' in l and 'converted from schema 2 to 3' in l]) == 1, log
        assert 'left as they were' not in log, log
        assert check_all_sealed(path) >= values
        assert tp.policy_show(dc) == shown


# -------------------------------------------------------------------------
# Review 4: a UIDL the plugin can't give, damaged reservations, a damaged
# deleted-flag record

FALLBACK_PREFIX = '~pop3-policy-unfrozen~'


def reserve(path: str, uidls: list[str], guid: str) -> None:
    """Write UIDL reservations of uidls for guid (with Dovecot stopped)."""
    env = policyrec.open_env(path)
    try:
        with env.begin(write=True) as txn:
            db = env.open_db(b'uidls', txn=txn, create=False)
            g = guid.encode()
            for u in uidls:
                txn.put(u.encode(), policyrec.seal(
                    policyrec.TYPE_UIDL, u.encode(), struct.pack('>H', len(g)) + g), db=db)
    finally:
        env.close()


def delete_msg_record(path: str, guid: str) -> None:
    env = policyrec.open_env(path)
    try:
        with env.begin(write=True) as txn:
            db = env.open_db(b'msgs', txn=txn, create=False)
            assert txn.delete(guid.encode(), db=db), 'no msgs record for %s' % guid
    finally:
        env.close()


def reset_uids(dc, pfx: str) -> tuple[dict, dict]:
    """Three messages seen over POP3, all expunged, then the maildir's
    UIDs start again at 1 under the same UIDVALIDITY (the case of
    test_uidl_not_reused_after_uid_reset): the new messages' format UIDLs
    are those of the expunged ones, all reserved.  This part: the three
    seen and expunged; returns their view and the UIDVALIDITY, with dc
    stopped."""
    tp.deliver(dc, [tp.make_msg(pfx, i) for i in range(3)])
    old_uv = tp.uidvalidity(dc)
    first = tp.pop3_view(dc)
    c = dc.pop3()
    for n in range(1, 4):
        c.dele(n)
    tp.pop3_quit_and_wait(dc, c)
    dc.stop()
    return first, old_uv


def forget_uids(dc) -> None:
    """Drop the maildir's UID list and indexes (Dovecot stopped), start."""
    os.unlink(os.path.join(dc.mail_dir(), 'dovecot-uidlist'))
    for f in os.listdir(dc.mail_dir()):
        if f.startswith('dovecot.index') or f.startswith('dovecot.list.index'):
            os.unlink(os.path.join(dc.mail_dir(), f))
    dc.start()


@harness.drivers('maildir')
def test_unopenable_environment_refuses_pop3(driver):
    """The environment can't be opened (one byte of its schema record
    changed): the POP3 session is refused with -ERR [SYS/TEMP] and a log
    line, rather than served with Dovecot's own pop3_uidl_format UIDLs,
    which after a UID reset are the reserved UIDLs of expunged messages
    (a client skips the new ones)."""
    with tp.make_dc(driver) as dc:
        first, old_uv = reset_uids(dc, 'ro')
        forget_uids(dc)
        tp.deliver(dc, [tp.make_msg('ro2', i) for i in range(3)])
        dc.doveadm('mailbox', 'update', '--uid-validity', old_uv, 'INBOX', user=USER)
        second = tp.pop3_view(dc)
        assert not set(first.values()) & set(second.values()), (first, second)
        dc.stop()
        policyrec.flip(tp.policy_env_path(dc), b'meta', b'schema', 7)
        dc.start()
        c = dc.pop3()
        try:
            # the refusal comes after +OK to PASS: INBOX opens then
            third = tp.pop3_uidls(c)
        except poplib.error_proto as e:
            assert 'SYS/TEMP' in str(e), e
        else:
            reused = set(first.values()) & set(third.values())
            raise AssertionError('POP3 session not refused; UIDLs %r (reused: %r)'
                                 % (third, reused))
        log = dc.wait_log('POP3 session refused')
        assert [l for l in log.splitlines() if 'pop3_policy: POP3 session refused' in l
                and 'corrupted schema record' in l], log


@harness.drivers('maildir')
def test_unfreezable_uidl_never_format_fallback(driver):
    """The freeze of a message's UIDL fails in a session whose
    environment opened: its format UIDL and every alternative of it are
    reserved for another GUID (10,000 of them: "No free UIDL derived
    from ...").  The plugin shows its fallback UIDL (fixed prefix, SHA1 of
    the GUID), the same in the next session, and logs it; never the format
    UIDL, which Dovecot would show if the plugin failed, and which is
    another message's."""
    with tp.make_dc(driver) as dc:
        tp.deliver(dc, [tp.make_msg('uf', i) for i in range(2)])
        before = tp.pop3_view(dc)
        guid = {m: r['guid'] for m, r in tp.mailbox_msgs(dc).items()}
        g0 = guid[tp.mid('uf', 0)]
        u0 = before[tp.mid('uf', 0)]
        path = tp.policy_env_path(dc)
        dc.stop()
        delete_msg_record(path, g0)
        reserve(path, [u0] + ['%s-%d' % (u0, n) for n in range(1, 10000)],
                'someone-else-guid')
        dc.start()
        want = FALLBACK_PREFIX + hashlib.sha1(g0.encode()).hexdigest()
        for _ in range(2):
            view = tp.pop3_view(dc)
            assert view[tp.mid('uf', 0)] == want, \
                'UIDL of a message that cannot be frozen: %r (reserved for another ' \
                'GUID: %s)' % (view, u0)
            assert view[tp.mid('uf', 1)] == before[tp.mid('uf', 1)], (before, view)
        log = dc.wait_log("UIDL can't be frozen: shown as")
        assert [l for l in log.splitlines() if 'No free UIDL derived from %s' % u0 in l], log
        assert [l for l in log.splitlines()
                if 'UIDL can\'t be frozen: shown as %s' % want in l], log


def flip_reservation(path: str, uidl: str) -> None:
    """Change one byte of the GUID field of the reservation of uidl."""
    value = policyrec.get(path, b'uidls', uidl.encode())
    assert value is not None, 'no reservation of %s' % uidl
    policyrec.flip(path, b'uidls', uidl.encode(), header(value) + 2)


@harness.drivers('maildir')
def test_damaged_reservation_counts_as_taken(driver):
    """The reservation of an expunged message's UIDL X is damaged, then
    the maildir's UIDs start again under the same UIDVALIDITY: the new
    message whose format UIDL is X gets another UIDL (a warning names the
    damaged reservation), never X, which a client remembers."""
    with tp.make_dc(driver) as dc:
        first, old_uv = reset_uids(dc, 'rr')
        u0 = first[tp.mid('rr', 0)]
        flip_reservation(tp.policy_env_path(dc), u0)
        forget_uids(dc)
        tp.deliver(dc, [tp.make_msg('rr2', i) for i in range(3)])
        dc.doveadm('mailbox', 'update', '--uid-validity', old_uv, 'INBOX', user=USER)
        second = tp.pop3_view(dc)
        reused = set(first.values()) & set(second.values())
        assert not reused, 'UIDLs reused: %r (before %r, now %r)' % (reused, first, second)
        assert tp.pop3_view(dc) == second
        log = dc.wait_log('checksum mismatch: taken, not given to GUID')
        assert [l for l in log.splitlines() if 'damaged UIDL record %s' % u0 in l
                and 'checksum mismatch: taken, not given to GUID' in l], log
        assert not [l for l in log.splitlines() if "UIDL can't be frozen" in l], log


@harness.drivers('lmdb')
def test_damaged_reservation_flush_writes_the_rest(driver):
    """lmdb (backend UIDLs): freeze-uidl after the record of lr0 and its
    reservation are both damaged, and lr1 has arrived: the flush writes
    lr1's reservation and lr0's again (a warning), rather than failing
    the whole write at lr0's damaged reservation."""
    with tp.make_dc(driver) as dc:
        tp.deliver(dc, [tp.make_msg('lr', 0)])
        r = dc.doveadm('pop3-policy', 'freeze-uidl', user=USER)
        assert r.stdout.strip() == 'frozen\t1', r.stdout
        tp.deliver(dc, [tp.make_msg('lr', 1)])
        guid = {m: r['guid'] for m, r in tp.mailbox_msgs(dc).items()}
        g0, g1 = guid[tp.mid('lr', 0)], guid[tp.mid('lr', 1)]
        u0 = tp.policy_uidl(dc)[g0]
        path = tp.policy_env_path(dc)
        flip_msg(dc, g0, 'uidl', byte=0, mask=0x01)
        flip_reservation(path, u0)
        u1 = tp.pop3_view(dc)[tp.mid('lr', 1)]
        assert policyrec.get(path, b'uidls', u1.encode()) is None
        r = dc.doveadm('pop3-policy', 'freeze-uidl', user=USER, check=False)
        log = dc.log() + '\n' + r.stderr
        assert r.returncode == 0, 'freeze-uidl failed (exit %d): %s' % (r.returncode, log)
        assert 'Failed to save POP3 state' not in log, log
        # lr1 reserved and recorded, lr0's both written again: all decode
        v = policyrec.get(path, b'uidls', u1.encode())
        assert v is not None, 'the flush wrote nothing for lr1\n' + log
        assert policyrec.unseal(policyrec.TYPE_UIDL, u1.encode(), v)[2:] == g1.encode()
        assert policyrec.decode_msg(g1.encode(), policyrec.get(path, b'msgs', g1.encode()))
        v = policyrec.get(path, b'uidls', u0.encode())
        assert policyrec.unseal(policyrec.TYPE_UIDL, u0.encode(), v)[2:] == g0.encode()
        policyrec.decode_msg(g0.encode(), policyrec.get(path, b'msgs', g0.encode()))
        assert [l for l in log.splitlines() if 'damaged UIDL record %s' % u0 in l
                and '(written again for GUID %s)' % g0 in l], log


def flag_record_intact(path: str) -> str | None:
    """The keyword of the deleted-flag record, None if it is damaged."""
    v = policyrec.get(path, b'meta', b'deleted-flag')
    try:
        f = policyrec.unseal(policyrec.TYPE_FLAG, b'deleted-flag', v)
    except AssertionError:
        return None
    n = struct.unpack('>H', f[:2])[0]
    return f[2:2 + n].decode()


@contextlib.contextmanager
def unhidden_undownloaded_q1(driver):
    """A running instance with quota purge and pop3_deleted_flag only in
    protocol pop3 {} (LMTP doesn't know it): six messages, q1 hidden by a
    keep DELE without RETR, then its keyword removed by doveadm, so q1 is
    neither hidden nor downloaded and the quota purge must never take it."""
    settings = dict(tp.QUOTA_SETTINGS, pop3_policy_dele='keep')
    extra = tp.QEXTRA + 'protocol pop3 {\n  pop3_deleted_flag = "%s"\n}\n' % tp.DELETED_FLAG
    with tp.make_dc(driver, settings, plugins=tp.quota_plugins(), extra=extra) as dc:
        tp.deliver(dc, [tp.make_msg('q', i, 30000) for i in range(6)])
        c = dc.pop3()
        ids = {m: n for n, m in tp.pop3_msgids(c).items()}
        c.dele(ids[tp.mid('q', 1)])
        tp.pop3_quit_and_wait(dc, c)
        uid = tp.mailbox_msgs(dc)[tp.mid('q', 1)]['uid']
        dc.doveadm('flags', 'remove', tp.DELETED_FLAG, 'mailbox', 'INBOX', 'uid', uid,
                   user=USER)
        yield dc


@harness.drivers('maildir')
def test_absent_flag_record_purges_downloaded_only(driver):
    """The same with the deleted-flag record gone (a damaged key makes it
    look absent; a failed write at login leaves none): hidden bits without
    it are not trusted either (review 5). It used to purge q1."""
    with unhidden_undownloaded_q1(driver) as dc:
        path = tp.policy_env_path(dc)
        env = policyrec.open_env(path)
        with env.begin(write=True) as txn:
            assert txn.delete(b'deleted-flag', db=env.open_db(b'meta', txn=txn))
        env.close()
        r = dc.lmtp_deliver([USER], tp.make_msg('n', 2, 30000))
        assert tp.mid('q', 1) in tp.mailbox_msgs(dc), \
            'never-downloaded, un-hidden q1 purged without a deleted-flag record\n' + dc.log()
        assert r.status == {USER: 552}, r


@harness.drivers('maildir')
def test_damaged_flag_record_purges_downloaded_only(driver):
    """pop3_deleted_flag in protocol pop3 {} (LMTP doesn't know it): a
    keep DELE without RETR hides q1, then doveadm removes the keyword, so
    q1 is neither hidden nor downloaded and the quota purge must never
    take it.  With the deleted-flag record damaged, LMTP's purge doesn't
    fall back to the record's hidden bit (nothing to purge: 552, q1
    kept), and the next POP3 session writes the record again."""
    with unhidden_undownloaded_q1(driver) as dc:
        assert tp.DELETED_FLAG not in tp.mailbox_msgs(dc)[tp.mid('q', 1)]['flags']
        # control: the record intact, nothing to purge
        r = dc.lmtp_deliver([USER], tp.make_msg('n', 1, 30000))
        assert r.status == {USER: 552}, r
        path = tp.policy_env_path(dc)
        assert flag_record_intact(path) == tp.DELETED_FLAG

        policyrec.flip(path, b'meta', b'deleted-flag', 6)
        assert flag_record_intact(path) is None
        r = dc.lmtp_deliver([USER], tp.make_msg('n', 2, 30000))
        assert tp.mid('q', 1) in tp.mailbox_msgs(dc), \
            'never-downloaded, un-hidden q1 purged on the damaged flag record\n' + dc.log()
        assert r.status == {USER: 552}, r
        # (the log process may write the line after LMTP's reply)
        log = dc.wait_log('damaged deleted-flag record', 'only downloaded messages are purged')
        assert [l for l in log.splitlines() if 'damaged deleted-flag record' in l
                and 'only downloaded messages are purged' in l], log

        tp.pop3_view(dc)
        assert flag_record_intact(path) == tp.DELETED_FLAG, \
            'a POP3 session left the deleted-flag record damaged'
        log = dc.wait_log('damaged deleted-flag record', '(written again)')
        assert [l for l in log.splitlines() if 'damaged deleted-flag record' in l
                and '(written again)' in l], log
        r = dc.lmtp_deliver([USER], tp.make_msg('n', 3, 30000))
        assert r.status == {USER: 552}, r
        assert tp.mid('q', 1) in tp.mailbox_msgs(dc)


@harness.drivers('maildir')
def test_overlong_deleted_flag_refused(driver):
    """A pop3_deleted_flag longer than the deleted-flag record's decoder
    takes (1024) is refused when the plugin checks the settings, with an
    error naming it: never written as a record that always reads as
    damaged."""
    flag = '$' + 'L' * 1100
    settings = {'pop3_policy_dele': 'keep'}
    extra = 'protocol pop3 {\n  pop3_deleted_flag = "%s"\n}\n' % flag
    with tp.make_dc(driver, settings, extra=extra) as dc:
        tp.deliver(dc, [tp.make_msg('ol', 0)])
        try:
            c = dc.pop3()
            c.stat()
            c.quit()
            pop3 = None
        except (poplib.error_proto, OSError, EOFError) as e:
            pop3 = str(e)
        paths = glob.glob(os.path.join(dc.home(USER), '**', 'dovecot-pop3-policy.mdb'),
                          recursive=True)
        written = paths and policyrec.get(paths[0], b'meta', b'deleted-flag')
        assert pop3 is not None, 'POP3 session worked; deleted-flag record: %r' % (
            written[:40] if written else written)
        assert not written, written[:40]
        log = dc.wait_log('pop3_deleted_flag is 1101 characters long')
        assert [l for l in log.splitlines()
                if 'pop3_policy: pop3_deleted_flag is 1101 characters long, the most is 1024'
                in l], log
