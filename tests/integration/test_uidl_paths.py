"""RFC 1939: a POP3 UIDL is unique in the maildrop and never changes
(issue "Trust", item 1k).

Every path that puts a message into INBOX, with pop3_uidl_format = %g and
with the default %08Xu%08Xv: LMTP, IMAP APPEND, COPY within INBOX, COPY
from another folder back into INBOX, MOVE out and back, MOVE within
INBOX, `doveadm lmdb
recover` after the INBOX's index was deleted, and a two-way `doveadm
sync` between two lmdb users that both got new mail under the same UIDs.
After each step a POP3 client lists the UIDLs of INBOX: no duplicates;
every UIDL it saw before for a message that still exists is unchanged
(a moved message, and a message dsync renumbered, keep theirs); a message
new to INBOX shows no UIDL a client saw before for another message; and
what POP3 shows is what LMDB stores.

The rules (docs/schema.md, `uidls`; lmdb-save.c): a save keeps a UIDL it
is given, else pop3_uidl_format computes one at commit; a MOVE and
dsync's copies keep the message's UIDL; any other COPY gets
"%08x%08x" of its new UID and UIDVALIDITY; a UIDL already held by another
message of the mailbox (another body) stays with it and the newcomer
gets "%08x%08x" of its own UID; a link to the same body under a new UID
takes it over.

Every step runs even after one failed, and the test fails at the end with
the list of every step that broke a rule.
"""

import collections
import os

import test_migration as mig

USERS = {'a': 'userdb_mail=lmdb:~/lmdb', 'b': 'userdb_mail=lmdb:~/lmdb'}


def message(tag: str) -> bytes:
    return ('From: sender@example.com\r\nTo: a@example.com\r\n'
            'Subject: uidl path %s\r\nMessage-ID: <%s@uidl.test>\r\n\r\n'
            'body of %s\r\n' % (tag, tag, tag)).encode()


class Maildrop:
    """What POP3 clients of one user's INBOX have seen, and the checks."""

    def __init__(self, dc, user, fmt, problems):
        self.dc, self.user, self.fmt, self.problems = dc, user, fmt, problems
        self.seen = {}         # uid -> UIDL last listed
        self.ever = {}         # UIDL -> Message-ID it was listed for
        self.msgid = {}        # uid -> Message-ID
        self.dupes = {}        # UIDL -> UIDs sharing it, at the last check

    def problem(self, step, text):
        self.problems.append('[%s %s] %s: %s' % (self.fmt, self.user, step, text))

    def uidvalidity(self) -> int:
        r = self.dc.doveadm('mailbox', 'status', 'uidvalidity', 'INBOX', user=self.user)
        return int(r.stdout.split('=', 1)[1])

    def uid_of(self, tag: str) -> int:
        uids = [u for u, m in self.msgid.items() if m == '<%s@uidl.test>' % tag]
        assert len(uids) == 1, (tag, self.msgid)
        return uids[0]

    def read(self):
        """[(uid, Message-ID, stored UIDL)] by UID, and the POP3 listing."""
        r = mig.doveadm(self.dc, 'fetch', 'uid hdr.message-id pop3.uidl', 'mailbox', 'INBOX',
                        'all', user=self.user)
        rows = []
        for block in r.stdout.split('\x0c'):
            rec = dict(line.split(': ', 1) if ': ' in line else (line.rstrip(':'), '')
                       for line in block.strip('\n').split('\n') if line)
            if rec:
                rows.append((int(rec['uid']), rec['hdr.message-id'].strip(),
                             rec.get('pop3.uidl', '')))
        rows.sort()
        return rows, mig.pop3_uidl_listing(self.dc, self.user)

    def check(self, step, carried=(), same=False):
        """carried: [(tag, UIDL)]: the message with that Message-ID, which
        came back or was renumbered, must show the UIDL it showed before.
        same: the listing must be exactly the one before."""
        rows, listing = self.read()
        if len(rows) != len(listing):
            self.problem(step, 'POP3 lists %d messages, INBOX has %d' % (len(listing), len(rows)))
            return
        cur = {uid: uidl for (uid, _m, _s), (_n, uidl) in zip(rows, listing)}
        msgid = {uid: m for uid, m, _s in rows}
        counts = collections.Counter(cur.values())
        dupes = {u: tuple(sorted(uid for uid, v in cur.items() if v == u))
                 for u, c in counts.items() if c > 1}
        # (a duplicate an earlier step made is reported there only)
        if set(dupes.items()) - set(self.dupes.items()):
            self.problem(step, 'duplicate UIDLs (UIDL: UIDs): %r' % dupes)
        self.dupes = dupes
        changed = [(uid, self.seen[uid], cur[uid]) for uid in cur
                   if uid in self.seen and cur[uid] != self.seen[uid]]
        if changed:
            self.problem(step, 'UIDLs changed (uid, before, after): %r' % changed)
        carried_uidls = set()
        for tag, uidl in carried:
            new = [u for u, m in msgid.items() if m == '<%s@uidl.test>' % tag]
            if len(new) != 1:
                self.problem(step, '%s: %d messages in INBOX' % (tag, len(new)))
                continue
            carried_uidls.add(cur[new[0]])
            if cur[new[0]] != uidl:
                self.problem(step, '%s (now uid %d) did not keep its UIDL: %s -> %s'
                             % (tag, new[0], uidl, cur[new[0]]))
        for uid in set(cur) - set(self.seen):
            other = self.ever.get(cur[uid])
            if cur[uid] not in carried_uidls and other is not None:
                self.problem(step, 'new uid %d (%s) shows UIDL %s, which a client saw '
                             'for %s' % (uid, msgid[uid], cur[uid], other))
        if same and cur != self.seen:
            self.problem(step, 'listing changed: %r -> %r' % (self.seen, cur))
        stored = [(uid, s, cur[uid]) for uid, _m, s in rows if s != cur[uid]]
        if stored:
            self.problem(step, 'stored UIDL != the one POP3 shows (uid, stored, shown): %r'
                         % stored)
        print('%s %s: %s' % (self.user, step,
                             ' '.join('%d=%s' % kv for kv in sorted(cur.items()))))
        self.seen, self.msgid = cur, msgid
        for uid, uidl in cur.items():
            self.ever.setdefault(uidl, msgid[uid])


def imap_ok(res, what):
    typ, data = res
    assert typ == 'OK', (what, data)
    return data


def uidl_paths(fmt: str):
    extra = mig.EXTRA + 'pop3_uidl_format = %s\nlmtp_add_received_header = no\n' % fmt
    dc = mig.new_instance(extra=extra, **USERS)
    problems = []
    with dc:
        a = Maildrop(dc, 'a', fmt, problems)
        for tag in ('A', 'B', 'C'):
            assert dc.lmtp_deliver(['a'], message(tag)).all_ok()
        a.check('LMTP')

        imap = dc.imap('a', 'pw')
        imap_ok(imap.append('INBOX', None, None, message('D')), 'APPEND')
        a.check('APPEND')
        uv = a.uidvalidity()

        imap_ok(imap.select('INBOX'), 'SELECT')
        uid_a = a.uid_of('A')
        imap_ok(imap.uid('COPY', str(uid_a), 'INBOX'), 'COPY within INBOX')
        new = max(a.read()[0])[0]
        a.check('UID COPY within INBOX')
        if a.seen.get(new) != '%08x%08x' % (new, uv):
            a.problem('UID COPY within INBOX', 'the copy (uid %d) shows %r, expected %08x%08x'
                      % (new, a.seen.get(new), new, uv))

        imap_ok(imap.create('Folder'), 'CREATE')
        imap_ok(imap.uid('COPY', str(a.uid_of('B')), 'Folder'), 'COPY to Folder')
        imap_ok(imap.select('Folder'), 'SELECT Folder')
        imap_ok(imap.uid('COPY', '1', 'INBOX'), 'COPY Folder -> INBOX')
        new = max(a.read()[0])[0]
        a.check('COPY from a folder into INBOX')
        if a.seen.get(new) != '%08x%08x' % (new, uv):
            a.problem('COPY from a folder into INBOX', 'the copy (uid %d) shows %r, expected '
                      '%08x%08x' % (new, a.seen.get(new), new, uv))

        imap_ok(imap.select('INBOX'), 'SELECT')
        uid_c = a.uid_of('C')
        uidl_c = a.seen[uid_c]
        imap_ok(imap.uid('MOVE', str(uid_c), 'Folder'), 'MOVE out')
        a.check('MOVE out of INBOX')
        imap_ok(imap.select('Folder'), 'SELECT Folder')
        imap_ok(imap.uid('MOVE', '2', 'INBOX'), 'MOVE back')
        a.check('MOVE back into INBOX', carried=[('C', uidl_c)])
        # RFC 6851 allows a MOVE into the same mailbox: a new UID, the
        # same body, the old UID expunged after the new link took the UIDL
        imap_ok(imap.select('INBOX'), 'SELECT')
        uid_d = a.uid_of('D')
        uidl_d = a.seen[uid_d]
        imap_ok(imap.uid('MOVE', str(uid_d), 'INBOX'), 'MOVE within INBOX')
        a.check('MOVE within INBOX', carried=[('D', uidl_d)])
        if a.uid_of('D') == uid_d:
            a.problem('MOVE within INBOX', 'D kept its UID %d' % uid_d)
        imap.logout()

        # the INBOX's index is lost: recovered from LMDB, same UIDs and UIDLs
        dc.stop()
        inbox = dc.home('a') + '/lmdb/mailboxes/INBOX/lmdb-Mails'
        deleted = [f for f in os.listdir(inbox) if f.startswith('dovecot.index')]
        assert deleted, inbox
        for f in deleted:
            os.unlink(os.path.join(inbox, f))
        dc.start()
        r = dc.doveadm('lmdb', 'recover', user='a', check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        a.check('lmdb recover after the INBOX index was deleted', same=True)

        # two lmdb users in sync, then both get new mail under the same UIDs
        b = Maildrop(dc, 'b', fmt, problems)
        opts = ('-o', 'pop3_uidl_format=' + fmt)
        mig.dsync(dc, 'sync', 'a', ('b', 'lmdb'), opts=opts)
        b.check('first doveadm sync')
        if b.seen != a.seen:
            b.problem('first doveadm sync', 'listing differs from a: %r' % a.seen)
        # a copy within INBOX on one side: dsync makes it on the other by
        # copying the local message of the same GUID (same body) with the
        # original's UIDL, while the original stays
        imap = dc.imap('a', 'pw')
        imap_ok(imap.select('INBOX'), 'SELECT')
        imap_ok(imap.uid('COPY', str(a.uid_of('D')), 'INBOX'), 'COPY within INBOX')
        imap.logout()
        a.check('UID COPY within INBOX after the first sync')
        mig.dsync(dc, 'sync', 'a', ('b', 'lmdb'), opts=opts)
        a.check('doveadm sync of a copy', same=True)
        b.check('doveadm sync of a copy')
        if b.seen != a.seen:
            b.problem('doveadm sync of a copy', 'listing differs from a: %r' % a.seen)
        assert dc.lmtp_deliver(['a'], message('X')).all_ok()
        assert dc.lmtp_deliver(['b'], message('Y')).all_ok()
        a.check('LMTP X')
        b.check('LMTP Y')
        uid_x, uid_y = a.uid_of('X'), b.uid_of('Y')
        assert uid_x == uid_y, (uid_x, uid_y)     # the conflict
        mig.dsync(dc, 'sync', 'a', ('b', 'lmdb'), opts=opts)
        a.check('doveadm sync with a UID conflict', carried=[('X', a.seen[uid_x])])
        b.check('doveadm sync with a UID conflict', carried=[('Y', b.seen[uid_y])])
        mig.dsync(dc, 'sync', 'a', ('b', 'lmdb'), opts=opts)
        a.check('second doveadm sync', same=True)
        b.check('second doveadm sync', same=True)

        for user in ('a', 'b'):
            r = dc.doveadm('lmdb', 'verify', user=user, check=False)
            if r.returncode != 0:
                problems.append('verify %s: %s%s' % (user, r.stdout, r.stderr))
        errors = dc.log_errors(include_warnings=True)
        if errors:
            problems.append('log: %s' % '\n'.join(errors[:20]))
    assert not problems, '%d problems:\n  %s' % (len(problems), '\n  '.join(problems))


def test_uidl_paths_guid_format():
    """pop3_uidl_format = %g (the README's recommendation)."""
    uidl_paths('%g')


def test_uidl_paths_default_format():
    """pop3_uidl_format = %08Xu%08Xv (Dovecot's default)."""
    uidl_paths('%08Xu%08Xv')
