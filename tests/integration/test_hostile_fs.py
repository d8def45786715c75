"""Hostile input over the protocols (issue 11, item 3), part 4: a
filesystem that turns full or read-only at each step of a save (the
fault injector), and one that really fills up (a small tmpfs). The checks
every case makes are in test_hostile.py.
"""

import os
import re
import shutil
import subprocess
import tempfile
import time

import harness
import test_compact
from test_hostile import (USER, LONG, Baseline, RawImap, assert_log_sane, big_message,
                          message, raw_append, verify_clean, wait_log_count)

# ---------------------------------------------------------------------------
# a filesystem that turns full or read-only at each step of a save

LIBEXEC = '/usr/lib/dovecot'
# what the log says for each errno; Dovecot's own mkdir and open code
# reports EROFS as a permission problem (lib-storage's ENOACCESS())
ERRNO_TEXT = {'ENOSPC': ('No space left on device',),
              # strerror's; 2.4's lib-storage says 'Read only file system'
              'EROFS': ('Read-only file system', 'Read only file system',
                        'Permission denied')}


class Faulty:
    """Saves made by a mail process of its own, with the fault injector
    (tests/tools/fault-inject.c) preloaded: `lmtp` and `imap -u USER`
    started on a pipe against the running instance's config (its auth,
    its mail; -k keeps the DLMDB_FI_* environment through the re-exec
    that reads the config). Each save is one process, so each can fail a
    different step without restarting Dovecot; its log is its stderr."""

    def __init__(self, dc, workdir: str):
        self.dc = dc
        self.so = test_compact.build_injector(workdir)
        self.events_path = os.path.join(workdir, 'events.log')

    def _run(self, prog: str, user: str, args: list, data: bytes, fault: dict):
        with open(self.events_path, 'w'):
            pass
        os.chmod(self.events_path, 0o666)
        env = {'PATH': os.environ.get('PATH', '/usr/bin:/bin'), 'TZ': 'UTC',
               'DLMDB_FI_PROG': prog,
               'DLMDB_FI_PREFIX': self.dc.mail_dir(user), 'DLMDB_FI_LOG': self.events_path}
        # instrumented: the ASan runtime before the injector
        env.update(harness.direct_env(self.so))
        for k, v in fault.items():
            env['DLMDB_FI_' + k.upper()] = str(v)
        # wrap(): on 2.4 the process needs the build's settings modules
        cmd = self.dc.wrap([os.path.join(LIBEXEC, prog), '-k', '-c', self.dc.conf_path] + args)
        r = subprocess.run(cmd, input=data, capture_output=True, env=env, cwd=self.dc.dir,
                           timeout=120)
        with open(self.events_path) as f:
            events = [l.split() for l in f if l.strip()]
        return r, events

    def lmtp(self, user: str, data: bytes, **fault):
        """(the delivery's reply line, the process's log, events)"""
        stuffed = harness.LmtpClient.dot_stuff(data)
        r, events = self._run('lmtp', user, [], b'LHLO faulty\r\nMAIL FROM:<sender@example.com>\r\n'
                              b'RCPT TO:<%s>\r\nDATA\r\n' % user.encode() + stuffed +
                              b'QUIT\r\n', fault)
        out = r.stdout.decode('utf-8', 'replace').splitlines()
        # greeting, LHLO, MAIL, RCPT, DATA's 354, the delivery's reply
        replies = [l for l in out if l[:3].isdigit() and l[3:4] == ' ']
        assert len(replies) >= 6 and replies[4].startswith('354'), (out, r.stderr)
        return replies[5], r.stderr.decode('utf-8', 'replace'), events

    def append(self, user: str, data: bytes, **fault):
        """(the tagged APPEND reply, the process's log, events)"""
        r, events = self._run('imap', user, ['-u', user],
                              b'a APPEND INBOX {%d+}\r\n' % len(data) + data +
                              b'\r\nb LOGOUT\r\n', fault)
        out = r.stdout.decode('utf-8', 'replace')
        tagged = re.search(r'^a (.*)$', out, re.M)
        assert tagged and re.search(r'^b OK', out, re.M), (out[-500:], r.stderr)
        return tagged.group(1), r.stderr.decode('utf-8', 'replace'), events


class Ledger:
    """What was acknowledged to one user: Message-ID -> bytes as sent.
    check() reads INBOX over a session that stays open: every
    acknowledged message is there once (byte for byte: each is read
    whole once, and all again by check(whole=True)); a refused one at
    most once."""

    def __init__(self, dc, user: str = USER):
        self.dc = dc
        self.acked, self.refused, self.read = {}, set(), set()
        self.c = RawImap(dc, user=user, timeout=120)
        self.c.ok('SELECT INBOX')
        self.n = 0

    def make(self, tag: str, size: int = 0) -> tuple:
        self.n += 1
        mid = '%s-%d' % (tag, self.n)
        data = big_message(mid, size) if size else message(mid)
        return '<%s@hostile.test>' % mid, data

    def check(self, where, whole: bool = False):
        self.c.ok('NOOP')
        untagged, _ = self.c.ok('UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])')
        uids = {}
        for text, lits in untagged:
            mo = re.search(rb'UID (\d+)', text)
            mid = re.search(rb'(<[^>]*>)', lits[0]) if lits and mo else None
            if mid:
                uids.setdefault(mid.group(1).decode(), []).append(int(mo.group(1)))
        for mid, data in self.acked.items():
            got = uids.get(mid, [])
            assert len(got) == 1, (where, mid, 'acknowledged, there %d times' % len(got))
            if whole or mid not in self.read:
                untagged, _ = self.c.ok('UID FETCH %d (BODY.PEEK[])' % got[0])
                body = next(l[0] for t, l in untagged if b' FETCH ' in t and l)
                # LMTP puts Return-Path and Delivered-To first
                assert harness.lf(body).endswith(harness.lf(data)), (where, mid)
                self.read.add(mid)
        for mid in self.refused:
            assert len(uids.get(mid, [])) <= 1, (where, mid, 'refused, there twice')


def _fault_steps(events, every_write: bool) -> list:
    """(kind, n) of every step a dry run made, in the order of kinds
    below; only every third write unless every_write (the writes of one
    body are alike)."""
    count = {}
    for ev in events:
        count[ev[1]] = max(count.get(ev[1], 0), int(ev[2]))
    out = []
    for kind in ('mkdir', 'ftruncate', 'write', 'commit', 'fdatasync', 'fsync', 'rename',
                 'unlink'):
        for n in range(1, count.get(kind, 0) + 1):
            if every_write or kind != 'write' or n % 3 == 1 or n == count[kind]:
                out.append((kind, n))
    return out


def _reached(events) -> bool:
    return any(e[3] == 'fail' for e in events)


# Dovecot's lib-index writes a new transaction log into LOG.newlock, a
# dotlock, and renames it over LOG. When that rename fails,
# file_dotlock_replace() frees the dotlock without unlinking it; as the
# file holds the log, not a pid, it is stale only 3 minutes after its
# ctime (MAIL_TRANSACTION_LOG_DOTLOCK_CHANGE_TIMEOUT), and a process
# that opens that index before waits for it as long as its lock timeout
# (also 3 minutes) allows: it may fail with "file_dotlock_open() failed:
# Resource temporarily unavailable" (LMTP 451, the sender retries) just
# before the file turns stale; after that the next one overrides it.
# That is Dovecot's, on every index-based format (maildir too).
DOTLOCK_STALE_SECS = 180
DOTLOCK_LOG = r'file_dotlock_open\(\) failed with file .*: Resource temporarily unavailable'


def _left_newlock(where, events) -> list:
    """The dotlocks a failed rename left (asserted there, see above).
    By default they are removed, as Dovecot would override them 3
    minutes later; DLMDB_HOSTILE_LONG=1 leaves them for Dovecot."""
    left = [e[4] for e in events if e[3] == 'fail' and e[1] == 'rename' and
            e[4].endswith('.newlock')]
    for path in left:
        assert os.path.exists(path), (where, 'no dotlock left', path)
        if not LONG:
            os.unlink(path)
    return left


def _deliver_next(dc, user, data, where, left):
    """The next delivery after a fault: at once, or (a dotlock left for
    Dovecot) within its stale timeout, or as the sender's retry of a 451
    that the lock timeout gave (see above)."""
    if not left or not LONG:
        return dc.lmtp_deliver(user, data)
    c = dc.lmtp()
    c.sock.settimeout(DOTLOCK_STALE_SECS + 120)
    r = c.deliver('sender@example.com', [user], data)
    c.close()
    if r.status[user] != 250:
        assert r.status[user] == 451, (where, r)
        assert wait_log_count(dc, DOTLOCK_LOG, 1), (where, dc.log_tail(10))
        for path in left:
            if os.path.exists(path):
                wait = os.stat(path).st_ctime + DOTLOCK_STALE_SECS + 2 - time.time()
                time.sleep(max(0, wait))
        r = dc.lmtp_deliver(user, data)
    assert not any(os.path.exists(p) for p in left), (where, left)
    return r


def _judge(where, reply: str, log: str, events, err: str) -> bool:
    """Whether the save was acknowledged; asserts what a refusal must be."""
    assert _reached(events), (where, 'the step never came', events)
    assert not re.search(r'Panic:|Fatal:|assertion failed', log), (where, log)
    if reply.startswith('250 ') or reply.startswith('OK '):
        return True
    if reply[:3].isdigit():
        # temporary: the sender retries, nothing bounces
        assert reply[:3] in ('451', '452'), (where, reply)
    else:
        assert re.match(r'NO \S', reply), (where, reply)
    assert any(t in log for t in ERRNO_TEXT[err]), (where, reply, log)
    return False


def test_filesystem_fails_at_each_step():
    """lmdb: a filesystem that turns full (ENOSPC) or read-only (EROFS) at
    one step of a save. The saves: an LMTP delivery and an IMAP APPEND
    into a mailbox in use, an APPEND of 2 MB (its body written in groups
    before the commit), and a new user's first delivery (which creates
    the environment, the directories and the index files: mkdir, rename,
    unlink, ftruncate). A dry run of each lists its steps; then each step
    fails in turn. Every save is either acknowledged and then there, byte
    for byte, or refused with a temporary failure (LMTP 451/452, IMAP NO;
    never 5xx, BAD, a crash or a dropped connection) whose log says why
    (the errno's text); nothing acknowledged is lost or doubled, the next
    delivery works (for the new user too: nothing half-made stays in the
    way), and `doveadm lmdb verify` is clean. By default ENOSPC and EROFS
    alternate by step and only every third write of a kind is failed;
    DLMDB_HOSTILE_LONG=1 fails every step with both, verifying after
    each."""
    workdir = tempfile.mkdtemp(prefix='dlmdb-hostile-', dir='/tmp')
    try:
        os.chmod(workdir, 0o777)
        _filesystem_fails(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _filesystem_fails(workdir):
    extra = 'lmtp_add_received_header = no\nplugin {\n  lmdb_autopurge_interval = 0\n}\n'
    fresh = ['new%d' % i for i in range(120 if LONG else 40)]
    with harness.Dovecot('lmdb', extra=extra, users=fresh) as dc:
        base = Baseline(dc)
        fi = Faulty(dc, workdir)
        ledger = Ledger(dc)
        outcomes = {}
        trial = 0

        def record(where, acked, reply):
            key = 'acknowledged' if acked else reply.split(' <')[0][:34]
            outcomes.setdefault(key, []).append(where)

        for what, size in (('lmtp', 0), ('append', 0), ('append', 2_000_000)):
            save = fi.lmtp if what == 'lmtp' else fi.append
            mid, data = ledger.make('dry-%s' % what, size)
            reply, _log, events = save(USER, data)
            assert reply.startswith('250 ') or reply.startswith('OK '), reply
            ledger.acked[mid] = data
            steps = _fault_steps(events, LONG or size == 0)
            assert {'write', 'fdatasync', 'commit'} <= {k for k, _n in steps}, (what, events)
            for kind, n in steps:
                for err in ('ENOSPC', 'EROFS') if LONG else (('ENOSPC', 'EROFS')[trial % 2],):
                    trial += 1
                    where = (what, size, kind, n, err)
                    for _try in range(3):
                        mid, data = ledger.make('%s-%s%d-%s' % (what, kind, n, err), size)
                        reply, log, events = save(USER, data, kind=kind, nth=n,
                                                  action='fail', errno=err)
                        if _reached(events) or kind != 'write':
                            break
                        # LMDB writes each run of adjacent dirty pages
                        # at once: how many writes a save makes depends
                        # on where the free pages are, and this one made
                        # fewer than the dry run. It saved normally; the
                        # last write it made is the step to try again.
                        assert reply.startswith(('250 ', 'OK ')), (where, reply, log)
                        ledger.acked[mid] = data
                        n = max(int(e[2]) for e in events if e[1] == kind)
                        where = (what, size, kind, n, err)
                    acked = _judge(where, reply, log, events, err)
                    left = _left_newlock(where, events)
                    record(where, acked, reply)
                    (ledger.acked.__setitem__(mid, data) if acked else ledger.refused.add(mid))
                    mid, data = ledger.make('after', 0)
                    r = _deliver_next(dc, USER, data, where, left)
                    assert r.status == {USER: 250}, (where, r)
                    ledger.acked[mid] = data
                    ledger.check(where)
                    if LONG:
                        verify_clean(dc)

        # a new user's first delivery, failing at each step
        dry = fresh.pop(0)
        reply, _log, events = fi.lmtp(dry, message('first'))
        assert reply.startswith('250 '), reply
        steps = _fault_steps(events, LONG)
        assert {'mkdir', 'rename', 'write', 'commit'} <= {k for k, _n in steps}, events
        for kind, n in steps:
            for err in ('ENOSPC', 'EROFS') if LONG else (('ENOSPC', 'EROFS')[trial % 2],):
                trial += 1
                user = fresh.pop(0)
                where = ('first', user, kind, n, err)
                reply, log, events = fi.lmtp(user, message('first-%s' % user), kind=kind,
                                             nth=n, action='fail', errno=err)
                acked = _judge(where, reply, log, events, err)
                left = _left_newlock(where, events)
                record(where, acked, reply)
                r = _deliver_next(dc, user, message('next-%s' % user), where, left)
                assert r.status == {user: 250}, (where, r)
                c = RawImap(dc, user=user)
                untagged, _ = c.ok('EXAMINE INBOX')
                count = int(next(re.match(rb'\* (\d+) EXISTS', t).group(1)
                                 for t, _ in untagged if t.endswith(b' EXISTS')))
                assert count == (2 if acked else 1) or (not acked and count == 2), \
                    (where, count)
                c.ok('LOGOUT')
                verify_clean(dc, user)

        ledger.check('end', whole=True)
        ledger.c.ok('LOGOUT')
        base.check()
        assert_log_sane(dc, allowed=[DOTLOCK_LOG] if LONG else [])
        # both kinds of outcome happened: refusals, and steps Dovecot
        # tolerates (a cache file it can't write)
        assert 'acknowledged' in outcomes and len(outcomes) > 1, sorted(outcomes)
        for k, v in sorted(outcomes.items()):
            print('  %-36s %s' % (k, ' '.join('%s/%s%d/%s' % (w[0], w[2], w[3], w[4][1:3])
                                             for w in v)))


# ---------------------------------------------------------------------------
# a filesystem that really fills up

def test_disk_really_full():
    """lmdb: a user whose home is a 6 MB tmpfs that really fills up, with
    LMTP deliveries and IMAP APPENDs of 300 KB alternating until well
    past full. Each save is acknowledged and then there byte for byte, or
    refused as a temporary failure (LMTP 451/452, IMAP NO) with a log
    line naming the full disk; what was acknowledged before stays readable
    over IMAP and POP3 while the disk is full; once the filesystem has
    room again (remounted larger) the next delivery and APPEND work and
    `doveadm lmdb verify` is clean."""
    user = 'fulluser'
    extra = 'lmtp_add_received_header = no\nplugin {\n  lmdb_autopurge_interval = 0\n}\n'
    dc = harness.Dovecot('lmdb', extra=extra)
    dc.add_user(user)
    home = dc.home(user)
    # mounted before Dovecot starts: on 2.4 its processes run in a mount
    # namespace of their own (the build's settings modules), a copy made
    # at start that sees no later mount (the remount below changes the
    # same filesystem, seen in both)
    r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=6M,mode=0700,uid=%d,gid=%d'
                        % (dc.uid, dc.gid), 'tmpfs', home],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise harness.Skip('cannot mount a tmpfs: %s' % r.stderr.strip())
    try:
        dc.start()
        _disk_really_full(dc, user, home)
    finally:
        dc.stop()
        subprocess.run(['umount', '-l', home], timeout=30)


def _disk_really_full(dc, user, home):
    base = Baseline(dc, count=2, user=user)
    ledger = Ledger(dc, user=user)
    replies = []
    for i in range(40):
        mid, data = ledger.make('full-%d' % i, 300_000)
        if i % 2 == 0:
            r = dc.lmtp_deliver(user, data)
            reply = '%d %s' % (r.status[user], r.data.get(user, r.rcpt.get(user))[1]) \
                if r.status[user] != 250 else '250'
            acked = r.status[user] == 250
        else:
            c = RawImap(dc, user=user, timeout=120)
            _u, reply = raw_append(c, data)
            c.close()
            acked = reply.startswith('OK')
        replies.append((i, reply[:60]))
        if acked:
            ledger.acked[mid] = data
        else:
            ledger.refused.add(mid)
            assert reply[:3] in ('451', '452') or re.match(r'NO \S', reply), (i, reply)
    refused = [r for r in replies if not r[1].startswith(('250', 'OK'))]
    # the disk was really full: the last saves were all refused
    assert len(refused) >= 10 and all(not r[1].startswith(('250', 'OK'))
                                      for r in replies[-6:]), replies
    # each refusal has its line: the commit that met the full disk
    found = wait_log_count(dc, r'Error: .*failed: No space left on device', len(refused))
    assert len(found) >= len(refused), (len(found), dc.log_tail(30))
    st = os.statvfs(home)
    assert st.f_bavail * st.f_frsize < 1 << 20, 'the disk has room'
    # what was acknowledged is there, also while the disk is full
    ledger.check('full', whole=True)
    base.check()
    # room again
    subprocess.run(['mount', '-o', 'remount,size=64M', home], check=True, timeout=30)
    mid, data = ledger.make('after-full', 300_000)
    r = dc.lmtp_deliver(user, data)
    assert r.all_ok(), r
    ledger.acked[mid] = data
    mid, data = ledger.make('after-full-append', 300_000)
    c = RawImap(dc, user=user, timeout=120)
    _u, tagged = raw_append(c, data)
    c.close()
    assert tagged.startswith('OK'), tagged
    ledger.acked[mid] = data
    ledger.check('room again', whole=True)
    ledger.c.ok('LOGOUT')
    base.check()
    print('  %d saves acknowledged, %d refused: %s' % (
        len(replies) - len(refused), len(refused),
        sorted({r[1].split(' [20')[0] for r in refused})))
    assert_log_sane(dc, allowed=[r'No space left on device', r'out of space'])
