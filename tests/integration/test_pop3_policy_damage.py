"""pop3_policy with one message of the maildrop damaged on disk (lmdb).

A message whose lmdb link or body record fails its checksum can't be
read, its GUID included. keep_days, the sweep, the quota purge and
dele=move skip that one message with a warning naming it and carry on
with the others; their audit lines are logged only for what was
committed (docs/pop3-policy.md, "Unreadable messages").  lmdbrec flips
one bit of the record, with Dovecot idle."""

import struct
import time

import harness
import lmdbrec
import policyrec
import test_pop3_policy as tp

USER = tp.USER


def deliver3(dc, tag):
    for i in range(3):
        r = dc.lmtp_deliver(USER, ('From: a@x\r\nSubject: %s%d\r\nMessage-ID: <%s%d@x>'
                                   '\r\n\r\nbody %d\r\n' % (tag, i, tag, i, i)).encode())
        assert r.all_ok(), r


def damage(dc, uid, what):
    """Flip one bit of the link ('links') or body ('bodies') record of
    INBOX UID uid."""
    env = lmdbrec.open_env(dc.mail_dir())
    try:
        guid = lmdbrec.mailbox_guid(env, 'INBOX')
        if what == 'links':
            lmdbrec.flip(env, b'links', lmdbrec.link_key(guid, uid), offset=-1)
        else:
            bid = lmdbrec.link_body_id(env, guid, uid)
            lmdbrec.flip(env, b'bodies', lmdbrec.body_key(bid), offset=-3)
    finally:
        env.close()


def skip_warnings(text, what, uid):
    return [l for l in text.splitlines()
            if 'pop3_policy: %s: skipping INBOX UID %d' % (what, uid) in l]


def last_sweep(dc) -> int:
    """meta/sweep of the user's policy environment: u64 time."""
    val = policyrec.get(tp.policy_env_path(dc), b'meta', b'sweep')
    assert val is not None, val
    fields = policyrec.unseal(policyrec.TYPE_SWEEP, b'sweep', val)
    assert len(fields) == 8, val
    return struct.unpack('>Q', fields)[0]


def test_keep_days_skips_unreadable_message():
    """keep_days removes the due messages although another due one can't
    be read (its link fails its checksum): that one is skipped and named
    in the log; only the committed removals are audited."""
    with tp.make_dc('lmdb', {'pop3_policy_keep_days': 7}) as dc:
        dc.start()
        deliver3(dc, 'k')
        p = dc.pop3(USER)
        for n in (1, 2, 3):
            p.retr(n)
        tp.pop3_quit_and_wait(dc, p)
        guid = {m: r['guid'] for m, r in tp.mailbox_msgs(dc).items()}
        damage(dc, 3, 'links')

        r = tp.doveadm_at(dc, '+8d', 'pop3-policy', 'run', user=USER, check=False)
        assert r.returncode == 0, 'run failed (exit %d): %s' % (r.returncode, r.stderr)
        ids = dc.message_ids(USER)
        assert ids == [(3, '<k2@x>')], 'keep_days left %r' % ids
        printed = [l for l in r.stdout.splitlines() if 'remove' in l]
        assert len(printed) == 2 and guid['<k2@x>'] not in r.stdout, r.stdout
        # doveadm logs to the log file or to its stderr
        log = dc.log() + '\n' + r.stderr
        logged = tp.keep_days_entries(log)
        assert sorted(e['guid'] for e in logged) == \
            sorted([guid['<k0@x>'], guid['<k1@x>']]), [e['line'] for e in logged]
        assert len(skip_warnings(log, 'keep_days', 3)) == 1, log
        # the removed ones are forgotten; the unreadable one may be due
        # and stays a candidate
        kept = tp.policy_keys(dc, 'msgs')
        assert guid['<k0@x>'] not in kept and guid['<k1@x>'] not in kept, kept
        assert guid['<k2@x>'] in kept, kept


def test_dele_move_skips_unreadable_message():
    """pop3_policy_dele = move:Trash: a DELEd message whose body record
    fails its checksum can't be moved and stays in INBOX; the other
    DELEs are applied, QUIT answers +OK, only the moves are audited."""
    settings = {'pop3_policy_dele': 'move:Trash', 'pop3_deleted_flag': tp.DELETED_FLAG}
    with tp.make_dc('lmdb', settings) as dc:
        dc.start()
        deliver3(dc, 'd')
        guid = {m: r['guid'] for m, r in tp.mailbox_msgs(dc).items()}
        damage(dc, 2, 'bodies')

        p = dc.pop3(USER)
        for n in (1, 2, 3):
            p.dele(n)
        reply = p.quit()
        assert reply.startswith(b'+OK'), reply
        ids = dc.message_ids(USER)
        assert ids == [(2, '<d1@x>')], 'INBOX left %r' % ids
        moved = sorted(m for _, m in dc.message_ids(USER, 'Trash'))
        assert moved == ['<d0@x>', '<d2@x>'], moved
        log = dc.log()
        errs = [l for l in log.splitlines()
                if 'Mailbox INBOX: UID 2: pop3_policy: dele=move: the message stays, '
                'moving it to Trash failed' in l]
        assert len(errs) == 1, log
        entries = tp.audit_entries(log)
        assert sorted((e['action'], e['guid']) for e in entries) == \
            sorted([('move', guid['<d0@x>']), ('move', guid['<d2@x>'])]), \
            [e['line'] for e in entries]

        # the next session still works: the damaged one is DELEd again
        p = dc.pop3(USER)
        assert p.stat()[0] == 1
        p.dele(1)
        reply = p.quit()
        assert reply.startswith(b'+OK'), reply
        assert dc.message_ids(USER) == [(2, '<d1@x>')]


def test_sweep_skips_unreadable_message():
    """A full sweep (doveadm pop3-policy run) with one message whose link
    fails its checksum finishes and records its time; it drops no record
    this time (the unreadable message may be any candidate), so the
    record of an IMAP-expunged message stays for a later sweep."""
    with tp.make_dc('lmdb', {'pop3_policy_keep_days': 7}) as dc:
        dc.start()
        deliver3(dc, 's')
        p = dc.pop3(USER)
        for n in (1, 2, 3):
            p.retr(n)
        tp.pop3_quit_and_wait(dc, p)
        guid = {m: r['guid'] for m, r in tp.mailbox_msgs(dc).items()}
        imap = dc.imap(USER)
        imap.select('INBOX')
        imap.uid('STORE', '1', '+FLAGS.SILENT', '(\\Deleted)')
        imap.expunge()
        imap.logout()
        damage(dc, 3, 'links')

        # +1d: nothing is due for keep_days yet; the sweep runs
        r = tp.doveadm_at(dc, '+1d', 'pop3-policy', 'run', user=USER, check=False)
        assert r.returncode == 0, 'run failed (exit %d): %s' % (r.returncode, r.stderr)
        assert last_sweep(dc) > time.time() + 12 * 3600, 'the sweep was not recorded'
        log = dc.log() + '\n' + r.stderr
        assert len(skip_warnings(log, 'sweep', 3)) == 1, log
        kept = tp.policy_keys(dc, 'msgs')
        assert {guid['<s0@x>'], guid['<s1@x>'], guid['<s2@x>']} <= kept, kept
        assert [m for _, m in dc.message_ids(USER)] == ['<s1@x>', '<s2@x>']


def test_quota_purge_skips_unreadable_message():
    """quota_purge frees space from the downloaded messages although one
    message of INBOX can't be read (its link fails its checksum)."""
    with tp.make_dc('lmdb', tp.QUOTA_SETTINGS, plugins=tp.quota_plugins(),
                    extra=tp.QEXTRA, faketime_pop3=True) as dc:
        tag = 'q'
        recs = tp.quota_fill(dc, USER, tag)
        # m5 was never downloaded: damaged, it is no victim either way
        damage(dc, int(recs[tp.mid(tag, 5)]['uid']), 'links')
        r = dc.lmtp_deliver([USER], tp.make_msg('n', 1, 30000))
        assert r.status == {USER: 250}, r
        now = {m for _, m in dc.message_ids(USER)}
        assert tp.mid(tag, 4) not in now and tp.mid('n', 1) in now, sorted(now)
        entries = tp.audit_entries(dc.log())
        assert [(e['action'], e['guid']) for e in entries] == \
            [('purge', recs[tp.mid(tag, 4)]['guid'])], [e['line'] for e in entries]
        assert len(skip_warnings(dc.log(), 'quota purge',
                                 int(recs[tp.mid(tag, 5)]['uid']))) == 1, dc.log()
