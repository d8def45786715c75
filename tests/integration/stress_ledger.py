"""Bookkeeping of a stress run (stress.py): what the clients did to the
mailboxes (Ledger), the per-command results (Result), and the exact check of
the final state (Result.verify)."""

from __future__ import annotations

import re
import threading

from stress_imap import Dropped, ImapConn, fetch_items, parse

MID_RE = re.compile(rb'(?im)^Message-ID:[ \t]*(<[^>\r\n]+>)')


class Ledger:
    """What the run did to the mailboxes, for Result.verify()."""

    def __init__(self):
        self.lock = threading.Lock()
        self.instances = {}        # (uidvalidity, uid) -> Message-ID
        self.vanished = set()      # (uidvalidity, uid)
        self.vname = {}            # uidvalidity -> a name it was seen under
        self.appended = set()      # Message-IDs of acknowledged APPENDs
        self.unacked = set()       # sent, outcome unknown (dropped connection)
        self.lmtp_acked = set()
        self.violations = []       # consistency problems seen during the run
        self.scratch_moves = {}    # scratch name -> DELETE/RENAME attempts so far
        self.deleted_v = set()     # UIDVALIDITY of private scratch folders DELETEd

    def learn(self, v, uid, mid, how):
        with self.lock:
            old = self.instances.setdefault((v, uid), mid)
            if old != mid:
                self.violations.append('UID %d/%d is %s (%s), earlier %s'
                                       % (v, uid, mid, how, old))

    def see_name(self, v, name):
        with self.lock:
            self.vname.setdefault(v, name)


class Result:
    def __init__(self, cfg, ledger):
        self.cfg, self.ledger = cfg, ledger
        self.lock = threading.Lock()
        self.counts = {}           # command -> {'ok':, 'benign':, 'failed':}
        self.latency = {}          # command -> [total s, max s]
        self.benign = {}           # reason code -> count
        self.failures = []         # dicts: t, client, cmd, reply, trace
        self.reconnects = 0
        self.elapsed = 0.0
        self.ops = 0

    def record(self, cmd, outcome, secs, t=None, client=None, reply='', trace=()):
        with self.lock:
            c = self.counts.setdefault(cmd, {'ok': 0, 'expected': 0, 'benign': 0,
                                             'failed': 0})
            c[outcome] += 1
            lat = self.latency.setdefault(cmd, [0.0, 0.0])
            lat[0] += secs
            lat[1] = max(lat[1], secs)
            self.ops += 1
            if outcome == 'failed':
                self.failures.append({'t': t, 'client': client, 'cmd': cmd,
                                      'reply': reply, 'trace': list(trace)})

    @property
    def first_failure(self):
        return min(self.failures, key=lambda f: f['t']) if self.failures else None

    def failed(self) -> int:
        return len(self.failures)

    def summary(self) -> str:
        out = ['%d clients, %.1f s, logout=%s, seed %d: %d commands, %.1f ops/s, '
               '%d failed, %d reconnects after a benign BYE'
               % (self.cfg.clients, self.elapsed, self.cfg.logout, self.cfg.seed, self.ops,
                  self.ops / self.elapsed if self.elapsed else 0, len(self.failures),
                  self.reconnects)]
        for cmd in sorted(self.counts):
            c, lat = self.counts[cmd], self.latency[cmd]
            n = sum(c.values())
            out.append('  %-9s %6d ok %5d expected NO %5d benign %4d failed   '
                       'avg %6.1f ms  max %7.1f ms'
                       % (cmd, c['ok'], c['expected'], c['benign'], c['failed'],
                          1000 * lat[0] / n, 1000 * lat[1]))
        if self.benign:
            out.append('  benign: ' + ', '.join('%s %d' % kv for kv in sorted(self.benign.items())))
        for f in self.failures[:10]:
            out.append('  FAILED t=%.1fs client %s %s: %s' % (f['t'], f['client'], f['cmd'],
                                                             f['reply']))
        return '\n'.join(out)

    # -- the final check ------------------------------------------------------
    def read_final_state(self):
        """{name: (uidvalidity, {uid: Message-ID or None})} over a fresh session."""
        cfg = self.cfg
        conn = ImapConn(cfg.host, cfg.imap_port, cfg.cmd_timeout)
        try:
            r = conn.command('LOGIN "%s" "%s"' % (cfg.user, cfg.password))
            if r.status != 'OK':
                raise Dropped('final LOGIN: ' + r.line())
            r = conn.command('LIST "" "*"')
            names = []
            for parts in r.untagged:
                p = parse(parts)
                if len(p) >= 5 and p[1] == 'LIST' and '\\Noselect' not in (p[2] or []):
                    names.append(p[4].decode() if isinstance(p[4], bytes) else p[4])
            state = {}
            for name in names:
                r = conn.command('EXAMINE "%s"' % name)
                if r.status != 'OK':
                    raise Dropped('final EXAMINE %s: %s' % (name, r.line()))
                v = None
                for parts in r.untagged:
                    m = re.match(rb'\* OK \[UIDVALIDITY (\d+)\]', parts[0])
                    if m:
                        v = int(m.group(1))
                r = conn.command('UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])')
                if r.status != 'OK':
                    raise Dropped('final FETCH %s: %s' % (name, r.line()))
                msgs = {}
                for uid, items in fetch_items(r.untagged):
                    hdr = items.get('BODY[HEADER.FIELDS (MESSAGE-ID)]') or b''
                    m = MID_RE.search(hdr)
                    msgs[uid] = m.group(1).decode() if m else None
                state[name] = (v, msgs)
            conn.command('LOGOUT')
            return state
        finally:
            conn.close()

    def verify(self, state=None) -> list[str]:
        """Problems with the final state (empty list: exactly as expected)."""
        led = self.ledger
        state = state if state is not None else self.read_final_state()
        problems = list(led.violations)
        by_v = {v: (name, msgs) for name, (v, msgs) in state.items()}
        for name in self.cfg.folders:
            if name not in state:
                problems.append('mailbox %s is gone' % name)
        seen_lmtp = {}
        known_mids = set(led.instances.values())
        for name, (v, msgs) in state.items():
            for uid, mid in msgs.items():
                key = (v, uid)
                if key in led.instances:
                    if led.instances[key] != mid:
                        problems.append('%s UID %d is %s, expected %s'
                                        % (name, uid, mid, led.instances[key]))
                    if key in led.vanished:
                        problems.append('%s UID %d (%s) was expunged but is back'
                                        % (name, uid, mid))
                elif (mid in led.lmtp_acked or mid in led.unacked) and \
                        mid not in known_mids:
                    # an LMTP delivery (or a dropped APPEND) nobody fetched:
                    # copies and moves need a known source, so it is the
                    # original, where it was delivered
                    seen_lmtp.setdefault(mid, []).append('%s/%d' % (name, uid))
                else:
                    problems.append('%s UID %d (%s) was never created by this run'
                                    % (name, uid, mid))
        for mid, where in seen_lmtp.items():
            if len(where) > 1:
                problems.append('%s is there %d times: %s' % (mid, len(where), where))
        for (v, uid), mid in led.instances.items():
            if (v, uid) in led.vanished:
                continue
            if v not in by_v:
                # a private scratch folder must have been deleted by its
                # owner; with shared ones who deleted which is unknown
                if v not in led.deleted_v and not (self.cfg.shared_scratch and
                                                   self.cfg.is_scratch(led.vname.get(v))):
                    problems.append('UID %d (%s) of mailbox %s (UIDVALIDITY %d) is gone '
                                    'with its mailbox, which nobody deleted'
                                    % (uid, mid, led.vname.get(v), v))
                continue
            name, msgs = by_v[v]
            if uid not in msgs:
                problems.append('%s UID %d (%s) is missing' % (name, uid, mid))
        for mid in led.lmtp_acked:
            if mid not in known_mids and mid not in seen_lmtp:
                problems.append('LMTP delivery %s (acknowledged) is missing' % mid)
        for mid in led.appended:
            if mid not in known_mids:
                problems.append('APPEND %s was acknowledged without APPENDUID' % mid)
        return problems
