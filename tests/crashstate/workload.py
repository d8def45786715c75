"""Recording a workload on a real Dovecot with the lmdb storage.

record(workdir, ...) sets up a user (mailboxes and some mail, made
durable), snapshots the mail root, then runs the workload with
tests/tools/fault-inject.c preloaded in recorder mode into every mail
process (imap, pop3, lmtp through import_environment; doveadm through
its environment and -k) and writes a marker into the same global order
before each client operation is sent and after it was acknowledged.

It leaves in workdir: rec/ (the record files), snapshot/ (the mail root
before the workload), snap-inodes.json, ledger.json (the operations and
what the driver knows of every message), final/ (the mail root after the
workload, to check the recorder against) and dovecot.log.
"""

import ctypes
import imaplib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, 'tests', 'integration'))

import harness  # noqa: E402
import fsmodel  # noqa: E402
from ledger import Ledger, Op  # noqa: E402

USER = 'testuser'
TOOLS = os.path.join(REPO, 'tests', 'tools')
MAILBOXES = ('INBOX', 'Archive', 'Work')
FLAG_SETS = (['\\Seen'], ['\\Seen', '\\Flagged'], ['\\Answered', '\\Seen'],
             ['$Label1'], ['\\Flagged', '$Label1'], [])
CONFIG = ('lmtp_add_received_header = no\n'
          'plugin {\n'
          '  lmdb_autopurge_interval = 0\n'
          '}\n')
MID_RE = re.compile(rb'(?im)^Message-ID:\s*(<[^>\r\n]+>)')


def build_library(dirpath):
    """fault-inject.so from tests/tools, into dirpath (readable by the
    mail processes)"""
    cc = shutil.which('cc') or shutil.which('gcc') or shutil.which('clang')
    if cc is None:
        raise harness.Skip('no C compiler for the fault-injection library')
    so = os.path.join(dirpath, 'fault-inject.so')
    r = subprocess.run([cc, '-shared', '-fPIC', '-O2', '-o', so,
                        os.path.join(TOOLS, 'fault-inject.c'), '-ldl', '-pthread'],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise harness.HarnessError('building fault-inject.so failed: %s' % r.stderr[-800:])
    os.chmod(so, 0o755)
    return so


class Marker:
    """fi_record_mark() of this recording's copy of the library (a copy
    per recording: the library reads its configuration once, at load)."""

    def __init__(self, so, recdir):
        os.environ['DLMDB_FI_RECORD'] = recdir
        try:
            self.lib = ctypes.CDLL(so)
        finally:
            del os.environ['DLMDB_FI_RECORD']
        self.lib.fi_record_mark.restype = ctypes.c_uint64
        self.lib.fi_record_mark.argtypes = [ctypes.c_char_p]
        self.lock = threading.Lock()

    def mark(self, text):
        seq = self.lib.fi_record_mark(text.encode())
        if seq == 0:
            raise harness.HarnessError('the recorder is not active')
        return seq


class Message:
    def __init__(self, rng, n, tag):
        self.mid = '<cs-%s-%d@crashstate.test>' % (tag, n)
        r = rng.random()
        if r < 0.08:
            size = rng.randint(1_100_000, 1_500_000)   # past the 1 MiB writer buffer
        elif r < 0.25:
            size = rng.randint(20_000, 200_000)
        else:
            size = rng.randint(200, 6_000)
        line = 'crashstate %s message %d ' % (tag, n)
        body = []
        total = 0
        i = 0
        while total < size:
            s = '%s%06d %s\r\n' % (line, i, 'x' * (i % 50))
            body.append(s)
            total += len(s)
            i += 1
        self.data = ('From: crash@example.com\r\nTo: %s@example.com\r\n'
                     'Subject: %s %d\r\nMessage-ID: %s\r\n\r\n%s'
                     % (USER, tag, n, self.mid, ''.join(body))).encode()


class Driver:
    """Runs operations and logs them with their markers."""

    def __init__(self, dc, marker, ledger, rng, tag):
        self.dc = dc
        self.marker = marker
        self.ledger = ledger
        self.rng = rng
        self.tag = tag
        self.n = 0
        self.lock = threading.Lock()
        self.errors = []
        self.present = {m: [] for m in MAILBOXES}   # acked instances, for targets
        self.flags = {}                              # (mailbox, mid) -> flags now
        self.env = {}                                # preload for doveadm

    def new_message(self):
        with self.lock:
            self.n += 1
            msg = Message(self.rng, self.n, self.tag)
            self.ledger.messages[msg.mid] = {'data': msg.data.decode('latin-1'),
                                             'how': None}
            return msg

    def begin(self, kind, **args):
        with self.lock:
            op = Op(len(self.ledger.ops) + 1, kind, **args)
            self.ledger.ops.append(op)
        op.begin = self.marker.mark('begin %d %s' % (op.id, kind))
        return op

    def acked(self, op, result=''):
        op.ack = self.marker.mark('ack %d' % op.id)
        op.result = result

    def refused(self, op, result):
        op.result = result
        self.marker.mark('refused %d' % op.id)
        self.errors.append('%r refused: %s' % (op, result))

    # -- LMTP ------------------------------------------------------------------
    def lmtp_burst(self, count):
        c = harness.LmtpClient('127.0.0.1', self.dc.ports['lmtp'])
        try:
            for _ in range(count):
                msg = self.new_message()
                self.ledger.messages[msg.mid]['how'] = 'lmtp'
                op = self.begin('lmtp', mailbox='INBOX', mid=msg.mid, flags=[])
                r = c.deliver('sender@example.com', [USER], msg.data)
                if r.all_ok():
                    self.acked(op)
                    with self.lock:
                        self.present['INBOX'].append(msg.mid)
                        self.flags[('INBOX', msg.mid)] = []
                else:
                    self.refused(op, repr(r))
        finally:
            c.quit()

    def lmtp_threads(self, threads, each):
        ts = [threading.Thread(target=self._guard, args=(self.lmtp_burst, each))
              for _ in range(threads)]
        for t in ts:
            t.start()
        return ts

    def _guard(self, fn, *args):
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - reported by the caller
            self.errors.append('%s: %r' % (fn.__name__, e))

    # -- IMAP --------------------------------------------------------------------
    def imap_session(self):
        c = self.dc.imap(USER)
        c.selected = None
        return c

    def _select(self, c, mailbox):
        if c.selected != mailbox:
            typ, data = c.select(mailbox)
            if typ != 'OK':
                raise harness.HarnessError('SELECT %s: %r' % (mailbox, data))
            c.selected = mailbox
        else:
            c.noop()

    def _uid_of(self, c, mailbox, mid):
        uid = self.ledger.uid(mailbox, mid)
        if uid is not None:
            return uid
        self._select(c, mailbox)
        typ, data = c.uid('SEARCH', 'HEADER', 'Message-ID', mid)
        uids = data[0].split() if typ == 'OK' and data and data[0] else []
        if len(uids) != 1:
            raise harness.HarnessError('%s in %s: UID SEARCH gave %r' % (mid, mailbox, data))
        self.ledger.set_uid(mailbox, mid, int(uids[0]))
        return int(uids[0])

    def append(self, c, mailbox):
        msg = self.new_message()
        self.ledger.messages[msg.mid]['how'] = 'append'
        flags = list(self.rng.choice(FLAG_SETS))
        op = self.begin('append', mailbox=mailbox, mid=msg.mid, flags=flags)
        typ, data = c.append(mailbox, '(%s)' % ' '.join(flags) if flags else None,
                             None, msg.data)
        if typ != 'OK':
            return self.refused(op, repr(data))
        self.acked(op, data[0].decode())
        m = re.search(rb'APPENDUID \d+ (\d+)', data[0])
        if m:
            self.ledger.set_uid(mailbox, msg.mid, int(m.group(1)))
        with self.lock:
            self.present[mailbox].append(msg.mid)
            self.flags[(mailbox, msg.mid)] = flags

    def _target(self, mailbox, exclude_in=None):
        with self.lock:
            cands = [m for m in self.present[mailbox]
                     if exclude_in is None or m not in self.present[exclude_in]]
        return self.rng.choice(cands) if cands else None

    def store(self, c, mailbox):
        mid = self._target(mailbox)
        if mid is None:
            return
        uid = self._uid_of(c, mailbox, mid)
        self._select(c, mailbox)
        flags = list(self.rng.choice(FLAG_SETS))
        op = self.begin('store', mailbox=mailbox, mid=mid, flags=flags)
        typ, data = c.uid('STORE', str(uid), 'FLAGS', '(%s)' % ' '.join(flags))
        if typ != 'OK':
            return self.refused(op, repr(data))
        self.acked(op)
        self.flags[(mailbox, mid)] = flags

    def copy_or_move(self, c, kind, mailbox, dst):
        mid = self._target(mailbox, exclude_in=dst)
        if mid is None:
            return
        uid = self._uid_of(c, mailbox, mid)
        self._select(c, mailbox)
        flags = self.flags[(mailbox, mid)]
        op = self.begin(kind, mailbox=mailbox, mid=mid, dst=dst, flags=flags)
        # imaplib keeps the response codes of every reply (the tagged
        # [COPYUID] of a COPY, the untagged one of a MOVE) under their
        # name; UID COPY itself returns untagged FETCH data, not the reply
        c.untagged_responses.pop('COPYUID', None)
        typ, data = c.uid(kind.upper(), str(uid), dst)
        if typ != 'OK':
            return self.refused(op, repr(data))
        self.acked(op)
        codes = [d for d in c.untagged_responses.pop('COPYUID', []) if isinstance(d, bytes)]
        c.untagged_responses.pop('OK', None)
        m = re.match(rb'\d+ (\d+) (\d+)$', codes[-1]) if codes else None
        if m and int(m.group(1)) == uid:
            self.ledger.set_uid(dst, mid, int(m.group(2)))
        else:
            self.errors.append('%r: no COPYUID for UID %d (%r)' % (op, uid, codes))
        with self.lock:
            self.present[dst].append(mid)
            self.flags[(dst, mid)] = flags
            if kind == 'move':
                self.present[mailbox].remove(mid)

    def expunge(self, c, mailbox):
        mid = self._target(mailbox)
        if mid is None:
            return
        uid = self._uid_of(c, mailbox, mid)
        self._select(c, mailbox)
        op = self.begin('expunge', mailbox=mailbox, mid=mid)
        typ, data = c.uid('STORE', str(uid), '+FLAGS.SILENT', '(\\Deleted)')
        if typ == 'OK':
            typ, data = c.uid('EXPUNGE', str(uid))
        if typ != 'OK':
            return self.refused(op, repr(data))
        self.acked(op)
        with self.lock:
            self.present[mailbox].remove(mid)

    # -- POP3 and doveadm ------------------------------------------------------------
    def pop3(self):
        """UIDL and TOP of every message: the UIDLs the checker compares"""
        op = self.begin('pop3')
        p = self.dc.pop3(USER)
        _resp, lines, _n = p.uidl()
        for line in lines:
            num, uidl = line.decode().split()
            _r, top, _o = p.top(int(num), 0)
            m = MID_RE.search(b'\r\n'.join(top))
            if m:
                self.ledger.uidls[m.group(1).decode()] = uidl
        p.quit()
        self.acked(op)

    def doveadm(self, kind, *words):
        op = self.begin(kind)
        n = harness._doveadm_cmd_words(list(words))
        words = list(words[:n]) + ['-u', USER] + list(words[n:])
        cmd = ['env'] + ['%s=%s' % kv for kv in sorted(self.env.items())] + \
            [harness.DOVEADM, '-k', '-c', self.dc.conf_path] + words
        # wrap(): on 2.4 every doveadm (purge too) needs the build's
        # settings modules, or its config's lmdb_* settings are unknown
        cmd = self.dc.wrap(cmd, doveadm=words[0] in harness.DOVEADM_PLUGIN_COMMANDS)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=self.dc.dir)
        if r.returncode != 0:
            return self.refused(op, 'exit %d: %s' % (r.returncode, r.stderr[-400:]))
        self.acked(op, r.stdout.strip())


def _imap_ops(drv, c, count, kinds):
    for _ in range(count):
        kind = drv.rng.choice(kinds)
        if kind == 'append':
            drv.append(c, drv.rng.choice(('INBOX', 'INBOX', 'Archive')))
        elif kind == 'store':
            drv.store(c, drv.rng.choice(('INBOX', 'INBOX', 'Archive')))
        elif kind == 'copy':
            drv.copy_or_move(c, 'copy', 'INBOX', 'Archive')
        elif kind == 'move':
            drv.copy_or_move(c, 'move', 'INBOX', 'Work')
        elif kind == 'expunge':
            drv.expunge(c, drv.rng.choice(('INBOX', 'INBOX', 'Archive', 'Work')))


def run_plan(drv, scale):
    """The workload: deliveries from several LMTP clients alongside IMAP
    APPEND/STORE/COPY/MOVE/EXPUNGE in one long-lived session, POP3
    UIDL, doveadm purge and doveadm lmdb compact (with deliveries and a
    session running across it)."""
    c = drv.imap_session()
    all_kinds = ('append', 'store', 'store', 'copy', 'move', 'expunge')
    for rnd in range(scale):
        ts = drv.lmtp_threads(3, 3)
        _imap_ops(drv, c, 3, ('append',))
        for t in ts:
            t.join()
        drv.pop3()
        ts = drv.lmtp_threads(2, 2)
        _imap_ops(drv, c, 10, all_kinds)
        for t in ts:
            t.join()
        drv.doveadm('purge', 'purge')
        ts = drv.lmtp_threads(1, 3)
        drv.doveadm('compact', 'lmdb', 'compact')
        _imap_ops(drv, c, 3, all_kinds)
        for t in ts:
            t.join()
        _imap_ops(drv, c, 6, all_kinds)
        drv.pop3()
    c.logout()


def setup_user(dc, ledger, rng):
    """Mailboxes and first messages, before the recording (durable)."""
    c = dc.imap(USER)
    for m in MAILBOXES[1:]:
        typ, data = c.create(m)
        assert typ == 'OK', data
    for i in range(6):
        msg = Message(rng, i + 1, 'setup')
        mailbox = MAILBOXES[i % 2]
        flags = list(FLAG_SETS[i % len(FLAG_SETS)])
        typ, data = c.append(mailbox, '(%s)' % ' '.join(flags) if flags else None, None,
                             msg.data)
        assert typ == 'OK', data
        ledger.messages[msg.mid] = {'data': msg.data.decode('latin-1'), 'how': 'append'}
        ledger.initial[(mailbox, msg.mid)] = flags
        ledger.set_uid(mailbox, msg.mid, int(re.search(rb'APPENDUID \d+ (\d+)',
                                                      data[0]).group(1)))
    for m in MAILBOXES:
        typ, data = c.status(m, '(UIDVALIDITY)')
        ledger.uidvalidity[m] = int(re.search(rb'UIDVALIDITY (\d+)', data[0]).group(1))
    c.logout()
    p = dc.pop3(USER)
    for line in p.uidl()[1]:
        num, uidl = line.decode().split()
        m = MID_RE.search(b'\r\n'.join(p.top(int(num), 0)[1]))
        ledger.uidls[m.group(1).decode()] = uidl
    p.quit()
    ledger.mailboxes = list(MAILBOXES)


def record(workdir, seed=1, scale=1, skip_sync=False, log=print):
    """Record one workload into workdir (see the module docstring).
    skip_sync: DLMDB_FI_ACTION=skip, the negative control (every sync a
    no-op that reports success)."""
    rng = random.Random(seed)
    os.makedirs(workdir, exist_ok=True)
    os.chmod(workdir, 0o755)
    libdir = os.path.join(workdir, 'lib')
    recdir = os.path.join(workdir, 'rec')
    for d in (libdir, recdir):
        os.makedirs(d, exist_ok=True)
    os.chmod(libdir, 0o755)
    os.chmod(recdir, 0o777)
    so = build_library(libdir)
    seqfile = os.path.join(recdir, 'seq')
    with open(seqfile, 'wb') as f:
        f.write(b'\0' * 4096)
    os.chmod(seqfile, 0o666)
    ledger = Ledger()
    dc = harness.Dovecot('lmdb', extra=CONFIG)
    try:
        dc.start()
        setup_user(dc, ledger, rng)
        dc.stop()
        root = dc.mail_dir(USER)
        os.sync()
        snapdir = os.path.join(workdir, 'snapshot')
        shutil.copytree(root, snapdir, symlinks=True)
        with open(os.path.join(workdir, 'snap-inodes.json'), 'w') as f:
            json.dump(fsmodel.tree_inodes(root), f)
        env = {'LD_PRELOAD': so, 'DLMDB_FI_RECORD': recdir, 'DLMDB_FI_PREFIX': root}
        if skip_sync:
            env['DLMDB_FI_ACTION'] = 'skip'
        dc.extra = CONFIG + ('import_environment = TZ CORE_OUTOFMEM CORE_ERROR LISTEN_PID '
                             'LISTEN_FDS %s\n' % ' '.join('%s=%s' % kv
                                                          for kv in sorted(env.items())))
        marker = Marker(so, recdir)
        t0 = time.monotonic()
        dc.start()
        drv = Driver(dc, marker, ledger, rng, 'w%d' % seed)
        drv.env = env
        marker.mark('start')
        run_plan(drv, scale)
        marker.mark('end')
        dc.stop()
        secs = time.monotonic() - t0
        shutil.copytree(root, os.path.join(workdir, 'final'), symlinks=True)
        shutil.copy(dc.log_path, os.path.join(workdir, 'dovecot.log'))
        ledger.save(os.path.join(workdir, 'ledger.json'))
        with open(os.path.join(workdir, 'meta.json'), 'w') as f:
            json.dump(dict(root=root, seed=seed, scale=scale, skip_sync=skip_sync,
                           seconds=secs, errors=drv.errors), f)
        log('recorded %d operations in %.1fs (%s)%s'
            % (len(ledger.ops), secs, workdir,
               '; driver errors: %s' % drv.errors if drv.errors else ''))
        return drv.errors
    finally:
        dc.cleanup()
