"""The expected state: what the server acknowledged, in the recorder's
global order.

The driver logs every client operation as an Op with the marker it
wrote before sending the command (begin) and after the server's
acknowledgement (ack: LMTP 250, IMAP OK, POP3 +OK at QUIT, doveadm exit
0). At a crash point c an op is

  acked       ack <= c       its effects must be there
  in flight   begin <= c < ack (or never acked)
                             its effects may or may not be there
  future      begin > c      its effects must not be there

A message instance is (mailbox, Message-ID): a copy is a second
instance with the same Message-ID in another mailbox; the workload never
puts one Message-ID twice into a mailbox.
"""

import json

NO_ACK = float('inf')
# the operations that create a message instance
CREATES = ('lmtp', 'append', 'copy', 'move')


class Op:
    def __init__(self, oid, kind, **args):
        self.id = oid
        self.kind = kind          # lmtp append store copy move expunge pop3 purge compact
        self.args = args          # mailbox, mid, dst, flags (list)
        self.begin = None
        self.ack = None           # None: refused or failed (never acknowledged)
        self.result = ''
        self.uid = None           # the UID the instance it created got, once known

    def to_json(self):
        return dict(id=self.id, kind=self.kind, args=self.args, begin=self.begin,
                    ack=self.ack, result=self.result, uid=self.uid)

    @classmethod
    def from_json(cls, d):
        op = cls(d['id'], d['kind'], **d['args'])
        op.begin, op.ack, op.result = d['begin'], d['ack'], d['result']
        op.uid = d.get('uid')
        return op

    def created(self):
        """the instance (mailbox, mid) this op creates, or None"""
        if self.kind not in CREATES:
            return None
        return (self.args.get('dst') or self.args['mailbox'], self.args['mid'])

    def ack_seq(self):
        return NO_ACK if self.ack is None else self.ack

    def state_at(self, c):
        if self.begin is None or self.begin > c:
            return 'future'
        if self.ack is not None and self.ack <= c:
            return 'acked'
        return 'inflight'

    def __repr__(self):
        return '#%d %s %s' % (self.id, self.kind, ' '.join(
            '%s=%s' % kv for kv in sorted(self.args.items()) if kv[0] != 'data'))


class Ledger:
    def __init__(self):
        self.messages = {}        # mid -> {'data': str(latin-1), 'how': lmtp|append}
        self.initial = {}         # (mailbox, mid) -> flags (sorted list)
        self.ops = []
        self.uids = {}            # 'mailbox\0mid' -> uid of the instance there now
        self.initial_uids = {}    # 'mailbox\0mid' -> uid (the instances of the setup)
        self.uidls = {}           # mid -> POP3 UIDL (INBOX instances)
        self.uidvalidity = {}     # mailbox -> UIDVALIDITY
        self.mailboxes = []

    # -- persistence --------------------------------------------------------
    def save(self, path):
        with open(path, 'w') as f:
            json.dump(dict(messages=self.messages,
                           initial=[[m, mid, fl] for (m, mid), fl in self.initial.items()],
                           ops=[op.to_json() for op in self.ops], uids=self.uids,
                           initial_uids=self.initial_uids,
                           uidls=self.uidls, uidvalidity=self.uidvalidity,
                           mailboxes=self.mailboxes), f)

    @classmethod
    def load(cls, path):
        with open(path) as f:
            d = json.load(f)
        led = cls()
        led.messages = d['messages']
        led.initial = {(m, mid): fl for m, mid, fl in d['initial']}
        led.ops = [Op.from_json(o) for o in d['ops']]
        led.uids, led.uidls = d['uids'], d['uidls']
        led.initial_uids = d.get('initial_uids', {})
        led.uidvalidity, led.mailboxes = d['uidvalidity'], d['mailboxes']
        return led

    def data(self, mid) -> bytes:
        return self.messages[mid]['data'].encode('latin-1')

    def uid(self, mailbox, mid):
        return self.uids.get(mailbox + '\0' + mid)

    def set_uid(self, mailbox, mid, uid):
        """the UID of the instance there now (the driver's view): also
        noted on the operation that created it, or as the setup's"""
        k = mailbox + '\0' + mid
        self.uids[k] = int(uid)
        op = self.creator((mailbox, mid), NO_ACK)
        if op is not None:
            op.uid = int(uid)
        elif (mailbox, mid) in self.initial:
            self.initial_uids[k] = int(uid)

    def creator(self, key, c):
        """the last operation acknowledged by crash point c that created
        instance key (a message can be copied, expunged and copied again
        into a mailbox: each instance has a UID of its own)"""
        best = None
        for op in self.ops:
            if op.ack is not None and op.ack <= c and op.created() == key and \
                    (best is None or op.ack > best.ack):
                best = op
        return best

    def uid_at(self, mailbox, mid, c):
        """the UID acknowledged for the instance in mailbox at crash
        point c, or None if the driver never learnt it"""
        op = self.creator((mailbox, mid), c)
        if op is not None:
            return op.uid
        return self.initial_uids.get(mailbox + '\0' + mid)

    # -- the expected state -----------------------------------------------------
    def expect(self, c):
        """What must and may be there at crash point c:
        {(mailbox, mid): Expect}, plus the ops by state."""
        state = {k: set(v) for k, v in self.initial.items()}
        by_state = {'acked': [], 'inflight': [], 'future': []}
        for op in self.ops:
            by_state[op.state_at(c)].append(op)
        for op in sorted(by_state['acked'], key=Op.ack_seq):
            _apply(state, op)
        exp = {k: Expect(True, [set(fl)]) for k, fl in state.items()}
        for op in by_state['inflight']:
            a = op.args
            if op.kind in ('lmtp', 'append'):
                key = (a['mailbox'], a['mid'])
                exp.setdefault(key, Expect(False, [])).flags.append(set(a.get('flags', ())))
                exp[key].maybe = True
            elif op.kind == 'copy' or op.kind == 'move':
                src = (a['mailbox'], a['mid'])
                dst = (a['dst'], a['mid'])
                fl = set(a.get('flags', ()))
                exp.setdefault(dst, Expect(False, [])).flags.append(fl)
                exp[dst].maybe = True
                if op.kind == 'move' and src in exp:
                    exp[src].maybe = True
                    exp[src].move_to = dst
            elif op.kind == 'store':
                key = (a['mailbox'], a['mid'])
                if key in exp:
                    exp[key].flags.append(set(a['flags']))
            elif op.kind == 'expunge':
                key = (a['mailbox'], a['mid'])
                if key in exp:
                    exp[key].maybe = True
                    exp[key].flags += [f | {'\\Deleted'} for f in exp[key].flags]
        return exp, by_state

    def flag_history(self, key, c):
        """[(flags, ack)] instance key had as of each acknowledged op
        before c, oldest first (the initial flags have ack 0)"""
        out = []
        if key in self.initial:
            out.append((set(self.initial[key]), 0))
        for op in sorted(self.ops, key=Op.ack_seq):
            if op.ack is None or op.ack > c:
                continue
            a = op.args
            if op.kind in ('lmtp', 'append') and (a['mailbox'], a['mid']) == key:
                out.append((set(a.get('flags', ())), op.ack))
            elif op.kind in ('copy', 'move') and (a['dst'], a['mid']) == key:
                out.append((set(a.get('flags', ())), op.ack))
            elif op.kind == 'store' and (a['mailbox'], a['mid']) == key:
                out.append((set(a['flags']), op.ack))
        return out


class Expect:
    """must: it has to be there (maybe: ... unless an op in flight removed
    it); flags: the flag sets it may show; move_to: an in-flight move's
    destination (the message must be in one of the two)."""

    def __init__(self, must, flags):
        self.must = must
        self.maybe = not must
        self.flags = flags
        self.move_to = None


def _apply(state, op):
    a = op.args
    if op.kind in ('lmtp', 'append'):
        state[(a['mailbox'], a['mid'])] = set(a.get('flags', ()))
    elif op.kind == 'copy':
        state[(a['dst'], a['mid'])] = set(a.get('flags', ()))
    elif op.kind == 'move':
        state.pop((a['mailbox'], a['mid']), None)
        state[(a['dst'], a['mid'])] = set(a.get('flags', ()))
    elif op.kind == 'store':
        if (a['mailbox'], a['mid']) in state:
            state[(a['mailbox'], a['mid'])] = set(a['flags'])
    elif op.kind == 'expunge':
        state.pop((a['mailbox'], a['mid']), None)
