"""Compaction under faults (lmdb only): `doveadm lmdb compact` killed
(SIGKILL) or failing (EIO) at every rename, unlink, fsync, fdatasync,
mkdir, LMDB commit and ftruncate it makes, and a copy that fails for a
full disk.

The faults come from tests/tools/fault-inject.c, an LD_PRELOAD library
compiled here with cc (the tests are skipped without a compiler) and
preloaded into doveadm only: doveadm runs with -k, so its re-exec through
doveconf keeps the DLMDB_FI_* variables, and DLMDB_FI_PROG=doveadm keeps
the library inert in everything else the command line starts. Only calls
on files under the user's mail root count (DLMDB_FI_PREFIX).

test_compact_faults first compacts once with the library only counting
(the dry run), then runs one trial per (kind, n, action): action kill
(before the n-th call), fail (the n-th call returns EIO) and, for
commits, kill-after (the commit is on disk, the process dies before its
next step).  Each trial:

  * a long-lived IMAP session opened before the compaction (one per
    trial, plus one kept open across all trials) APPENDs before the
    faulty compaction and again after it; LMTP delivers after it;
  * a fresh IMAP session and POP3 then read every acknowledged message,
    byte-identical (an APPEND as sent, an LMTP delivery as sent after
    the Return-Path/Delivered-To headers LMTP prepends), each once;
  * `doveadm lmdb verify` is clean, nothing in the Dovecot log is at
    Error level or above, and a compaction without faults succeeds
    (the next trial's reads check what it left).

The test stops at the first trial with findings (what a broken
environment does next is noise). For debugging: DLMDB_COMPACT_KINDS=
kind,kind... runs only those kinds, DLMDB_COMPACT_KEEP_GOING=1 goes on
after a failing trial.
"""

import email.parser
import os
import poplib
import re
import shutil
import subprocess

import harness

USER = 'testuser'
HERE = os.path.dirname(os.path.abspath(__file__))
INJECTOR_SRC = os.path.join(os.path.dirname(HERE), 'tools', 'fault-inject.c')

# ftruncate: LMDB sizing a new lock file (the copy's, and the reopen's
# after the swap)
KINDS = ('mkdir', 'unlink', 'rename', 'fsync', 'fdatasync', 'commit', 'ftruncate')
CONFIG = ('lmtp_add_received_header = no\n'
          'plugin {\n'
          '  lmdb_autopurge_interval = 0\n'
          '}\n')


def build_injector(dirpath: str) -> str:
    cc = next((shutil.which(c) for c in ('cc', 'gcc', 'clang') if shutil.which(c)), None)
    if cc is None:
        raise harness.Skip('no C compiler for the fault-injection library')
    so = os.path.join(dirpath, 'fault-inject.so')
    r = subprocess.run([cc, '-shared', '-fPIC', '-O2', '-o', so, INJECTOR_SRC,
                        '-ldl', '-pthread'], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise harness.Skip('building the fault-injection library failed: %s'
                           % r.stderr[-500:])
    os.chmod(so, 0o755)
    return so


class Injector:
    """Runs doveadm commands with the fault-injection library preloaded."""

    def __init__(self, dc):
        self.dc = dc
        d = dc.path('fault-inject')
        os.mkdir(d)
        os.chmod(d, 0o777)
        self.so = build_injector(d)
        self.log = os.path.join(d, 'events.log')
        self.prefix = dc.mail_dir(USER)

    def doveadm(self, *args, kind=None, nth=None, action=None, error=None,
                match=None) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
        """doveadm ARGS -u USER with the library: counting only, or with
        a fault at the nth call of kind. Returns the process and the
        library's events ([seq, kind, n, action, path...])."""
        # the mail processes write the log as the mail user: start empty
        with open(self.log, 'w'):
            pass
        os.chmod(self.log, 0o666)
        env = {'LD_PRELOAD': self.so, 'DLMDB_FI_PROG': 'doveadm',
               'DLMDB_FI_PREFIX': self.prefix, 'DLMDB_FI_LOG': self.log}
        if kind is not None:
            env.update(DLMDB_FI_KIND=kind, DLMDB_FI_NTH=str(nth), DLMDB_FI_ACTION=action)
            if error:
                env['DLMDB_FI_ERRNO'] = error
            if match:
                env['DLMDB_FI_MATCH'] = match
        words = list(args)
        n = harness._doveadm_cmd_words(words)
        words = words[:n] + ['-u', USER] + words[n:]
        # -k: keep the environment through doveconf's re-exec of doveadm
        cmd = ['env'] + ['%s=%s' % kv for kv in env.items()] + \
            [harness.DOVEADM, '-k', '-c', self.dc.conf_path] + words
        cmd = self.dc.wrap(cmd, doveadm=True)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.dc.dir)
        with open(self.log) as f:
            events = [line.split() for line in f if line.strip()]
        return r, events


def counts(events) -> dict[str, int]:
    out = {}
    for ev in events:
        out[ev[1]] = max(out.get(ev[1], 0), int(ev[2]))
    return out


def message_id(data: bytes) -> str:
    hdr = email.parser.BytesHeaderParser().parsebytes(data)
    return (hdr.get('Message-ID') or '').strip()


class Ledger:
    """Every acknowledged message: Message-ID -> (how it came, bytes sent)."""

    def __init__(self):
        self.sent = {}
        self.seq = 0

    def make(self, tag: str) -> tuple[str, bytes]:
        self.seq += 1
        mid = '<%s-%d@compact.test>' % (tag, self.seq)
        body = ''.join('%s line %d of message %d\r\n' % (tag, i, self.seq)
                       for i in range(1 + self.seq % 7))
        data = ('From: compact@example.com\r\nTo: %s@example.com\r\n'
                'Subject: %s %d\r\nMessage-ID: %s\r\n\r\n%s'
                % (USER, tag, self.seq, mid, body)).encode()
        return mid, data

    def append(self, imap, tag: str, where: str, findings: list) -> None:
        mid, data = self.make(tag)
        try:
            typ, resp = imap.append('INBOX', None, None, data)
        except Exception as e:  # noqa: BLE001 - reported as a finding
            findings.append('%s: APPEND %s raised %r' % (where, mid, e))
            return
        if typ == 'OK':
            self.sent[mid] = ('append', data)
        else:
            findings.append('%s: APPEND %s refused: %r' % (where, mid, resp))

    def deliver(self, dc, tag: str, where: str, findings: list) -> None:
        mid, data = self.make(tag)
        r = dc.lmtp_deliver([USER], data)
        if r.all_ok():
            self.sent[mid] = ('lmtp', data)
        else:
            findings.append('%s: LMTP %s refused: %r' % (where, mid, r))

    def same(self, mid: str, got: bytes) -> bool:
        how, data = self.sent[mid]
        if how == 'append':
            return got == data
        if not got.endswith(data):
            return False
        added = got[:-len(data)].split(b'\r\n')[:-1]
        return all(h.startswith((b'Return-Path:', b'Delivered-To:')) for h in added)

    def check(self, dc, where: str) -> list[str]:
        """Read everything with a fresh IMAP session and with POP3."""
        findings = []
        try:
            imap = dc.imap(USER)
            typ, _ = imap.select('INBOX', readonly=True)
            if typ != 'OK':
                return ['%s: SELECT INBOX failed' % where]
            fetched = harness.imap_fetch(imap, '1:*', '(BODY.PEEK[])', uid=False) \
                if self.sent else {}
            imap.logout()
            findings += self._compare(where + ' (IMAP)',
                                      [v.get('BODY[]') for v in fetched.values()])
        except Exception as e:  # noqa: BLE001 - reported as a finding
            findings.append('%s: reading with IMAP failed: %r' % (where, e))
        try:
            pop = dc.pop3(USER)
            pop_msgs = []
            for i in range(1, len(pop.list()[1]) + 1):
                try:
                    pop_msgs.append(harness.pop3_multiline(pop, 'RETR %d' % i)[1])
                except poplib.error_proto as e:
                    findings.append('%s: POP3 RETR %d: %s' % (where, i, e))
            pop.quit()
            findings += self._compare(where + ' (POP3)', pop_msgs)
        except Exception as e:  # noqa: BLE001
            findings.append('%s: reading with POP3 failed: %r' % (where, e))
        return findings

    def _compare(self, where, bodies) -> list[str]:
        findings = []
        seen = {}
        for body in bodies:
            if not isinstance(body, bytes):
                findings.append('%s: a message without a body: %r' % (where, body))
                continue
            mid = message_id(body)
            seen[mid] = seen.get(mid, 0) + 1
            if mid not in self.sent:
                findings.append('%s: unexpected message %s' % (where, mid))
            elif not self.same(mid, body):
                findings.append('%s: %s differs from what was sent' % (where, mid))
        for mid in self.sent:
            if seen.get(mid, 0) != 1:
                findings.append('%s: acknowledged %s read %d times'
                                % (where, mid, seen.get(mid, 0)))
        return findings


def verify(dc, where: str) -> list[str]:
    r = dc.doveadm('lmdb', 'verify', user=USER, check=False)
    if r.returncode != 0:
        return ['%s: lmdb verify exit %d: %s' % (where, r.returncode,
                                                 (r.stdout + r.stderr).strip()[-800:])]
    return []


def log_errors_since(dc, pos: int, where: str) -> list[str]:
    pat = re.compile(r'(?:^|\s|\))(?:Error|Panic|Fatal):')
    return ['%s: log: %s' % (where, line) for line in dc.log()[pos:].splitlines()
            if pat.search(line)]


def trial_outcome(r, events, kind, action) -> tuple[bool, str]:
    """(did the fault happen as asked, what it hit)"""
    hit = [ev for ev in events if ev[1] == kind and ev[3] != '-']
    if not hit:
        return False, 'not hit (exit %d)' % r.returncode
    if action.startswith('kill') and r.returncode != -9:
        return False, 'hit but exit %d' % r.returncode
    if action == 'fail' and r.returncode == 0:
        # a failure the command may ignore (cleanup of what isn't there)
        return True, 'ignored failure of %s' % ' '.join(hit[0][4:])
    return True, '%s' % ' '.join(hit[0][4:])


def test_compact_faults():
    with harness.Dovecot('lmdb', extra=CONFIG) as dc:
        inj = Injector(dc)
        dc.start()
        ledger = Ledger()
        findings = []
        for _ in range(4):
            ledger.deliver(dc, 'warm', 'setup', findings)
        # space to reclaim, so that the copy is really smaller
        dc.lmtp_deliver([USER], b'Subject: gone\r\n\r\n' + b'x' * 200_000 + b'\r\n')
        dc.doveadm('expunge', 'mailbox', 'INBOX', 'subject', 'gone', user=USER)
        dc.doveadm('purge', user=USER)
        veteran = dc.imap(USER)
        veteran.select('INBOX')
        ledger.append(veteran, 'veteran', 'setup', findings)

        r, events = inj.doveadm('lmdb', 'compact')
        assert r.returncode == 0, 'dry run: %s' % r.stderr
        dry = counts(events)
        only = os.environ.get('DLMDB_COMPACT_KINDS')
        kinds = only.split(',') if only else KINDS
        keep_going = os.environ.get('DLMDB_COMPACT_KEEP_GOING') == '1'
        for kind in kinds:
            assert dry.get(kind, 0) > 0, 'dry run made no %s: %r' % (kind, events)
        print('  dry run: %s' % ', '.join('%s %d' % (k, dry[k]) for k in kinds))

        trials = [(kind, n, action) for kind in kinds for n in range(1, dry[kind] + 1)
                  for action in ('kill', 'fail') + (('kill-after',) if kind == 'commit' else ())]
        assert not findings, findings
        outcomes = []
        for kind, n, action in trials:
            where = '%s #%d %s' % (kind, n, action)
            log_pos = len(dc.log())
            session = dc.imap(USER)
            session.select('INBOX')
            ledger.append(session, 'before', where, findings)

            r, events = inj.doveadm('lmdb', 'compact', kind=kind, nth=n, action=action)
            hit, outcome = trial_outcome(r, events, kind, action)
            if not hit:
                findings.append('%s: fault %s' % (where, outcome))

            ledger.append(session, 'after', where, findings)
            ledger.append(veteran, 'after-veteran', where, findings)
            ledger.deliver(dc, 'after-lmtp', where, findings)
            try:
                session.logout()
            except Exception as e:  # noqa: BLE001
                findings.append('%s: the long-lived session failed: %r' % (where, e))
            findings += ledger.check(dc, where)
            findings += verify(dc, where)
            r = dc.doveadm('lmdb', 'compact', user=USER, check=False)
            if r.returncode != 0:
                findings.append('%s: the compaction after it failed: %s' % (where, r.stderr))
            findings += log_errors_since(dc, log_pos, where)
            outcomes.append('%-24s %s' % (where, outcome))
            # what a broken environment does next is noise
            if findings and not keep_going:
                break

        ledger.append(veteran, 'end', 'end', findings)
        veteran.logout()
        findings += ledger.check(dc, 'end')
        findings += verify(dc, 'end')
        print('  %d trials, %d with a fault the command ignored'
              % (len(outcomes), sum('ignored' in o for o in outcomes)))
        assert not findings, '%d finding(s) in trials:\n%s\n\n%s' % (
            len(findings), '\n'.join(outcomes), '\n'.join(findings[:60]))


def test_compact_copy_disk_full():
    """The copy's writes fail with ENOSPC: compaction fails and leaves
    everything as it was (same files, compact.tmp gone, every message
    readable, the sessions open before it go on)."""
    with harness.Dovecot('lmdb', extra=CONFIG) as dc:
        inj = Injector(dc)
        dc.start()
        ledger = Ledger()
        findings = []
        for _ in range(6):
            ledger.deliver(dc, 'warm', 'setup', findings)
        envdir = dc.mail_dir(USER)
        copy = '/compact.tmp/data.mdb'
        r, events = inj.doveadm('lmdb', 'compact')
        assert r.returncode == 0, r.stderr
        writes = [ev for ev in events if ev[1] == 'write' and ev[4].endswith(copy)]
        assert writes, 'the dry run wrote no copy: %r' % events
        for n in range(1, len(writes) + 1):
            where = 'copy write #%d' % n
            log_pos = len(dc.log())
            session = dc.imap(USER)
            session.select('INBOX')
            ledger.append(session, 'before', where, findings)
            before = {f: os.stat(os.path.join(envdir, f)).st_ino
                      for f in ('data.mdb', 'lock.mdb')}
            r, events = inj.doveadm('lmdb', 'compact', kind='write', nth=n, action='fail',
                                    error='ENOSPC', match=copy)
            if r.returncode == 0 or 'No space left on device' not in r.stderr:
                findings.append('%s: compaction exit %d: %s' % (where, r.returncode, r.stderr))
            after = {f: os.stat(os.path.join(envdir, f)).st_ino
                     for f in ('data.mdb', 'lock.mdb')}
            if before != after:
                findings.append('%s: files replaced: %r -> %r' % (where, before, after))
            if os.path.exists(os.path.join(envdir, 'compact.tmp')):
                findings.append('%s: compact.tmp left behind: %r'
                                % (where, os.listdir(os.path.join(envdir, 'compact.tmp'))))
            ledger.append(session, 'after', where, findings)
            ledger.deliver(dc, 'after-lmtp', where, findings)
            session.logout()
            findings += ledger.check(dc, where)
            findings += verify(dc, where)
            findings += log_errors_since(dc, log_pos, where)
        r = dc.doveadm('lmdb', 'compact', user=USER, check=False)
        if r.returncode != 0:
            findings.append('the compaction after them failed: %s' % r.stderr)
        findings += ledger.check(dc, 'end')
        assert not findings, '\n'.join(findings[:60])
