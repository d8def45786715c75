"""Checking one crash state on a real Dovecot.

A CheckServer is a private Dovecot (lmdb storage, the workload's
settings) whose users are created on the fly: each state is copied into
the mail root of a user of its own (cs00001, ...), which no process has
opened before, so every process that touches it is fresh. The server is
restarted every `batch` states; its log is read after each batch and
every line is given to the state whose user it names (or whose process
it names by pid).

check_state() runs, in this order (the first session after the crash
is what recovers it):
  IMAP    SELECT every mailbox, UID FETCH UID FLAGS BODY.PEEK[]
  POP3    UIDL and TOP n 0 of INBOX
  doveadm lmdb verify
  LMTP    a canary delivery, whose UID must be above every UID
          acknowledged in INBOX before the crash (no UID given twice)
and compares with the ledger (ledger.Ledger.expect()).
"""

import imaplib
import os
import poplib
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'integration'))

import harness  # noqa: E402
import fsmodel  # noqa: E402
from workload import CONFIG, MID_RE  # noqa: E402

# findings that fail a state; the rest are reported
FAIL = ('lost', 'duplicate', 'unexpected', 'future', 'body', 'uid', 'uidl', 'uidvalidity',
        'flags', 'verify', 'crash', 'canary', 'session')
LOG_CRASH_RE = re.compile(r'Panic:|Fatal:|killed with signal|core dumped|assertion failed')
LOG_ERROR_RE = re.compile(r'(?:^|\s|\))(?:Error|Warning):')
USER_RE = re.compile(r'\((cs\d{5})\)')
PID_RE = re.compile(r'\((cs\d{5})\)<(\d+)>')
CHILD_RE = re.compile(r'child (\d+) ')
# Dovecot 2.3.19's own assertion, reproduced on maildir and sdbox with the
# same dovecot.list.index pair (see README.md): reported, not failed
KNOWN_DOVECOT_PANIC_RE = re.compile(
    r'Panic: file mail-transaction-log\.c: line \d+ \(mail_transaction_log_set_mailbox_'
    r'sync_pos\): assertion failed: \(file_offset >= log->head->last_read_hdr_tail_offset\)')
SIGNAL_PID_RE = re.compile(r'child (\d+) killed with signal 6')
# errors of the storage itself or of LMDB (not of Dovecot's index code)
LMDB_ERROR_RE = re.compile(r'(?:Error|Fatal|Panic):.*(?:\blmdb: |\bmdb_\w+\()')


class Finding:
    def __init__(self, cat, text):
        self.cat = cat
        self.text = text

    def __repr__(self):
        return '%s: %s' % (self.cat, self.text)


class CheckServer:
    def __init__(self, batch=25):
        self.batch = batch
        self.dc = None
        self.count = 0
        self.in_batch = []        # [(user, result)] waiting for the log
        self.n_users = 0

    def _start(self):
        dc = harness.Dovecot('lmdb', extra=CONFIG)
        uid, gid = dc.uid, dc.gid
        # imap and pop3 serve one client per process by default; so does
        # lmtp here, so that no process carries anything from one state
        # to the next
        dc.extra = CONFIG + (
            'service lmtp {\n  service_count = 1\n}\n'
            'passdb {\n  driver = static\n  args = password=testpass\n}\n'
            'userdb {\n  driver = static\n  args = uid=%d gid=%d home=%s/%%u\n}\n'
            % (uid, gid, dc.path('home')))
        dc.start()
        self.dc = dc

    def new_user(self):
        if self.dc is None:
            self._start()
        self.n_users += 1
        user = 'cs%05d' % self.n_users
        home = self.dc.path('home', user)
        os.makedirs(home)
        os.chmod(home, 0o700)
        os.chown(home, self.dc.uid, self.dc.gid)
        return user, home

    def install(self, files, user, home):
        root = os.path.join(home, 'lmdb')
        fsmodel.write_tree(files, root)
        for dirpath, dirnames, filenames in os.walk(home):
            os.chown(dirpath, self.dc.uid, self.dc.gid)
            os.chmod(dirpath, 0o700)
            for fn in filenames:
                p = os.path.join(dirpath, fn)
                os.chown(p, self.dc.uid, self.dc.gid)
                os.chmod(p, 0o600)
        return root

    def finish(self, result):
        """queue a checked state for the log pass; run it at batch end"""
        self.in_batch.append(result)
        self.count += 1
        if len(self.in_batch) >= self.batch:
            self.flush()

    def flush(self):
        if self.dc is None:
            return
        self.dc.stop()
        log = self.dc.log()
        self._attribute(log)
        self.dc.cleanup()
        self.dc = None
        self.in_batch = []

    def _attribute(self, log):
        by_user = {r.user: r for r in self.in_batch}
        pid_user = {}             # pid -> the user it served last (so far)
        known_panics = set()      # pids that hit KNOWN_DOVECOT_PANIC_RE
        for r in self.in_batch:
            for pid in r.pids:
                pid_user[str(pid)] = r.user
        for line in log.splitlines():
            m = PID_RE.search(line)
            if m:
                pid_user[m.group(2)] = m.group(1)
            m = USER_RE.search(line)
            user = m.group(1) if m else None
            if user is None:
                m = CHILD_RE.search(line)
                if m:
                    user = pid_user.get(m.group(1))
            if user in by_user:
                by_user[user].log.append(line)
            m = PID_RE.search(line)
            if KNOWN_DOVECOT_PANIC_RE.search(line) and m:
                known_panics.add(m.group(2))
            m = SIGNAL_PID_RE.search(line)
            if (KNOWN_DOVECOT_PANIC_RE.search(line) or
                    (m and m.group(1) in known_panics)) and user in by_user:
                by_user[user].add('dovecot-panic', line)
            elif LOG_CRASH_RE.search(line) and not self.dc.is_benign(line):
                target = by_user.get(user)
                if target is None:
                    # unattributable: every state of the batch is suspect
                    for r in self.in_batch:
                        r.add('crash', 'log (unattributed): %s' % line)
                else:
                    target.add('crash', 'log: %s' % line)
            elif LOG_ERROR_RE.search(line) and user in by_user:
                by_user[user].log_errors.append(line)
                if LMDB_ERROR_RE.search(line):
                    by_user[user].add('lmdb-error', line)

    def close(self):
        self.flush()


class Result:
    def __init__(self, user):
        self.user = user
        self.findings = []
        self.notes = []
        self.log_errors = []
        self.log = []             # every log line of the state's processes
        self.pids = set()         # processes known to have served it

    def add(self, cat, text):
        self.findings.append(Finding(cat, text))

    @property
    def failed(self):
        return any(f.cat in FAIL for f in self.findings)


def _body_ok(ledger, mid, got):
    """an APPEND as sent; an LMTP delivery as sent after the
    Return-Path/Delivered-To headers LMTP prepends"""
    want = harness.crlf(ledger.data(mid))
    how = ledger.messages[mid]['how']
    if how == 'append':
        return got == want
    if not got.endswith(want):
        return False
    added = got[:-len(want)].split(b'\r\n')[:-1]
    return all(h.startswith((b'Return-Path:', b'Delivered-To:')) for h in added)


RETRIES = 2


def _fetch_all(c, mailbox, res):
    """{uid: FETCH data}; a message that can't be read (Dovecot answers
    NO [PARSE] for the whole FETCH) is left out and reported"""
    try:
        return harness.imap_fetch(c, '1:*', '(UID FLAGS BODY.PEEK[])')
    except harness.HarnessError:
        pass
    out = {}
    for uid, d in harness.imap_fetch(c, '1:*', '(UID FLAGS)').items():
        try:
            out[uid] = dict(d, **harness.imap_fetch(c, str(uid), '(BODY.PEEK[])')[uid])
        except (harness.HarnessError, KeyError) as e:
            res.add('body', '%s UID %d can\'t be read: %s' % (mailbox, uid, str(e)[-200:]))
    return out


def _imap_read(dc, user, ledger, res):
    """{(mailbox, mid): [(uid, flags)]} and {mailbox: uidvalidity} (of
    the mailboxes read whole).

    A mailbox whose SELECT or FETCH fails with an internal error (or
    whose session the server ends) is read again in a new session, up to
    RETRIES times: Dovecot's index code fails the first sync of a
    transaction log whose last append was torn ("Unexpected garbage at
    EOF"), marks the log corrupted and fails every later sync of that
    session; the next one recreates the log. Each retry is reported
    ('retry'); only a mailbox that can't be read at all fails."""
    seen, uidvalidity = {}, {}
    c = None
    for mailbox in ledger.mailboxes:
        for attempt in range(RETRIES + 1):
            try:
                if c is None:
                    c = dc.imap(user)
                got = _read_mailbox(c, mailbox, ledger, res)
                break
            except (imaplib.IMAP4.error, OSError, harness.HarnessError) as e:
                what = '%s: %s' % (mailbox, str(e)[-300:])
                try:
                    c.logout()
                except Exception:  # noqa: BLE001 - it is gone either way
                    pass
                c = None
                if attempt == RETRIES:
                    res.add('session', 'reading %s' % what)
                    got = None
                else:
                    res.add('retry', 'reading %s; again in a new session' % what)
        if got is None:
            continue
        uv, msgs = got
        uidvalidity[mailbox] = uv
        for key, val in msgs:
            seen.setdefault(key, []).append(val)
    if c is not None:
        try:
            c.logout()
        except (imaplib.IMAP4.error, OSError):
            pass
    return seen, uidvalidity


def _read_mailbox(c, mailbox, ledger, res):
    """(UIDVALIDITY, [((mailbox, mid), (uid, flags))]); raises on a
    failed SELECT or FETCH"""
    typ, data = c.select(mailbox)
    if typ != 'OK':
        raise harness.HarnessError('SELECT: %r' % data)
    exists = int(data[0] or 0)
    uv = int(c.untagged_responses.get('UIDVALIDITY', [b'0'])[-1])
    out = []
    if exists == 0:
        return uv, out
    for uid, d in _fetch_all(c, mailbox, res).items():
        body = d.get('BODY[]')
        if not isinstance(body, bytes):
            res.add('body', '%s UID %d: no body (%r)' % (mailbox, uid, d))
            continue
        m = MID_RE.search(body)
        mid = m.group(1).decode() if m else '?'
        flags = {f for f in d.get('FLAGS', []) if f != '\\Recent'}
        if mid not in ledger.messages:
            res.add('unexpected', '%s UID %d: unknown message %s' % (mailbox, uid, mid))
            continue
        if not _body_ok(ledger, mid, body):
            res.add('body', '%s UID %d %s differs from what was sent (%d bytes)'
                    % (mailbox, uid, mid, len(body)))
        out.append(((mailbox, mid), (uid, flags)))
    return uv, out


def _pop3_read(dc, user, res):
    """{Message-ID: [UIDL]} of INBOX, or None (retried once, as IMAP)"""
    for attempt in range(RETRIES + 1):
        out = {}
        try:
            p = dc.pop3(user)
            for line in p.uidl()[1]:
                num, uidl = line.decode().split()
                try:
                    m = MID_RE.search(b'\r\n'.join(p.top(int(num), 0)[1]))
                except poplib.error_proto as e:
                    res.add('body', 'POP3 TOP %s (UIDL %s): %s' % (num, uidl, e))
                    continue
                out.setdefault(m.group(1).decode() if m else '?', []).append(uidl)
            p.quit()
            return out
        except (poplib.error_proto, OSError) as e:
            if attempt == RETRIES:
                res.add('session', 'POP3: %r' % e)
            else:
                res.add('retry', 'POP3: %r; again in a new session' % e)
    return None


def _verify(dc, user, res):
    """doveadm lmdb verify, once more if it failed (it opens every
    mailbox: a process that meets a torn transaction log first fails,
    the next one finds it recreated)"""
    for attempt in range(2):
        r = dc.doveadm('lmdb', 'verify', user=user, check=False)
        if r.returncode == 0:
            return
        out = (r.stdout + '\n' + r.stderr).strip()
        if attempt == 0:
            res.add('retry', 'lmdb verify exit %d; once more: %s' % (r.returncode, out[-300:]))
    res.add('verify', 'exit %d: %s' % (r.returncode, out[-1500:]))


def _flags_str(fl):
    return '(%s)' % ' '.join(sorted(fl))


def index_log(mailbox):
    return 'mailboxes/%s/lmdb-Mails/dovecot.index.log' % mailbox


def compare(ledger, c, seen, uidvalidity, pop, res, model=None):
    exp, by_state = ledger.expect(c)
    future_adds = {(o.args.get('dst') or o.args.get('mailbox'), o.args.get('mid'))
                   for o in by_state['future'] if o.kind in ('lmtp', 'append', 'copy', 'move')}
    for key, got in sorted(seen.items()):
        mailbox, mid = key
        if len(got) > 1:
            res.add('duplicate', '%s %s present %d times (UIDs %s)'
                    % (mailbox, mid, len(got), [u for u, _f in got]))
        e = exp.get(key)
        if e is None:
            cat = 'future' if key in future_adds else 'unexpected'
            res.add(cat, '%s %s UID %d is there but %s' % (
                mailbox, mid, got[0][0], 'was not saved yet' if cat == 'future'
                else 'was expunged or moved away (acknowledged) or never saved'))
            continue
        uid, flags = got[0]
        known = ledger.uid_at(mailbox, mid, c)
        if e.must and known is not None and uid != known:
            res.add('uid', '%s %s has UID %d, acknowledged as %d' % (mailbox, mid, uid, known))
        if not any(flags == f for f in e.flags):
            hist = ledger.flag_history(key, c)
            older = [i for i, (f, _a) in enumerate(hist[:-1]) if f == flags]
            if older:
                # lost: the changes acknowledged after the state it shows
                first_lost = hist[older[-1] + 1][1]
                synced = model is not None and model.synced_between(
                    index_log(mailbox), first_lost, c)
                res.add('flag-rollback-synced' if synced else 'flag-rollback',
                        '%s %s flags %s, an older acknowledged state (last acknowledged '
                        '%s%s)' % (mailbox, mid, _flags_str(flags), _flags_str(hist[-1][0]),
                                   '; the index log was synced after the change'
                                   if synced else ''))
            else:
                res.add('flags', '%s %s flags %s, expected one of %s' % (
                    mailbox, mid, _flags_str(flags), [_flags_str(f) for f in e.flags]))
    read = set(uidvalidity)
    for key, e in sorted(exp.items()):
        if key in seen or key[0] not in read:
            continue
        if e.move_to is not None:
            if e.move_to[0] in read and e.move_to not in seen:
                res.add('lost', '%s %s: in neither mailbox of its move in flight' % key)
            continue
        if e.must and not e.maybe:
            res.add('lost', '%s %s acknowledged but missing' % key)
    for mailbox, uv in uidvalidity.items():
        if ledger.uidvalidity.get(mailbox) not in (None, uv):
            res.add('uidvalidity', '%s UIDVALIDITY %d, was %d'
                    % (mailbox, uv, ledger.uidvalidity[mailbox]))
    for (mailbox, mid), e in exp.items():
        if mailbox != 'INBOX' or (mailbox, mid) not in seen or pop is None:
            continue
        want = ledger.uidls.get(mid)
        have = pop.get(mid)
        if have is None:
            res.add('uidl', '%s in IMAP INBOX but not listed by POP3' % mid)
        elif want is not None and e.must and have != [want]:
            res.add('uidl', '%s UIDL %s, was %s' % (mid, have, want))


def max_acked_uid(ledger, c, mailbox='INBOX'):
    """the highest UID of a message acknowledged in mailbox before c"""
    best = 0
    for (m, mid) in ledger.initial:
        if m == mailbox:
            best = max(best, ledger.initial_uids.get(m + '\0' + mid) or 0)
    for op in ledger.ops:
        if op.ack is None or op.ack > c:
            continue
        key = op.created()
        if key is not None and key[0] == mailbox:
            best = max(best, op.uid or 0)
    return best


def _canary(dc, user, ledger, c, res):
    mid = '<canary-%s@crashstate.test>' % user
    try:
        lc = harness.LmtpClient('127.0.0.1', dc.ports['lmtp'])
        try:
            # its log lines name the user only once it has one: a crash
            # before that is known by pid
            res.pids.add(dc.server_pid(lc.sock, 'lmtp'))
            r = lc.deliver('canary@example.com', [user], b'Subject: canary\r\nMessage-ID: ' +
                           mid.encode() + b'\r\n\r\ncanary\r\n')
        finally:
            lc.quit()
    except (harness.HarnessError, OSError) as e:
        res.add('canary', 'LMTP delivery after the crash failed: %s' % str(e)[-300:])
        return
    if not r.all_ok():
        res.add('canary', 'LMTP delivery after the crash refused: %r' % r)
        return
    try:
        cl = dc.imap(user)
        cl.select('INBOX')
        typ, data = cl.uid('SEARCH', 'HEADER', 'Message-ID', mid)
        cl.logout()
        uids = [int(u) for u in data[0].split()] if typ == 'OK' else []
    except (imaplib.IMAP4.error, OSError) as e:
        res.add('session', 'IMAP after the canary: %r' % e)
        return
    floor = max_acked_uid(ledger, c)
    if len(uids) != 1:
        res.add('canary', 'canary found %d times' % len(uids))
    elif uids[0] <= floor:
        res.add('canary', 'canary got UID %d, not above the acknowledged UID %d (UID reuse)'
                % (uids[0], floor))


def check_state(server, files, ledger, c, keep_dir=None, model=None):
    """Install files as a fresh user's mail root, check, return a Result
    (its log findings arrive when the server's batch ends)."""
    user, home = server.new_user()
    res = Result(user)
    server.install(files, user, home)
    if keep_dir is not None:
        shutil.copytree(os.path.join(home, 'lmdb'), keep_dir)
    dc = server.dc
    seen, uidvalidity = _imap_read(dc, user, ledger, res)
    pop = _pop3_read(dc, user, res)
    compare(ledger, c, seen, uidvalidity, pop, res, model)
    _verify(dc, user, res)
    _canary(dc, user, ledger, c, res)
    return res
