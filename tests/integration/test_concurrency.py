"""Concurrency: several LMTP deliveries at once to one user while IMAP
sessions read and set flags and a POP3 session reads and deletes.

    4 writer threads, each with its own LMTP connection, deliver
      N_PER_WRITER messages each (every message has a unique Message-ID);
    2 IMAP readers loop SELECT / FETCH 1:* (UID FLAGS RFC822.SIZE
      BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]) / STORE +FLAGS \\Seen on
      random messages;
    1 POP3 poller loops STAT / UIDL / TOP (for new UIDLs) / RETR of a few /
      DELE of the messages in the "to delete" set / QUIT.

Afterwards: no message lost or doubled, the deleted ones are gone, UIDs
are unique and increase in each writer's delivery order, one UID always
meant one Message-ID to every observer, nothing hung, the log is clean,
and (lmdb) `doveadm lmdb verify` exits 0.

N_PER_WRITER is 500 (4 x 500 = 2000 messages): that runs in well under
two minutes on 2 cores.  DLMDB_CONC_N=n overrides it (e.g. a quick
smoke run); DLMDB_HEAVY=1 forces 500 whatever DLMDB_CONC_N says.
maildir runs as the control.
"""

import os
import random
import re
import threading
import time
import imaplib
import poplib

import harness
from harness import LmtpClient, pop3_multiline

N_WRITERS = 4
N_PER_WRITER = 500
if os.environ.get('DLMDB_CONC_N'):
    N_PER_WRITER = int(os.environ['DLMDB_CONC_N'])
if os.environ.get('DLMDB_HEAVY') == '1':
    N_PER_WRITER = 500
N_IMAP_READERS = 2
DELETE_EVERY = 5          # message k of a writer is "to delete" if k % 5 == 2
# seconds for all deliveries (a hang beyond = deadlock), and for the
# readers / poller to wind down; longer when instrumented (ASan: the 2,000
# deliveries took more than 150 s at load 13)
WRITER_DEADLINE = 150.0 * harness.TIME_FACTOR
FINAL_DEADLINE = 60.0 * harness.TIME_FACTOR

MID_RE = re.compile(rb'(?im)^Message-ID:\s*(<[^>\r\n]+>)')

# Dovecot log lines above Info that this test accepts, per driver.  Keep
# this list explicit: everything else is a finding.
ALLOWED_LOG = {
    'lmdb': [],
    'maildir': [],
}


def message_id(w: int, k: int) -> str:
    return '<conc-w%d-%04d@dlmdb.test>' % (w, k)


def make_message(w: int, k: int) -> bytes:
    mid = message_id(w, k)
    body = ('Writer %d message %d.\r\n' % (w, k)).encode()
    if k % 50 == 7:
        # now and then a multi-chunk body (> 64 KiB) so that saves overlap
        body += (b'%d-%d ' % (w, k) + b'y' * 70 + b'\r\n') * 1200
    else:
        body += b'z' * ((w * 37 + k * 13) % 400) + b'\r\n'
    return ('From: writer%d@example.com\r\n'
            'To: testuser@example.com\r\n'
            'Subject: concurrency w%d k%d\r\n'
            'Date: Mon, 2 Nov 2026 10:%02d:%02d +0000\r\n'
            'Message-ID: %s\r\n'
            '\r\n' % (w, w, k, k // 60 % 60, k % 60, mid)).encode() + body


def uid_of_uidl(uidl: str) -> int:
    # default pop3_uidl_format = %08Xu%08Xv
    return int(uidl[:8], 16)


class Shared:
    """State shared by the worker threads (all under .lock)."""

    def __init__(self, to_delete, all_mids):
        self.lock = threading.Lock()
        self.to_delete = to_delete
        self.maildir = False
        self.all_mids = all_mids
        self.uid_mid = {}        # uid -> Message-ID, as seen by any observer
        self.mid_uids = {}       # Message-ID -> set of uids seen for it
        self.uid_size = {}       # uid -> RFC822.SIZE
        self.violations = []     # consistency problems seen while running
        self.errors = []         # exceptions in threads
        self.deleted = set()     # Message-IDs a POP3 QUIT confirmed deleted
        self.incomplete = []     # (reader, seq, uid, data) of FETCHes without header
        self.counts = {'imap_fetch': 0, 'imap_fetch_no': 0, 'imap_store': 0,
                       'imap_store_no': 0, 'pop3_sessions': 0, 'pop3_retr': 0,
                       'pop3_dele': 0, 'size0_vanished': 0}
        self.writers_done = threading.Event()
        self.stop_readers = threading.Event()

    def observe(self, who, uid, mid, size=None):
        with self.lock:
            if mid not in self.all_mids:
                self.violations.append('%s: UID %d has unknown Message-ID %r' % (who, uid, mid))
            old = self.uid_mid.setdefault(uid, mid)
            if old != mid:
                self.violations.append('%s: UID %d is %s, earlier %s' % (who, uid, mid, old))
            self.mid_uids.setdefault(mid, set()).add(uid)
            if size is not None:
                old = self.uid_size.setdefault(uid, size)
                if old != size and size == 0 and self.maildir and \
                        mid in self.to_delete:
                    # stock maildir: a message whose file a POP3 session
                    # just expunged is answered with RFC822.SIZE 0 (the
                    # size lookup meets the vanished file; seen under
                    # heavy load only). Counted, not a violation.
                    self.counts['size0_vanished'] += 1
                elif old != size:
                    self.violations.append('%s: UID %d RFC822.SIZE %d, earlier %d'
                                           % (who, uid, size, old))

    def count(self, key, n=1):
        with self.lock:
            self.counts[key] += n


def _thread(shared, name, func, *args):
    def run():
        try:
            func(*args)
        except BaseException as e:  # noqa: B902
            import traceback
            with shared.lock:
                shared.errors.append('%s: %s\n%s' % (name, e, traceback.format_exc()))
    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    return t


def writer(dc, shared, w, msgs, results):
    c = LmtpClient('127.0.0.1', dc.ports['lmtp'])
    try:
        for k, raw in enumerate(msgs):
            r = c.deliver('sender@example.com', ['testuser'], raw)
            results.append((k, r.status.get('testuser'), r))
    finally:
        c.quit()


def _no_longer_exist(data) -> bool:
    text = b' '.join(d if isinstance(d, bytes) else str(d).encode() for d in data if d)
    return b'EXPUNGEISSUED' in text or b'no longer exist' in text


def imap_reader(dc, shared, rid, rnd):
    c = dc.imap()
    while not shared.stop_readers.is_set():
        typ, data = c.select('INBOX')
        if typ != 'OK':
            raise AssertionError('reader %d: SELECT %s %r' % (rid, typ, data))
        exists = int(data[0])
        if exists:
            try:
                got = harness.imap_fetch(
                    c, '1:*', '(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])',
                    uid=False)
            except harness.HarnessError as e:
                # FETCH of messages expunged by the POP3 session meanwhile
                if 'EXPUNGEISSUED' in str(e) or 'no longer exist' in str(e):
                    shared.count('imap_fetch_no')
                    continue
                raise
            shared.count('imap_fetch')
            last_uid = 0
            for seq in sorted(got):
                d = got[seq]
                uid = d.get('UID')
                hdr = d.get('BODY[HEADER.FIELDS (MESSAGE-ID)]')
                if uid is None:
                    with shared.lock:
                        shared.violations.append('reader %d: seq %d FETCH without UID %r'
                                                 % (rid, seq, d))
                    continue
                if hdr is None:
                    # maildir: the file of a message the POP3 session has
                    # just deleted is gone (NIL header, size 0).  Checked
                    # at the end: the UID must be one of the deleted ones.
                    with shared.lock:
                        shared.incomplete.append((rid, seq, uid, repr(d)))
                    continue
                if uid <= last_uid:
                    with shared.lock:
                        shared.violations.append('reader %d: UID %d after UID %d (seq %d)'
                                                 % (rid, uid, last_uid, seq))
                last_uid = uid
                mo = MID_RE.search(hdr)
                if not mo:
                    with shared.lock:
                        shared.violations.append('reader %d: UID %d no Message-ID in %r'
                                                 % (rid, uid, hdr))
                    continue
                shared.observe('imap%d' % rid, uid, mo.group(1).decode(), d.get('RFC822.SIZE'))
            for seq in rnd.sample(range(1, exists + 1), min(3, exists)):
                typ, data = c.store(str(seq), '+FLAGS', '(\\Seen)')
                if typ == 'OK':
                    shared.count('imap_store')
                elif _no_longer_exist(data):
                    shared.count('imap_store_no')
                else:
                    raise AssertionError('reader %d: STORE %d %s %r' % (rid, seq, typ, data))
        time.sleep(0.02)
    c.logout()


def pop3_session(dc, shared, rnd, uidl_mid, expect):
    """One POP3 session; returns the number of to-delete messages it
    deleted."""
    pop = dc.pop3()
    count, _size = pop.stat()
    _resp, lines, _ = pop.uidl()
    listing = [l.decode().split() for l in lines]
    if len(listing) != count:
        raise AssertionError('POP3 STAT says %d, UIDL lists %d' % (count, len(listing)))
    dele = []
    for n, uidl in listing:
        mid = uidl_mid.get(uidl)
        if mid is None:
            _st, hdr = pop3_multiline(pop, 'TOP %s 0' % n)
            mo = MID_RE.search(hdr)
            if not mo:
                raise AssertionError('POP3 TOP %s: no Message-ID in %r' % (n, hdr[:300]))
            mid = mo.group(1).decode()
            uidl_mid[uidl] = mid
        shared.observe('pop3', uid_of_uidl(uidl), mid)
        if mid in shared.to_delete:
            dele.append((n, mid))
    for n, uidl in rnd.sample(listing, min(3, len(listing))):
        _st, body = pop3_multiline(pop, 'RETR %s' % n)
        mid = uidl_mid[uidl]
        if body.count(b'\r\nMessage-ID: ' + mid.encode() + b'\r\n') != 1 or \
                not body.endswith(harness.crlf(expect[mid]).split(b'\r\n\r\n', 1)[1]):
            with shared.lock:
                shared.violations.append('POP3 RETR %s (%s): body differs from what was sent'
                                         % (n, mid))
        shared.count('pop3_retr')
    for n, _mid in dele:
        pop.dele(int(n))
    resp = pop.quit()
    if not resp.startswith(b'+OK'):
        raise AssertionError('POP3 QUIT: %r' % resp)
    with shared.lock:
        shared.deleted.update(mid for _n, mid in dele)
        shared.counts['pop3_sessions'] += 1
        shared.counts['pop3_dele'] += len(dele)
    return len(dele)


def pop3_poller(dc, shared, rnd, expect):
    uidl_mid = {}
    while not shared.writers_done.is_set():
        pop3_session(dc, shared, rnd, uidl_mid, expect)
        time.sleep(0.05)
    # final passes until no to-delete message is left
    for _ in range(5):
        if pop3_session(dc, shared, rnd, uidl_mid, expect) == 0:
            return
    raise AssertionError('POP3: to-delete messages keep appearing')


def final_state(dc):
    """[(uid, Message-ID)] of INBOX in UID order, over a fresh IMAP session."""
    imap = dc.imap()
    typ, data = imap.select('INBOX')
    assert typ == 'OK', data
    out = []
    if int(data[0]):
        got = harness.imap_fetch(imap, '1:*', '(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])')
        for uid in sorted(got):
            mo = MID_RE.search(got[uid]['BODY[HEADER.FIELDS (MESSAGE-ID)]'])
            out.append((uid, mo.group(1).decode() if mo else None))
    imap.logout()
    return out


def doveadm_mids(dc):
    return dc.message_ids()


@harness.drivers('lmdb', 'maildir')
def test_concurrent_lmtp_imap_pop3(driver):
    rnd = random.Random(4711)
    msgs = {w: [make_message(w, k) for k in range(N_PER_WRITER)] for w in range(N_WRITERS)}
    expect = {message_id(w, k): m for w in msgs for k, m in enumerate(msgs[w])}
    to_delete = {message_id(w, k) for w in msgs for k in range(N_PER_WRITER)
                 if k % DELETE_EVERY == 2}
    shared = Shared(to_delete, set(expect))
    shared.maildir = driver == 'maildir'
    t0 = time.monotonic()
    with harness.Dovecot(driver) as dc:
        results = {w: [] for w in range(N_WRITERS)}
        writers = [_thread(shared, 'writer%d' % w, writer, dc, shared, w, msgs[w], results[w])
                   for w in range(N_WRITERS)]
        readers = [_thread(shared, 'imap%d' % i, imap_reader, dc, shared, i,
                           random.Random(rnd.random())) for i in range(N_IMAP_READERS)]
        poller = _thread(shared, 'pop3', pop3_poller, dc, shared,
                         random.Random(rnd.random()), expect)

        deadline = time.monotonic() + WRITER_DEADLINE
        for t in writers:
            t.join(max(0.1, deadline - time.monotonic()))
        hung = [t.name for t in writers if t.is_alive()]
        t_writers = time.monotonic() - t0
        shared.writers_done.set()
        # readers keep going while the poller does its final passes
        poller.join(FINAL_DEADLINE)
        shared.stop_readers.set()
        for t in readers:
            t.join(FINAL_DEADLINE / 2)
        hung += [t.name for t in readers + [poller] if t.is_alive()]
        if shared.errors:
            raise AssertionError('worker thread failed:\n' + '\n'.join(shared.errors))
        assert not hung, 'threads still running (deadlock?): %s after %.0fs' % (
            hung, time.monotonic() - t0)
        print('  %s: %d x %d deliveries in %.1fs, total %.1fs, %s, %d FETCH replies '
              'without header' % (driver, N_WRITERS, N_PER_WRITER, t_writers,
                                  time.monotonic() - t0, shared.counts, len(shared.incomplete)))

        # every delivery was accepted
        bad = ['writer %d message %d: %r' % (w, k, r) for w in results
               for k, code, r in results[w] if code != 250]
        assert not bad, 'deliveries not accepted:\n' + '\n'.join(bad[:20])
        assert all(len(results[w]) == N_PER_WRITER for w in results), \
            {w: len(r) for w, r in results.items()}
        assert not shared.violations, 'seen while running:\n' + '\n'.join(shared.violations[:30])
        assert shared.deleted == to_delete, (
            'POP3 deleted %d of %d to-delete messages; missing e.g. %s'
            % (len(shared.deleted), len(to_delete), sorted(to_delete - shared.deleted)[:5]))

        # final state: every kept message exactly once, deleted ones gone
        final = final_state(dc)
        for uid, mid in final:
            shared.observe('final', uid, mid)
        assert not shared.violations, 'final state:\n' + '\n'.join(shared.violations[:30])
        present = {}
        for uid, mid in final:
            present.setdefault(mid, []).append(uid)
        doubled = {m: u for m, u in present.items() if len(u) > 1}
        assert not doubled, 'messages present more than once: %r' % list(doubled.items())[:10]
        keep = set(expect) - to_delete
        lost = keep - set(present)
        assert not lost, '%d messages lost, e.g. %s' % (len(lost), sorted(lost)[:10])
        back = set(present) & to_delete
        assert not back, 'deleted messages present: %s' % sorted(back)[:10]
        assert set(present) == keep
        uids = [u for u, _m in final]
        assert uids == sorted(set(uids)), 'UIDs not unique'

        # UIDs: one per message, increasing in each writer's delivery order
        for mid, us in shared.mid_uids.items():
            assert len(us) == 1, '%s had UIDs %s' % (mid, sorted(us))
        # maildir assigns UIDs when a process syncs new/ (in readdir order,
        # not in delivery order), so there the order is not checked
        for w in range(N_WRITERS if driver != 'maildir' else 0):
            seq = []
            for k in range(N_PER_WRITER):
                us = shared.mid_uids.get(message_id(w, k))
                assert us, 'UID of %s never observed' % message_id(w, k)
                seq.append(next(iter(us)))
            worse = [(k, seq[k - 1], seq[k]) for k in range(1, len(seq)) if seq[k] <= seq[k - 1]]
            assert not worse, 'writer %d: UIDs not increasing (k, prev, uid): %s' % (w, worse[:10])

        # a FETCH without the header may only hit a message being deleted
        bad = [(rid, seq, uid, shared.uid_mid.get(uid), d)
               for rid, seq, uid, d in shared.incomplete
               if shared.uid_mid.get(uid) not in to_delete]
        assert not bad, 'FETCH without header of a kept message:\n' + '\n'.join(map(repr, bad[:20]))

        # doveadm sees the same; status agrees
        assert sorted(doveadm_mids(dc)) == sorted(final)
        st = dc.doveadm('mailbox', 'status', 'messages', 'INBOX', user='testuser').stdout
        assert st.split() == ['INBOX', 'messages=%d' % len(keep)], st
        if driver == 'lmdb':
            v = dc.doveadm('lmdb', 'verify', user='testuser', check=False)
            assert v.returncode == 0, 'lmdb verify exit %d:\n%s\n%s' % (
                v.returncode, v.stdout, v.stderr)
        dc.assert_no_log_errors(ignore=ALLOWED_LOG[driver])
