"""One user's mail moves between the 2.3 build and the 2.4 build (issue 12,
item 3: one on-disk schema for both Dovecot versions).

The host's Dovecot 2.3.19 (Debian bookworm) runs this tree's host build;
Dovecot 2.4.1 runs in the Debian trixie chroot of scripts/chroot with the
tree built there (scripts/run-tests makes it in builddir-trixie/src;
DLMDB_TRIXIE_BUILD_DIR names another).  In each direction the first
version builds an account over LMTP, IMAP and POP3 (folders, moves, flags
and keywords, APPENDed mail with old dates, POP3 UIDLs listed and saved),
is stopped, and the user's home (the LMDB environment and Dovecot's index
files under ~/lmdb) is moved to the other version's instance as it is, as
when a server is upgraded in place.  The second version must read the
same account: mailbox list, subscriptions, UIDVALIDITY/UIDNEXT/
HIGHESTMODSEQ/GUID of every mailbox, every message's UID, GUID, flags,
keywords, dates, sizes, POP3 UIDL and order and exact bytes, the POP3
UIDL listing; `doveadm lmdb verify` is clean.  It then changes the
account (deliveries, flags, an expunge, a move) and the first version,
given the home back, must read that state exactly, with verify clean.
Both directions: the environment created by 2.3 (test_23_to_24) and
by 2.4 (test_24_to_23).

The 2.4 side runs with dovecot_storage_version = 2.3.0: what an admin
sets while a server may still go back to 2.3 (2.4 then writes nothing
2.3 can't read; README, "From 2.3 to 2.4").

Runs where both are at hand: on a 2.3 host with the trixie chroot and the
trixie build (scripts/run-tests runs it after both legs); skipped with the
reason elsewhere (inside the chroot there is no 2.3).
"""

import os
import shutil

import harness
import test_migration as mig

USER = 'cv'
N_MESSAGES = 300
LAYOUT = [('Archive', 60), ('Lists/dovecot', 40), ('Projects/Alpha', 30), ('Trash', 20)]
SUBSCRIBE = ['INBOX', 'Archive', 'Lists/dovecot']
# mig.EXTRA: namespace with '/', pop3_save_uidl, keyword length
EXTRA = mig.EXTRA + ('lmtp_add_received_header = no\n'
                     'plugin {\n  lmdb_autopurge_interval = 0\n}\n')


def trixie_build() -> str:
    build = os.environ.get('DLMDB_TRIXIE_BUILD_DIR') or \
        os.path.join(harness.REPO_ROOT, 'builddir-trixie', 'src')
    if not os.path.exists(os.path.join(build, harness.LMDB_MODULE)):
        raise harness.Skip('no trixie build of the module at %s (scripts/run-tests makes '
                           'it; or set DLMDB_TRIXIE_BUILD_DIR)' % build)
    return build


def instance(version: str) -> harness.Dovecot:
    """A stopped lmdb instance of Dovecot 2.3 (host) or 2.4 (chroot) with
    the user."""
    if harness.DOVECOT_24 or not harness.DOVECOT_VERSION:
        raise harness.Skip('needs Dovecot 2.3 on the host (here: %s) and 2.4 in the '
                           'trixie chroot' % harness._version_str())
    if version == '2.3':
        dc = harness.Dovecot('lmdb', name='cv23', extra=EXTRA)
    else:
        dc = harness.Dovecot('lmdb', name='cv24', extra=EXTRA, chroot='trixie',
                             build=trixie_build(), storage_version='2.3.0')
        assert dc.is_24, dc.version
    dc.add_user(USER, 'pw')
    return dc


def hand_over(src: harness.Dovecot, dst: harness.Dovecot) -> None:
    """The user's home (mail, indexes) from src to dst, as it is on disk."""
    assert not src.running and not dst.running
    shutil.rmtree(dst.home(USER))
    os.rename(src.home(USER), dst.home(USER))


def snapshot(dc: harness.Dovecot) -> dict:
    """The account as dc's Dovecot reads it (mig.state()) plus the POP3
    UIDL listing; `doveadm lmdb verify` must be clean."""
    v = dc.doveadm('lmdb', 'verify', user=USER, check=False)
    assert v.returncode == 0 and v.stdout.split() in ([], ['mailbox', 'uid', 'body', 'problem']), \
        'Dovecot %s: doveadm lmdb verify exit %d\n%s\n%s' % (
            harness._version_str(dc.version), v.returncode, v.stdout, v.stderr)
    st = mig.state(dc, USER)
    st['pop3'] = mig.pop3_uidl_listing(dc, USER)
    assert len(st['mails']) > 0
    return st


def change(dc: harness.Dovecot) -> None:
    """What the second version does to the account."""
    msgs = [('From: x@example.com\r\nSubject: after %d\r\nMessage-ID: <after-%d@cv.test>\r\n'
             '\r\nwritten by Dovecot %s\r\n' % (i, i, harness._version_str(dc.version))).encode()
            for i in range(20)]
    assert all(r.all_ok() for r in dc.lmtp_deliver_many([USER], msgs))
    imap = dc.imap(USER, 'pw')
    for box, cmds in (('INBOX', [('STORE', '1:10', '+FLAGS.SILENT', '(\\Seen $Moved24)'),
                                 ('STORE', '11:15', '-FLAGS.SILENT', '(\\Seen \\Flagged)'),
                                 ('STORE', '16,17', '+FLAGS.SILENT', '(\\Deleted)'),
                                 ('MOVE', '20:25', 'Trash')]),
                      ('Archive', [('COPY', '1:5', 'INBOX')])):
        typ, data = imap.select(box)
        assert typ == 'OK', data
        for cmd in cmds:
            typ, data = imap.uid(*cmd)
            assert typ == 'OK', (box, cmd, data)
        if box == 'INBOX':
            typ, data = imap.expunge()
            assert typ == 'OK', data
    imap.logout()
    p = dc.pop3(USER, 'pw')
    p.uidl()
    p.retr(3)
    p.quit()


def roundtrip(first: str, second: str) -> None:
    a = instance(first)
    b = instance(second)
    with a:
        mig.build_source(a, USER, n=N_MESSAGES, layout=LAYOUT, subscribe=SUBSCRIBE)
        before = snapshot(a)
    hand_over(a, b)
    with b:
        read = snapshot(b)
        diffs = mig.diff_states(before, read)
        assert not diffs, 'Dovecot %s reads what %s wrote differently:\n%s' % (
            second, first, '\n'.join(diffs))
        assert read['pop3'] == before['pop3'], (before['pop3'][:5], read['pop3'][:5])
        change(b)
        after = snapshot(b)
        assert after['mails'] != read['mails']
    hand_over(b, a)
    with a:
        back = snapshot(a)
        diffs = mig.diff_states(after, back)
        assert not diffs, 'Dovecot %s reads what %s changed differently:\n%s' % (
            first, second, '\n'.join(diffs))
        assert back['pop3'] == after['pop3'], (after['pop3'][:5], back['pop3'][:5])
    for dc in (a, b):
        mig.assert_no_errors(dc)


def test_23_to_24():
    """An environment created by the 2.3 build, read and changed by 2.4,
    read back by 2.3."""
    roundtrip('2.3', '2.4')


def test_24_to_23():
    """An environment created by the 2.4 build, read and changed by 2.3,
    read back by 2.4."""
    roundtrip('2.4', '2.3')
