"""Crashes: `kill -9` of the lmtp and/or imap processes of an instance in
the middle of a burst of LMTP deliveries (2 connections) and IMAP APPENDs
(1 session), repeated.

Each message is tracked: 'ok' (LMTP 250 / APPEND OK: committed),
'refused' (4xx/5xx, NO/BAD), 'unknown' (in flight when the process died)
or 'unsent' (the burst ended before it).  After every trial a canary LMTP
delivery and a canary APPEND must succeed (the first saves after the
crash: no UID clash with links the crash left), and then:

  * every 'ok' message is present exactly once, 'refused' and 'unsent'
    ones never appear, an 'unknown' one at most once (by Message-ID);
  * UIDs are unique;
  * the log has nothing above Info except the kills themselves and the
    designed crash recovery ("lmdb: Added N messages that were in LMDB
    but missing from the index");
  * (lmdb, every VERIFY_EVERY trials and at the end) `doveadm lmdb verify`
    exits 0, without a force-resync.

At the end (lmdb): no LMDB reader slot of a dead pid is left (`mdb_stat
-r`), and bodies that were saved but never linked are collected: with
lmdb_pending_grace = 1s, `doveadm purge` leaves exactly one body per
message present.

DLMDB_CRASH_SEED=n repeats a run (the seed is printed); DLMDB_CRASH_TRIALS=n
changes the number of lmdb trials (default 50; maildir runs 20 as the
control).
"""

import imaplib
import os
import random
import re
import signal
import subprocess
import threading
import time

import harness
from harness import LmtpClient

TRIALS = {'lmdb': int(os.environ.get('DLMDB_CRASH_TRIALS', 50)), 'maildir': 20}
LMTP_CONNS = 2
BURST = 60               # messages per LMTP connection / APPEND session and trial
VERIFY_EVERY = 10

CONFIG = ('plugin {\n'
          '  lmdb_pending_grace = 1s\n'
          '  lmdb_dead_grace = 1s\n'
          '  lmdb_autopurge_interval = 0\n'
          '}\n')

MID_RE = re.compile(rb'(?im)^Message-ID:\s*(<[^>\r\n]+>)')

# log lines above Info that are expected here; everything else is a finding
# (the kill lines are only accepted for pids the test killed itself)
KILL_LOG_RE = re.compile(r'(?:lmtp|imap)\([^)]*\)(?:<[^>]*>)*: Fatal: master: '
                         r'service\((lmtp|imap)\): child (\d+) killed with signal 9'
                         r'(?: \(core dumps disabled\))?$')
EXPECTED_LOG = [
    # (lmtp prefixes it with 'lmtp-server: conn ...: rcpt testuser: ')
    r'Warning: (?:.*: )?Mailbox INBOX: lmdb: Added \d+ messages that were in LMDB but '
    r'missing from the index',
]
# these are bugs even if some pattern above would match
FORBIDDEN_LOG = [r'already exists', r'disagree', r'Panic', r'corrupt']


def make_message(mid: str, n: int) -> bytes:
    body = b'crash test %s\r\n' % mid.encode() + b'q' * (n * 7 % 500) + b'\r\n'
    if n % 17 == 5:
        body += b'multi-chunk body line padded out to some length..........\r\n' * 2000
    return ('From: crash@example.com\r\n'
            'To: testuser@example.com\r\n'
            'Subject: crash %s\r\n'
            'Message-ID: %s\r\n'
            '\r\n' % (mid, mid)).encode() + body


class Ledger:
    def __init__(self):
        self.lock = threading.Lock()
        self.state = {}      # Message-ID -> 'ok' | 'refused' | 'unknown' | 'unsent'
        self.trial_of = {}   # Message-ID -> trial number
        self.detail = {}     # Message-ID -> reply text for refused ones
        self.n = 0

    def new(self, trial, src, k):
        mid = '<crash-t%03d-%s-%03d@dlmdb.test>' % (trial, src, k)
        with self.lock:
            self.state[mid] = 'unsent'
            self.trial_of[mid] = trial
            self.n += 1
            return mid, self.n

    def set(self, mid, state, detail=None):
        with self.lock:
            self.state[mid] = state
            if detail is not None:
                self.detail[mid] = detail


def lmtp_burst(dc, ledger, trial, src, errors):
    mids = [ledger.new(trial, src, k) for k in range(BURST)]
    try:
        c = LmtpClient('127.0.0.1', dc.ports['lmtp'], timeout=30)
    except (OSError, harness.HarnessError):
        return
    try:
        for mid, n in mids:
            ledger.set(mid, 'unknown')
            try:
                r = c.deliver('sender@example.com', ['testuser'], make_message(mid, n))
            except (OSError, harness.HarnessError):
                return  # connection died with the process: outcome unknown
            code = r.status.get('testuser')
            if code == 250:
                ledger.set(mid, 'ok')
            else:
                ledger.set(mid, 'refused', repr(r))
    finally:
        try:
            c.close()
        except Exception:
            pass


def imap_burst(dc, ledger, trial, errors):
    mids = [ledger.new(trial, 'imap', k) for k in range(BURST)]
    try:
        c = imaplib.IMAP4('127.0.0.1', dc.ports['imap'], timeout=30)
        c.login('testuser', 'testpass')
    except (OSError, imaplib.IMAP4.error, EOFError):
        return
    try:
        for mid, n in mids:
            ledger.set(mid, 'unknown')
            try:
                typ, data = c.append('INBOX', None, None, make_message(mid, n))
            except (OSError, EOFError, imaplib.IMAP4.abort):
                return
            except imaplib.IMAP4.error as e:   # BAD
                ledger.set(mid, 'refused', str(e))
                continue
            if typ == 'OK':
                ledger.set(mid, 'ok')
            else:
                ledger.set(mid, 'refused', repr(data))
        try:
            c.logout()
        except Exception:
            pass
    finally:
        try:
            c.shutdown()
        except Exception:
            pass


def children(master_pid, services):
    """pids of the master's direct children whose process title (argv[0],
    e.g. 'dovecot-<instance_name>/lmtp') names one of services."""
    out = []
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % d, 'rb') as f:
                st = f.read()
            with open('/proc/%s/cmdline' % d, 'rb') as f:
                argv0 = f.read().split(b'\0')[0].decode('utf-8', 'replace')
        except OSError:
            continue
        fields = st[st.rindex(b')') + 2:].split()
        title = argv0.split(' ')[0]
        if int(fields[1]) == master_pid and fields[0] != b'Z' and '/' in title and \
                title.rsplit('/', 1)[1] in services:
            out.append(int(d))
    return out


def kill_services(dc, which):
    services = {'lmtp': ['lmtp'], 'imap': ['imap'], 'both': ['lmtp', 'imap']}[which]
    victims = children(dc.pid, services)
    assert dc.pid not in victims
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return victims


def present_mids(dc):
    """[(uid, Message-ID)] of INBOX via doveadm fetch (a new process)."""
    r = dc.doveadm('fetch', 'uid hdr.message-id', 'mailbox', 'INBOX', 'all', user='testuser')
    out = []
    uid = None
    for line in r.stdout.splitlines():
        if line.startswith('uid: '):
            uid = int(line[5:])
        elif line.startswith('hdr.message-id: '):
            out.append((uid, line[len('hdr.message-id: '):].strip()))
    return out


def check_presence(ledger, present, where):
    problems = []
    counts = {}
    for _uid, mid in present:
        counts[mid] = counts.get(mid, 0) + 1
    uids = [u for u, _m in present]
    if len(set(uids)) != len(uids):
        problems.append('%s: duplicate UIDs %s' % (where, sorted(u for u in set(uids)
                                                                  if uids.count(u) > 1)))
    with ledger.lock:
        state = dict(ledger.state)
    for mid, n in counts.items():
        st = state.get(mid)
        if st is None:
            problems.append('%s: unknown message %s present' % (where, mid))
        elif st in ('refused', 'unsent') and n:
            problems.append('%s: %s message %s present %d time(s) (%s)'
                            % (where, st, mid, n, ledger.detail.get(mid, '')))
        elif n > 1:
            problems.append('%s: %s message %s present %d times' % (where, st, mid, n))
    for mid, st in state.items():
        if st == 'ok' and counts.get(mid, 0) != 1:
            problems.append('%s: committed message %s present %d times (trial %d)'
                            % (where, mid, counts.get(mid, 0), ledger.trial_of[mid]))
    return problems, counts


def bad_log_lines(text, killed):
    out = []
    pat = re.compile(r'(?:^|\s|\))(?:Error|Panic|Fatal|Warning):')
    for line in text.splitlines():
        if not pat.search(line):
            continue
        if any(re.search(b, line) for b in harness.Dovecot.BENIGN_LOG_RE):
            continue
        mo = KILL_LOG_RE.search(line)
        if mo and int(mo.group(2)) in killed:
            continue
        if any(re.search(f, line) for f in FORBIDDEN_LOG) or \
                not any(re.search(e, line) for e in EXPECTED_LOG):
            out.append(line)
    return out


def lmdb_stats(dc):
    out = dc.doveadm('lmdb', 'stats', user='testuser').stdout
    return {k: int(v) for k, v in (kv.split('=', 1) for kv in out.split())}


def lmdb_verify(dc):
    v = dc.doveadm('lmdb', 'verify', user='testuser', check=False)
    return v.returncode, (v.stdout + v.stderr).strip()


def reader_slots(env_dir):
    """[(pid, txnid)] from `mdb_stat -r` (one -r: list only, no cleanup)."""
    r = subprocess.run(['mdb_stat', '-r', env_dir], capture_output=True, text=True, timeout=30)
    # exit status 1 when the table is empty
    assert 'Reader Table Status' in r.stdout, (r.returncode, r.stdout, r.stderr)
    slots = []
    for line in r.stdout.splitlines():
        f = line.split()
        if len(f) == 3 and f[0].isdigit():
            slots.append((int(f[0]), f[2]))
    return slots, r.stdout


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


@harness.drivers('lmdb', 'maildir')
def test_kill9_during_bursts(driver):
    seed = int(os.environ.get('DLMDB_CRASH_SEED') or random.randrange(1 << 30))
    rnd = random.Random(seed)
    ntrials = TRIALS[driver]
    print('  %s: seed %d (DLMDB_CRASH_SEED=%d to repeat), %d trials'
          % (driver, seed, seed, ntrials))
    ledger = Ledger()
    findings = []
    killed = set()
    kills = {'lmtp': 0, 'imap': 0, 'both': 0, 'victims': 0, 'missed': 0}
    t0 = time.monotonic()
    with harness.Dovecot(driver, extra=CONFIG) as dc:
        # warm up: the mail root, INBOX and the index exist
        assert dc.lmtp_deliver('testuser', make_message(ledger.new(0, 'warm', 0)[0], 0)).all_ok()
        ledger.set('<crash-t000-warm-000@dlmdb.test>', 'ok')
        log_pos = len(dc.log())
        for trial in range(1, ntrials + 1):
            errors = []
            threads = [threading.Thread(target=lmtp_burst, daemon=True,
                                        args=(dc, ledger, trial, 'lmtp%d' % i, errors))
                       for i in range(LMTP_CONNS)]
            threads.append(threading.Thread(target=imap_burst, daemon=True,
                                            args=(dc, ledger, trial, errors)))
            for t in threads:
                t.start()
            time.sleep(rnd.uniform(0.05, 0.5))
            which = rnd.choice(['lmtp', 'lmtp', 'imap', 'both', 'both'])
            victims = kill_services(dc, which)
            killed.update(victims)
            kills[which] += 1
            kills['victims'] += len(victims)
            if not victims:
                kills['missed'] += 1
            for t in threads:
                t.join(60)
            assert not any(t.is_alive() for t in threads), \
                'trial %d: a client is stuck 60s after the kill' % trial

            # the first saves after the crash succeed
            mid, n = ledger.new(trial, 'canary-lmtp', 0)
            r = dc.lmtp_deliver('testuser', make_message(mid, n))
            if r.all_ok():
                ledger.set(mid, 'ok')
            else:
                ledger.set(mid, 'refused', repr(r))
                findings.append('trial %d: LMTP delivery after the kill failed: %r' % (trial, r))
            mid, n = ledger.new(trial, 'canary-imap', 0)
            c = dc.imap()
            typ, data = c.append('INBOX', None, None, make_message(mid, n))
            c.logout()
            if typ == 'OK':
                ledger.set(mid, 'ok')
            else:
                ledger.set(mid, 'refused', repr(data))
                findings.append('trial %d: APPEND after the kill failed: %r' % (trial, data))

            problems, counts = check_presence(ledger, present_mids(dc), 'trial %d' % trial)
            findings += problems
            if driver == 'lmdb' and (trial % VERIFY_EVERY == 0 or trial == ntrials):
                rc, out = lmdb_verify(dc)
                if rc != 0:
                    findings.append('trial %d: lmdb verify exit %d:\n%s' % (trial, rc, out))
            log = dc.log()
            findings += ['trial %d (killed %s %s): log: %s' % (trial, which, victims, l)
                         for l in bad_log_lines(log[log_pos:], killed)]
            log_pos = len(log)
            if len(findings) > 40:
                break
        t_trials = time.monotonic() - t0

        with ledger.lock:
            tally = {}
            for st in ledger.state.values():
                tally[st] = tally.get(st, 0) + 1
            unknown_present = sum(1 for m, st in ledger.state.items()
                                  if st == 'unknown' and m in counts)
        print('  %s: %d trials in %.1fs; kills %s; messages %s (unknown ones present: %d); '
              'present %d' % (driver, trial, t_trials, kills, tally, unknown_present,
                              len(counts)))

        # one more session of each kind, then the final checks
        imap = dc.imap()
        imap.select('INBOX')
        imap.logout()
        problems, counts = check_presence(ledger, present_mids(dc), 'final')
        findings += problems
        if driver == 'lmdb':
            rc, out = lmdb_verify(dc)
            if rc != 0:
                findings.append('final: lmdb verify exit %d:\n%s' % (rc, out))

            # reader slots of the killed processes are gone
            slots, raw = reader_slots(dc.mail_dir())
            dead = [(p, t) for p, t in slots if not pid_alive(p)]
            if dead:
                findings.append('reader slots of dead pids remain: %s\n%s' % (dead, raw))

            # bodies saved but never linked are collected after the grace
            s1 = lmdb_stats(dc)
            npresent = sum(counts.values())
            if s1['messages'] != npresent or s1['bodies'] < npresent:
                findings.append('stats before purge %s, %d messages present' % (s1, npresent))
            time.sleep(2)
            dc.doveadm('purge', user='testuser')
            s2 = lmdb_stats(dc)
            print('  lmdb: stats before purge: bodies=%d messages=%d; after: bodies=%d '
                  'messages=%d' % (s1['bodies'], s1['messages'], s2['bodies'], s2['messages']))
            if s2['bodies'] != npresent or s2['messages'] != npresent:
                findings.append('after purge: bodies=%d messages=%d, %d messages present'
                                % (s2['bodies'], s2['messages'], npresent))
            rc, out = lmdb_verify(dc)
            if rc != 0:
                findings.append('after purge: lmdb verify exit %d:\n%s' % (rc, out))
            # all bodies still readable
            problems, _ = check_presence(ledger, present_mids(dc), 'after purge')
            findings += problems
        log = dc.log()
        findings += ['end: log: %s' % l for l in bad_log_lines(log[log_pos:], killed)]
        # nothing here is a reason to refuse mail (no quota, no size limit):
        # a refusal is a save that failed because of an earlier crash
        with ledger.lock:
            findings += ['trial %d: %s was refused: %s' % (ledger.trial_of[m], m, ledger.detail[m])
                         for m, st in sorted(ledger.state.items()) if st == 'refused']
        assert kills['victims'] > 0, 'no process was ever killed: %r' % kills
        assert not findings, '%d finding(s) (seed %d):\n%s' % (
            len(findings), seed, '\n'.join(findings[:40]))
