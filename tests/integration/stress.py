#!/usr/bin/env python3
"""IMAP load generator in the spirit of Dovecot's imaptest (standard library
only): N concurrent clients (threads) on one user, each looping a weighted
random mix of commands, plus optional concurrent LMTP deliveries.

    import stress
    cfg = stress.Config(imap_port=dc.ports['imap'], lmtp_port=dc.ports['lmtp'],
                        clients=10, duration=30, seed=1, logout=0, lmtp_rate=2)
    res = stress.Run(cfg).run()        # -> stress_ledger.Result
    print(res.summary())               # ops/s, per-command counts and latencies
    problems = res.verify()            # exact final-state check ([] = as expected)

Command line (starts a private Dovecot per run through harness.py):

    python3 tests/integration/stress.py --driver lmdb --clients 10 --secs 30 \\
        --logout 0 --vsz 4G --lmtp 2 --runs 10 --seed 1 [--build DIR] [--keep] [-v]

Files: stress.py (configuration, the run, command line), stress_client.py
(the mix, reply classification), stress_ledger.py (bookkeeping, final
check), stress_imap.py (IMAP/LMTP wire code).

The mix (weights in WEIGHTS): SELECT/EXAMINE, STATUS of three mailboxes,
APPEND (0.3 KB to 200 KB, a quarter multipart), UID FETCH (FLAGS,
BODY.PEEK[] with a body digest check, BODY.PEEK[HEADER.FIELDS],
BODYSTRUCTURE, ENVELOPE, RFC822.SIZE), UID STORE +/-FLAGS (\\Seen...,
keywords, \\Deleted), EXPUNGE and UID EXPUNGE, UID COPY / UID MOVE between
INBOX, Folder1, Folder2 and the scratch folders, CREATE/DELETE/RENAME of
scratch folders, LIST, NOOP, a short IDLE. Each client has two private
scratch folders (others see them only through LIST and Dovecot's list index,
which opens every new mailbox: that is what found the lmdb deadlock);
shared_scratch=True makes all clients use the same two instead (stock
Dovecot 2.3.19 sdbox and mdbox crash and log index errors under that, so it
is for hunting, not for pass/fail). logout=0 keeps each session for the
whole run; logout=N ends a session with LOGOUT after 1..2N-1 commands.

Every tagged reply is recorded: OK; expected NO (the client knows its own
scratch folder is missing or exists); benign (a race listed, with its
justification, in stress_client.BENIGN); failed (any other NO or BAD, a
dropped connection, a timeout, an unexpected BYE, a client that still waits
for a reply at the end).

Bookkeeping (Result.verify): every message instance is known by (UIDVALIDITY,
UID) -- from APPENDUID, COPYUID, or a FETCH that returned its Message-ID --
and every expunge by the VANISHED responses (QRESYNC is enabled) of the
session that expunged or moved it. \\Deleted is only ever set, and COPY/MOVE
only applied, to instances whose Message-ID the session knows. At the end
every known instance that did not vanish must be there with its Message-ID
(unless its mailbox was deleted by its owner), nothing vanished may be back,
every acknowledged LMTP delivery is there (or its instance was learned and
expunged or moved), and nothing else is there. Mailboxes are told apart by
UIDVALIDITY, so a RENAME keeps its messages and DELETE + CREATE makes a new
mailbox.
"""

from __future__ import annotations

import os
import random
import re
import sys
import threading
import time

from stress_client import BENIGN, Client, make_message, pick_size  # noqa: F401
from stress_imap import ClientBug, Dropped, ImapConn, lmtp_deliver  # noqa: F401
from stress_ledger import Ledger, Result

# relative command weights, as in imaptest's default profile where it has one
WEIGHTS = {
    'select': 8, 'examine': 2, 'status': 10, 'list': 3, 'append': 16,
    'fetch': 26, 'store': 14, 'store_deleted': 6, 'expunge': 5,
    'copy': 5, 'move': 5, 'create': 2, 'delete': 2, 'rename': 2,
    'noop': 4, 'idle': 2,
}
FOLDERS = ('INBOX', 'Folder1', 'Folder2')
SCRATCH = ('Scratch1', 'Scratch2')
FOLDERS = ('INBOX', 'Folder1', 'Folder2')
SCRATCH = ('Scratch1', 'Scratch2')

class Config:
    def __init__(self, imap_port, lmtp_port=None, host='127.0.0.1', user='testuser',
                 password='testpass', clients=10, duration=30.0, seed=1, logout=20,
                 lmtp_rate=0.0, weights=None, folders=FOLDERS, shared_scratch=False,
                 size_profile='default', max_messages=80, cmd_timeout=60.0,
                 monitor=None, monitor_interval=1.0):
        self.imap_port, self.lmtp_port, self.host = imap_port, lmtp_port, host
        self.user, self.password = user, password
        self.clients, self.duration, self.seed, self.logout = clients, duration, seed, logout
        self.lmtp_rate = lmtp_rate      # deliveries per second, 0 = none
        self.weights = dict(WEIGHTS, **(weights or {}))
        self.folders = tuple(folders)
        # Private (default): each client creates, deletes, renames, selects
        # and fills only its own two scratch folders; others see them only
        # through LIST and Dovecot's list index. Shared: all clients use
        # SCRATCH. Stock Dovecot 2.3.19 sdbox/mdbox crash and log index
        # errors when a folder is deleted while other sessions append to
        # or have it selected, so shared mode is for hunting, not for a
        # pass/fail test.
        self.shared_scratch = shared_scratch
        self.size_profile = size_profile
        self.max_messages = max_messages  # above this a mailbox is shrunk
        self.cmd_timeout = cmd_timeout
        self.monitor = monitor          # callable(elapsed) every monitor_interval
        self.monitor_interval = monitor_interval

    def scratch_for(self, cid) -> tuple:
        return SCRATCH if self.shared_scratch else ('Scratch%da' % cid, 'Scratch%db' % cid)

    @staticmethod
    def is_scratch(name) -> bool:
        return name is not None and re.fullmatch(r'Scratch(\d+[ab]|\d)', name) is not None


class Run:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.ledger = Ledger()
        self.result = Result(cfg, self.ledger)
        self.stop = threading.Event()
        self.t0 = None

    def elapsed(self):
        return time.monotonic() - self.t0

    def setup(self):
        """Create the fixed folders (INBOX exists); no private scratch
        folder exists at the start."""
        conn = ImapConn(self.cfg.host, self.cfg.imap_port, self.cfg.cmd_timeout)
        try:
            conn.command('LOGIN "%s" "%s"' % (self.cfg.user, self.cfg.password))
            for name in self.cfg.folders[1:]:
                r = conn.command('CREATE "%s"' % name)
                if r.status != 'OK' and 'ALREADYEXISTS' not in r.code:
                    raise Dropped('setup CREATE %s: %s' % (name, r.line()))
            if not self.cfg.shared_scratch:
                for cid in range(self.cfg.clients):
                    for name in self.cfg.scratch_for(cid):
                        conn.command('DELETE "%s"' % name)
            conn.command('LOGOUT')
        finally:
            conn.close()

    def lmtp_loop(self):
        cfg, n = self.cfg, 0
        rng = random.Random('%d-lmtp' % cfg.seed)
        while not self.stop.wait(1.0 / cfg.lmtp_rate):
            n += 1
            mid = '<s%d-lmtp-%d@stress.test>' % (cfg.seed, n)
            msg = make_message(rng, mid, pick_size(rng, cfg.size_profile))
            t0 = time.monotonic()
            with self.ledger.lock:
                self.ledger.unacked.add(mid)
            try:
                code = lmtp_deliver(cfg.host, cfg.lmtp_port, cfg.user, msg, cfg.cmd_timeout)
            except (OSError, Dropped) as e:
                self.result.record('LMTP', 'failed', time.monotonic() - t0, self.elapsed(),
                                   'lmtp', 'dropped: %s' % e)
                continue
            with self.ledger.lock:
                if code == 250:
                    self.ledger.unacked.discard(mid)
                    self.ledger.lmtp_acked.add(mid)
            self.result.record('LMTP', 'ok' if code == 250 else 'failed',
                               time.monotonic() - t0, self.elapsed(), 'lmtp',
                               'LMTP %s -> %d' % (mid, code))

    def run(self) -> Result:
        cfg = self.cfg
        self.setup()
        self.t0 = time.monotonic()
        threads = [threading.Thread(target=Client(self, i).loop, name='stress-%d' % i,
                                    daemon=True) for i in range(cfg.clients)]
        if cfg.lmtp_rate and cfg.lmtp_port:
            threads.append(threading.Thread(target=self.lmtp_loop, name='stress-lmtp',
                                            daemon=True))
        for t in threads:
            t.start()
        end = self.t0 + cfg.duration
        while time.monotonic() < end:
            time.sleep(min(cfg.monitor_interval, max(0.0, end - time.monotonic())))
            if cfg.monitor:
                cfg.monitor(self.elapsed())
        self.stop.set()
        deadline = time.monotonic() + cfg.cmd_timeout + 10
        for t in threads:
            t.join(max(0.1, deadline - time.monotonic()))
        hung = [t.name for t in threads if t.is_alive()]
        self.result.elapsed = self.elapsed()
        for name in hung:
            self.result.record('hang', 'failed', 0, self.elapsed(), name,
                               'still waiting for a reply after the run (deadlock?)')
        return self.result


# -- command line -------------------------------------------------------------

def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--driver', default='lmdb')
    ap.add_argument('--clients', type=int, default=10)
    ap.add_argument('--secs', type=float, default=30)
    ap.add_argument('--seed', type=int, default=1, help='seed of the first run (+1 per run)')
    ap.add_argument('--runs', type=int, default=1)
    ap.add_argument('--logout', type=int, default=20,
                    help='mean commands per session; 0 = never log out')
    ap.add_argument('--lmtp', type=float, default=0, help='LMTP deliveries per second')
    ap.add_argument('--vsz', default='4G', help="default_vsz_limit ('' = Dovecot's default)")
    ap.add_argument('--sizes', default='default', choices=('default', 'large'))
    ap.add_argument('--build', help='build tree with the modules (default: this one)')
    ap.add_argument('--keep', action='store_true', help='keep the temp dirs')
    ap.add_argument('-v', action='store_true', help='full summary and log errors of every run')
    opts = ap.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import harness
    bad_runs = panics = 0
    for i in range(opts.runs):
        with harness.Dovecot(opts.driver, extra=dovecot_config(opts.vsz),
                             build=opts.build) as dc:
            cfg = Config(dc.ports['imap'], dc.ports['lmtp'], clients=opts.clients,
                         duration=opts.secs, seed=opts.seed + i, logout=opts.logout,
                         lmtp_rate=opts.lmtp, size_profile=opts.sizes)
            res = Run(cfg).run()
            problems = res.verify() if not res.failures else None
            dc.stop()
            errs = dc.log_errors(include_warnings=False)
            n_panic = sum('Panic:' in l for l in errs)
            panics += n_panic
            ok = not res.failures and not problems and not errs
            bad_runs += not ok
            print('run %d seed %d: %s %.0f ops/s, %d failed commands, verify %s, '
                  '%d panics, %d log errors  %s'
                  % (i + 1, cfg.seed, opts.driver, res.ops / res.elapsed, len(res.failures),
                     'skipped' if problems is None else
                     'OK' if not problems else '%d problems' % len(problems),
                     n_panic, len(errs), dc.dir if opts.keep else ''), flush=True)
            if opts.v or not ok:
                print(res.summary() if opts.v else '\n'.join(
                    res.summary().splitlines()[-min(10, len(res.failures)):]
                    if res.failures else []))
                for p in (problems or [])[:20]:
                    print('  verify: ' + p)
                for l in errs[:10]:
                    print('  log: ' + l[:400])
        harness.cleanup_all(keep=opts.keep)
    print('%d of %d runs failed, %d panics' % (bad_runs, opts.runs, panics))
    return 1 if bad_runs else 0


def dovecot_config(vsz_limit: str = '4G') -> str:
    """Config for a stress run: more connections per user+IP than the
    default 10 (the clients, a final checker and sessions still closing)."""
    text = 'mail_max_userip_connections = 1000\n'
    if vsz_limit:
        text += 'default_vsz_limit = %s\n' % vsz_limit
    return text


if __name__ == '__main__':
    sys.exit(main())
