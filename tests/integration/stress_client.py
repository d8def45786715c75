"""One client of the stress load generator (stress.py): a session loop
running a weighted random mix of IMAP commands, each reply classified as
ok, expected NO (predicted by the client), benign race (BENIGN) or failed,
and what it learns recorded in the run's Ledger."""

from __future__ import annotations

import base64
import hashlib
import random
import re
import time

from stress_imap import ClientBug, Dropped, ImapConn, fetch_items, fmt_uidset, \
    parse, parse_uidset
from stress_ledger import MID_RE

KEYWORDS = ('$Stress1', '$Stress2', '$Label3')

# Benign NO replies: (response code, text the reply starts with, scope,
# why). Scopes: 'any' = whatever the mailbox; 'create' = CREATE of one of the
# client's own scratch folders that it knows to be missing; 'shared' = the
# command names a scratch folder (or runs in a selected one) and the scratch
# folders are shared between clients (Config.shared_scratch). None matches
# anything. With private scratch folders (the default) every other NO about
# them is predicted by the client itself (see Client.cmd's expect).
BENIGN = [
    ('EXPUNGEISSUED', None, 'any',
     'another session expunged some of the messages after this session last '
     'synced (RFC 2180 4.1.2/4.2.2: Dovecot answers NO [EXPUNGEISSUED] and '
     'changes nothing; COPY/MOVE then copy nothing)'),
    ('ALREADYEXISTS', None, 'create',
     "another session's list index sync opened the folder between CREATE's "
     'mkdir and its index creation and initialised the index itself, as '
     'Dovecot does for dbox (sdbox-sync.c: "could be just a race condition '
     'where we opened the mailbox between mkdir and index creation"); the '
     'folder exists afterwards'),
    ('NONEXISTENT', None, 'shared',
     'another client deleted or renamed the scratch folder a moment before '
     '(DELETE, RENAME source)'),
    ('', "Mailbox doesn't exist: ", 'shared',
     'the same for SELECT, EXAMINE and STATUS, which Dovecot 2.3 answers without '
     'a response code (2.4 with NONEXISTENT)'),
    ('', 'Mailbox was deleted under us', 'shared',
     'the scratch folder was deleted by another client while this command '
     'had it open (STATUS, APPEND, COPY/MOVE)'),
    ('', 'New mails were added to mailbox during deletion', 'shared',
     'DELETE: another client appended or copied into the scratch folder '
     'while it was being deleted; Dovecot refuses the delete rather than '
     'lose that mail (index_storage_mailbox_delete)'),
    ('TRYCREATE', None, 'shared',
     'APPEND/COPY/MOVE target scratch folder was just deleted or renamed by '
     'another client (RFC 3501 6.3.11)'),
    ('ALREADYEXISTS', None, 'shared',
     'another client created (or renamed something to) this scratch folder '
     'first (CREATE, RENAME target)'),
]
# Shared scratch folders only: a session whose selected scratch folder
# another client deleted or renamed
# is disconnected by Dovecot with one of these BYEs (its index is gone; RFC
# 3501 lets the server end the session). Benign only while a DELETE/RENAME
# of that folder was under way; anywhere else it is a failure.
BENIGN_BYE = re.compile(r'^(IMAP session state is inconsistent, please relogin\.'
                        r'|[A-Z ]+ failed: Mailbox was deleted under us)$')

DIGEST_RE = re.compile(rb'(?im)^X-Stress-Digest:[ \t]*([0-9a-f]{64})')
CODE_RE = re.compile(r'\[([A-Z-]+)(?: ([^\]]*))?\]')


def _line_pool():
    rng = random.Random(0)
    words = ('alpha', 'beta', 'gamma', 'delta', 'lmdb', 'stress', 'dovecot', 'index')
    return [(' '.join(rng.choice(words) for _ in range(rng.randint(3, 11))) + '\r\n').encode()
            for _ in range(512)]


LINES = _line_pool()


def make_message(rng: random.Random, mid: str, size: int) -> bytes:
    """A message of about size bytes whose body's SHA-256 is in its header;
    a quarter are multipart with a base64 part (for BODYSTRUCTURE)."""
    text = b''.join(rng.choices(LINES, k=size // 46 + 1))
    headers = ['From: stress%d@example.com' % rng.randint(1, 9),
               'To: testuser@example.com',
               'Subject: stress %s' % mid.strip('<>').split('@')[0],
               'Date: Mon, 2 Nov 2026 10:%02d:%02d +0000' % (rng.randint(0, 59),
                                                            rng.randint(0, 59)),
               'Message-ID: ' + mid, 'MIME-Version: 1.0']
    if rng.random() < 0.25:
        raw = rng.randbytes(min(size // 3, 20000) + 1)
        b64 = base64.encodebytes(raw).replace(b'\n', b'\r\n')
        body = (b'--b0undary\r\nContent-Type: text/plain\r\n\r\n' + text +
                b'--b0undary\r\nContent-Type: application/octet-stream\r\n'
                b'Content-Transfer-Encoding: base64\r\n\r\n' + b64 + b'--b0undary--\r\n')
        headers.append('Content-Type: multipart/mixed; boundary="b0undary"')
    else:
        body = text
        headers.append('Content-Type: text/plain')
    headers.append('X-Stress-Digest: ' + hashlib.sha256(body).hexdigest())
    return '\r\n'.join(headers).encode() + b'\r\n\r\n' + body


def pick_size(rng: random.Random, profile: str) -> int:
    """Message sizes: 'default' mostly 0.3-3 KB, some to 30 KB, a few to
    200 KB (about 11 KB on average); 'large' twenty times that (space
    tests: about 220 KB on average, up to 4 MB)."""
    r = rng.random()
    size = (rng.randint(300, 3000) if r < 0.70 else
            rng.randint(3000, 30000) if r < 0.95 else rng.randint(30000, 200000))
    return size * 20 if profile == 'large' else size


class Client:
    def __init__(self, run, cid):
        self.run, self.cid = run, cid
        self.cfg, self.led, self.res = run.cfg, run.ledger, run.result
        self.rng = random.Random('%d-%d' % (self.cfg.seed, cid))
        self.conn = None
        self.appends = 0
        self.scratch = self.cfg.scratch_for(cid)
        # private scratch folders: whether each exists (only we change them)
        self.have = None if self.cfg.shared_scratch else {n: False for n in self.scratch}
        self.scratch_v = {}        # our scratch folder -> its UIDVALIDITY, once seen
        self._unselect()

    def _unselect(self):
        self.box = None            # selected mailbox name
        self.v = None              # its UIDVALIDITY
        self.readonly = False
        self.exists = 0
        self.known = {}            # uid -> Message-ID in the selected mailbox
        self.box_moves = 0         # scratch_moves of box when selected

    # one command, classified and recorded
    def cmd(self, name, line, literal=None, box=None, on_continue=None, expect=None):
        """Run a command. box: the mailbox (or tuple of mailboxes) it concerns.
        expect: [(code, text prefix)], one of which its NO must match: the
        client knows the command must fail (its own missing scratch folder)."""
        t0 = time.monotonic()
        try:
            r = self.conn.command(line, literal, on_continue)
        except Dropped as e:
            if self.cfg.shared_scratch and str(e).startswith('BYE: ') and \
                    BENIGN_BYE.match(str(e)[5:]) and self.cfg.is_scratch(self.box) and \
                    self.led.scratch_moves.get(self.box, 0) != self.box_moves:
                with self.res.lock:
                    self.res.reconnects += 1
                    self.res.benign['BYE selected scratch deleted'] = \
                        self.res.benign.get('BYE selected scratch deleted', 0) + 1
                raise
            self.res.record(name, 'failed', time.monotonic() - t0, self.run.elapsed(),
                            self.cid, '%s -> dropped: %s' % (line[:80], e), self.conn.trace)
            raise
        secs = time.monotonic() - t0
        self.untagged(r.untagged)
        code = r.code.split(' ')[0]
        reply = '%s -> %s' % (line[:80], r.line())
        if r.status == 'OK':
            outcome = 'ok'
            if expect and name in ('COPY', 'MOVE') and \
                    r.text.startswith('No messages found'):
                # the UIDs were expunged by another session before this
                # one heard of it: Dovecot answers an empty UID set OK
                # before it looks at the (missing) destination
                outcome = 'benign'
                with self.res.lock:
                    self.res.benign['OK No messages found'] = \
                        self.res.benign.get('OK No messages found', 0) + 1
            elif expect:
                outcome, reply = 'failed', reply + ' (expected NO)'
        elif r.status == 'NO' and expect and any(
                c == code and (p is None or r.text.startswith(p)) for c, p in expect):
            outcome = 'expected'
        else:
            boxes = box if isinstance(box, tuple) else (box,)
            scopes = {'any'}
            if self.cfg.shared_scratch and any(self.cfg.is_scratch(x) for x in boxes):
                scopes.add('shared')
            if name == 'CREATE' and self.have is not None and not expect:
                scopes.add('create')
            rule = next((b for b in BENIGN if b[0] == code and b[2] in scopes and
                         (b[1] is None or r.text.startswith(b[1]))), None)
            outcome = 'benign' if rule and r.status == 'NO' else 'failed'
            if outcome == 'benign':
                key = code or 'NO ' + rule[1].strip()
                with self.res.lock:
                    self.res.benign[key] = self.res.benign.get(key, 0) + 1
        self.res.record(name, outcome, secs, self.run.elapsed(), self.cid, reply,
                        self.conn.trace)
        return r

    def saw(self, v, name):
        """Mailbox name has UIDVALIDITY v (APPENDUID, COPYUID, SELECT...)."""
        self.led.see_name(v, name)
        if self.have is not None and name in self.have:
            self.scratch_v[name] = v

    def missing(self, box) -> bool:
        """One of our private scratch folders that doesn't exist now."""
        return self.have is not None and self.have.get(box) is False

    def gone(self, box):
        """expect= for a command on box that must fail if box is missing."""
        # (2.4 adds the response code [NONEXISTENT])
        return [('', "Mailbox doesn't exist: "), ('NONEXISTENT', "Mailbox doesn't exist: ")] \
            if self.missing(box) else None

    def untagged(self, untagged):
        for parts in untagged:
            first = parts[0]
            m = re.match(rb'\* (\d+) EXISTS', first)
            if m:
                self.exists = int(m.group(1))
                continue
            m = re.match(rb'\* VANISHED (?:\(EARLIER\) )?([\d:,]+)', first)
            if m and self.v is not None:
                uids = parse_uidset(m.group(1).decode())
                with self.led.lock:
                    self.led.vanished.update((self.v, u) for u in uids)
                for u in uids:
                    self.known.pop(u, None)
                self.exists -= len(uids)
                continue
            if re.match(rb'\* \d+ EXPUNGE', first):
                raise ClientBug('EXPUNGE although QRESYNC is enabled: %r' % first)
            m = re.match(rb'\* OK \[COPYUID (\d+) ([\d:,]+) ([\d:,]+)\]', first)
            if m:
                self.copied(m)
                continue
            if re.match(rb'\* \d+ FETCH ', first) and self.v is not None:
                for uid, items in fetch_items([parts]):
                    self.fetched(uid, items)

    def fetched(self, uid, items):
        for key, val in items.items():
            if key.startswith('BODY[') and isinstance(val, bytes):
                m = MID_RE.search(val)
                if m and (key == 'BODY[]' or 'MESSAGE-ID' in key):
                    mid = m.group(1).decode()
                    self.known[uid] = mid
                    self.led.learn(self.v, uid, mid, 'FETCH')
                if key == 'BODY[]':
                    self.check_digest(uid, val)

    def check_digest(self, uid, raw):
        head, sep, body = raw.partition(b'\r\n\r\n')
        m = DIGEST_RE.search(head)
        if m and hashlib.sha256(body).hexdigest().encode() != m.group(1):
            with self.led.lock:
                self.led.violations.append('%s UID %d: body differs from its digest (%d bytes)'
                                           % (self.box, uid, len(raw)))

    def copied(self, m, dest=None):
        dv = int(m.group(1))
        src = parse_uidset(m.group(2).decode())
        dst = parse_uidset(m.group(3).decode())
        if dest:
            self.saw(dv, dest)
        if len(src) != len(dst):
            raise ClientBug('COPYUID sets differ in size: %r' % m.group(0))
        for s, d in zip(src, dst):
            mid = self.known.get(s) or self.led.instances.get((self.v, s))
            if mid is None:
                with self.led.lock:
                    self.led.violations.append('COPYUID of unknown UID %d/%d' % (self.v, s))
            else:
                self.led.learn(dv, d, mid, 'COPYUID')

    # -- sessions --------------------------------------------------------------
    def loop(self):
        while not self.run.stop.is_set():
            try:
                self.session()
            except Dropped:
                pass                  # recorded by cmd(); log in again
            except Exception as e:    # noqa: B902 - a client bug is a failure too
                import traceback
                self.res.record('client', 'failed', 0, self.run.elapsed(), self.cid,
                                'client error: %s\n%s' % (e, traceback.format_exc()),
                                self.conn.trace if self.conn else ())
            finally:
                if self.conn:
                    self.conn.close()
                    self.conn = None
                self._unselect()

    def session(self):
        cfg = self.cfg
        t0 = time.monotonic()
        try:
            self.conn = ImapConn(cfg.host, cfg.imap_port, cfg.cmd_timeout)
        except (OSError, Dropped) as e:
            self.res.record('connect', 'failed', time.monotonic() - t0, self.run.elapsed(),
                            self.cid, str(e))
            time.sleep(0.5)
            return
        self.res.record('connect', 'ok', time.monotonic() - t0)
        if self.cmd('LOGIN', 'LOGIN "%s" "%s"' % (cfg.user, cfg.password)).status != 'OK':
            return
        if self.cmd('ENABLE', 'ENABLE QRESYNC').status != 'OK':
            return
        if self.have is not None and None in self.have.values():
            self.relearn_scratch()
        left = self.rng.randint(1, 2 * cfg.logout - 1) if cfg.logout else None
        while not self.run.stop.is_set() and (left is None or left > 0):
            self.step()
            if left is not None:
                left -= 1
        self.cmd('LOGOUT', 'LOGOUT')

    def step(self):
        w = dict(self.cfg.weights)
        if self.box is None:
            for k in ('fetch', 'store', 'store_deleted', 'expunge', 'copy', 'move', 'idle'):
                w[k] = 0
        if self.readonly:
            for k in ('store', 'store_deleted', 'expunge', 'move'):
                w[k] = 0
        if self.exists > self.cfg.max_messages:
            w['store_deleted'] *= 4
            w['expunge'] *= 3
            w['append'] //= 4
        elif self.exists < self.cfg.max_messages // 4:
            w['store_deleted'] //= 3
        ops = [k for k in w if w[k] > 0]
        op = self.rng.choices(ops, [w[k] for k in ops])[0]
        getattr(self, 'op_' + op)()

    def any_box(self, scratch_ok=True):
        names = self.cfg.folders + (self.scratch if scratch_ok else ())
        return self.rng.choice(names)

    def pick_known(self, n):
        uids = list(self.known)
        return self.rng.sample(uids, min(n, len(uids))) if uids else []

    # -- operations --------------------------------------------------------
    def op_select(self, examine=False):
        # scratch folders are selected rarely: when shared, another
        # client deleting them ends this session
        box = self.any_box(scratch_ok=self.rng.random() < 0.15)
        verb = 'EXAMINE' if examine else 'SELECT'
        self._unselect()
        moves = self.led.scratch_moves.get(box, 0)
        r = self.cmd(verb, '%s "%s"' % (verb, box), box=box, expect=self.gone(box))
        if r.status != 'OK':
            return
        for parts in r.untagged:
            m = re.match(rb'\* OK \[UIDVALIDITY (\d+)\]', parts[0])
            if m:
                self.v = int(m.group(1))
            m = re.match(rb'\* (\d+) EXISTS', parts[0])
            if m:
                self.exists = int(m.group(1))
        self.box, self.readonly, self.box_moves = box, examine, moves
        if self.v is None:
            raise ClientBug('%s %s without UIDVALIDITY' % (verb, box))
        self.saw(self.v, box)
        # learn the Message-IDs of the newest messages
        self.cmd('FETCH', 'UID FETCH %d:* (FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])'
                 % max(1, self.uidnext_hint(r) - 60))

    @staticmethod
    def uidnext_hint(r):
        for parts in r.untagged:
            m = re.match(rb'\* OK \[UIDNEXT (\d+)\]', parts[0])
            if m:
                return int(m.group(1))
        return 1

    def op_examine(self):
        self.op_select(examine=True)

    def op_status(self):
        for box in self.rng.sample(self.cfg.folders + self.scratch, 3):
            r = self.cmd('STATUS', 'STATUS "%s" (MESSAGES UNSEEN UIDNEXT UIDVALIDITY '
                         'HIGHESTMODSEQ)' % box, box=box, expect=self.gone(box))
            if r.status == 'OK':
                for parts in r.untagged:
                    m = re.search(rb'UIDVALIDITY (\d+)', parts[0])
                    if m and parts[0].startswith(b'* STATUS'):
                        self.saw(int(m.group(1)), box)

    def op_list(self):
        self.cmd('LIST', 'LIST "" "*"')

    def op_append(self):
        box = self.box if self.box and self.rng.random() < 0.6 else self.any_box()
        self.appends += 1
        mid = '<s%d-c%d-%d@stress.test>' % (self.cfg.seed, self.cid, self.appends)
        msg = make_message(self.rng, mid, pick_size(self.rng, self.cfg.size_profile))
        flags = self.rng.choice(['', '(\\Seen) ', '(\\Flagged $Stress1) ', ''])
        with self.led.lock:
            self.led.unacked.add(mid)
        r = self.cmd('APPEND', 'APPEND "%s" %s{%d+}' % (box, flags, len(msg)), msg, box=box,
                     expect=[('TRYCREATE', None)] if self.missing(box) else None)
        with self.led.lock:
            self.led.unacked.discard(mid)
            if r.status == 'OK':
                self.led.appended.add(mid)
        m = re.match(r'APPENDUID (\d+) (\d+)$', r.code)
        if r.status == 'OK' and m:
            v, uid = int(m.group(1)), int(m.group(2))
            self.saw(v, box)
            self.led.learn(v, uid, mid, 'APPENDUID')
            if v == self.v:
                self.known[uid] = mid

    def uid_range(self):
        """A few UIDs: known ones, or a range towards the end."""
        if self.known and self.rng.random() < 0.7:
            return fmt_uidset(self.pick_known(self.rng.randint(1, 5)))
        top = max(self.known) if self.known else 1
        lo = max(1, top - self.rng.randint(0, 20))
        return '%d:*' % lo

    def op_fetch(self):
        items = self.rng.choice([
            '(FLAGS)', '(UID FLAGS RFC822.SIZE INTERNALDATE)', '(BODY.PEEK[])',
            '(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID SUBJECT FROM)])', '(BODYSTRUCTURE)',
            '(ENVELOPE RFC822.SIZE)', '(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])'])
        self.cmd('FETCH', 'UID FETCH %s %s' % (self.uid_range(), items), box=self.box)

    def op_store(self):
        flags = self.rng.choice(['\\Seen', '\\Flagged', '\\Answered', '\\Seen \\Flagged',
                                 ' '.join(self.rng.sample(KEYWORDS, 2)), KEYWORDS[0]])
        sign = self.rng.choice('+-')
        silent = '.SILENT' if self.rng.random() < 0.3 else ''
        self.cmd('STORE', 'UID STORE %s %sFLAGS%s (%s)' % (self.uid_range(), sign, silent, flags),
                 box=self.box)

    def op_store_deleted(self):
        uids = self.pick_known(self.rng.randint(1, 4))
        if not uids:
            return self.op_fetch()
        if self.rng.random() < 0.1:
            return self.cmd('STORE', 'UID STORE %s -FLAGS (\\Deleted)' % fmt_uidset(uids),
                            box=self.box)
        self.cmd('STORE', 'UID STORE %s +FLAGS.SILENT (\\Deleted)' % fmt_uidset(uids),
                 box=self.box)

    def op_expunge(self):
        if self.known and self.rng.random() < 0.3:
            self.cmd('EXPUNGE', 'UID EXPUNGE %s' % fmt_uidset(self.pick_known(5)),
                     box=self.box)
        else:
            self.cmd('EXPUNGE', 'EXPUNGE', box=self.box)

    def _copy(self, verb):
        uids = self.pick_known(self.rng.randint(1, 3))
        dest = self.any_box()
        if not uids or dest == self.box:
            return self.op_fetch()
        r = self.cmd(verb, 'UID %s %s "%s"' % (verb, fmt_uidset(uids), dest),
                     box=(self.box, dest),
                     expect=[('TRYCREATE', None)] if self.missing(dest) else None)
        m = CODE_RE.match('[%s]' % r.code) if r.status == 'OK' else None
        if m and m.group(1) == 'COPYUID':
            self.copied(re.match(rb'(\d+) ([\d:,]+) ([\d:,]+)', m.group(2).encode()), dest)
        for parts in r.untagged:
            # MOVE: COPYUID comes untagged, handled by untagged()
            m = re.match(rb'\* OK \[COPYUID (\d+) ', parts[0])
            if m:
                self.saw(int(m.group(1)), dest)

    def op_copy(self):
        self._copy('COPY')

    def op_move(self):
        self._copy('MOVE')

    def _leave(self, *boxes):
        if self.box in boxes:
            self.cmd('UNSELECT', 'UNSELECT')
            self._unselect()

    def _scratch_gone(self, name):
        with self.led.lock:
            self.led.scratch_moves[name] = self.led.scratch_moves.get(name, 0) + 1

    def relearn_scratch(self):
        """After a CREATE/DELETE/RENAME whose reply was lost: which of our
        scratch folders exist now."""
        r = self.cmd('LIST', 'LIST "" "Scratch%d%%"' % self.cid)
        names = set()
        for parts in r.untagged:
            p = parse(parts)
            if len(p) >= 5 and p[1] == 'LIST':
                names.add(p[4].decode() if isinstance(p[4], bytes) else p[4])
        for name in self.have:
            self.have[name] = name in names

    def scratch_cmd(self, names, *args, **kw):
        """cmd() for CREATE/DELETE/RENAME: if the reply is lost, whether
        the folders exist is unknown until relearn_scratch()."""
        try:
            return self.cmd(*args, **kw)
        except Dropped:
            if self.have is not None:
                for name in names:
                    self.have[name] = None
            raise

    def op_create(self):
        box = self.rng.choice(self.scratch)
        exists = self.have is not None and self.have[box]
        r = self.scratch_cmd([box], 'CREATE', 'CREATE "%s"' % box, box=box,
                     expect=[('ALREADYEXISTS', None)] if exists else None)
        if self.have is not None and (r.status == 'OK' or r.code == 'ALREADYEXISTS'):
            self.have[box] = True
            if r.status == 'OK':
                self.scratch_v.pop(box, None)

    def op_delete(self):
        box = self.rng.choice(self.scratch)
        self._leave(box)
        self._scratch_gone(box)
        r = self.scratch_cmd([box], 'DELETE', 'DELETE "%s"' % box, box=box,
                     expect=[('NONEXISTENT', None)] if self.missing(box) else None)
        if self.have is not None and r.status == 'OK':
            self.have[box] = False
            if box in self.scratch_v:
                with self.led.lock:
                    self.led.deleted_v.add(self.scratch_v.pop(box))

    def op_rename(self):
        src, dst = self.rng.sample(self.scratch, 2)
        self._leave(src, dst)
        self._scratch_gone(src)
        self._scratch_gone(dst)
        expect = (([('NONEXISTENT', None)] if self.missing(src) else []) +
                  ([('ALREADYEXISTS', None)] if self.have and self.have[dst] else [])) or None
        r = self.scratch_cmd([src, dst], 'RENAME', 'RENAME "%s" "%s"' % (src, dst),
                             box=(src, dst), expect=expect)
        if self.have is not None and r.status == 'OK':
            self.have[src], self.have[dst] = False, True
            self.scratch_v.pop(dst, None)
            if src in self.scratch_v:
                self.scratch_v[dst] = self.scratch_v.pop(src)

    def op_noop(self):
        self.cmd('NOOP', 'NOOP', box=self.box)

    def op_idle(self):
        wait = self.rng.uniform(0.1, 0.8)

        def idling(conn, _untagged):
            # what arrives meanwhile is read before the tagged reply
            time.sleep(wait)
            conn.send(b'DONE\r\n')
        self.cmd('IDLE', 'IDLE', box=self.box, on_continue=idling)
