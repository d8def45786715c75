"""IMAP and LMTP wire code of the stress load generator (stress.py):
one IMAP connection that runs one command at a time and keeps the untagged
responses, a parser of IMAP data into nested lists, UID sets, and a minimal
LMTP delivery. Standard library only."""

from __future__ import annotations

import re
import socket

TAGGED_RE = re.compile(r'^(\S+) (OK|NO|BAD)(?: \[([^\]]*)\])? ?(.*)$')


class Dropped(Exception):
    """The server closed the connection, or a reply did not come in time."""


class ClientBug(Exception):
    """The server said something this client can't parse."""


# -- IMAP wire format --------------------------------------------------------

def parse_uidset(s: str) -> list[int]:
    out = []
    for part in s.split(','):
        if ':' in part:
            a, b = (int(x) for x in part.split(':'))
            out.extend(range(min(a, b), max(a, b) + 1))
        elif part:
            out.append(int(part))
    return out


def fmt_uidset(uids) -> str:
    uids = sorted(set(uids))
    out, i = [], 0
    while i < len(uids):
        j = i
        while j + 1 < len(uids) and uids[j + 1] == uids[j] + 1:
            j += 1
        out.append(str(uids[i]) if i == j else '%d:%d' % (uids[i], uids[j]))
        i = j + 1
    return ','.join(out)


def _tokens(parts):
    """Tokens of one response: parts alternate text and literal bytes."""
    for k in range(0, len(parts), 2):
        text, lit = parts[k], parts[k + 1] if k + 1 < len(parts) else None
        i, n = 0, len(text)
        while i < n:
            c = text[i:i + 1]
            if c in b' \r\n':
                i += 1
            elif c in b'()':
                yield c
                i += 1
            elif c == b'"':
                j, buf = i + 1, bytearray()
                while j < n and text[j:j + 1] != b'"':
                    if text[j:j + 1] == b'\\':
                        j += 1
                    buf += text[j:j + 1]
                    j += 1
                yield bytes(buf)
                i = j + 1
            elif c == b'{':
                if lit is None:
                    raise ClientBug('literal marker without literal: %r' % text)
                yield lit
                i = n
            else:
                j, depth = i, 0
                while j < n:
                    ch = text[j:j + 1]
                    depth += (ch == b'[') - (ch == b']')
                    if depth == 0 and ch in b' ()"\r\n':
                        break
                    j += 1
                yield text[i:j].decode('utf-8', 'replace')
                i = j


def parse(parts) -> list:
    """Nested lists; atoms are str, strings and literals bytes, NIL None."""
    stack = [[]]
    for t in _tokens(parts):
        if t == b'(':
            stack.append([])
        elif t == b')':
            if len(stack) == 1:
                raise ClientBug('unbalanced ) in %r' % parts[:1])
            done = stack.pop()
            stack[-1].append(done)
        else:
            stack[-1].append(None if t == 'NIL' else t)
    if len(stack) != 1:
        raise ClientBug('unbalanced ( in %r' % parts[:1])
    return stack[0]


class Reply:
    def __init__(self, status, code, text, untagged):
        self.status = status          # 'OK' | 'NO' | 'BAD'
        self.code = code              # e.g. 'APPENDUID 123 45' or ''
        self.text = text
        self.untagged = untagged      # [parts] of the untagged responses

    def line(self):
        return '%s %s%s' % (self.status, '[%s] ' % self.code if self.code else '', self.text)


class ImapConn:
    """One IMAP connection; commands are pipelined by nobody, one at a time."""

    def __init__(self, host, port, timeout):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.rfile = self.sock.makefile('rb')
        self.tag = 0
        self.trace = []               # last lines sent/received
        greeting = self.read()
        if not greeting[0].startswith(b'* OK'):
            raise Dropped('greeting: %r' % greeting[0])

    def close(self):
        for f in (self.rfile, self.sock):
            try:
                f.close()
            except OSError:
                pass

    def _note(self, line):
        self.trace.append(line[:200])
        del self.trace[:-16]

    def read(self) -> list:
        """One response: [text, literal, text, ...], CRLF stripped."""
        parts = []
        while True:
            try:
                line = self.rfile.readline(1 << 20)
            except (socket.timeout, OSError) as e:
                raise Dropped('read: %s' % e)
            if not line:
                raise Dropped('connection closed by server')
            self._note(b'S: ' + line.rstrip(b'\r\n'))
            line = line.rstrip(b'\r\n')
            m = re.search(rb'\{(\d+)\}$', line)
            parts.append(line)
            if not m:
                return parts
            try:
                lit = self.rfile.read(int(m.group(1)))
            except (socket.timeout, OSError) as e:
                raise Dropped('read: %s' % e)
            if len(lit) != int(m.group(1)):
                raise Dropped('connection closed in a literal')
            parts.append(lit)

    def send(self, data: bytes):
        self._note(b'C: ' + data[:120])
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise Dropped('send: %s' % e)

    def command(self, line: str, literal: bytes | None = None, on_continue=None) -> Reply:
        """Send 'TAG line' (line may end in '{n+}' for literal, LITERAL+)."""
        self.tag += 1
        tag = 'c%d' % self.tag
        data = ('%s %s\r\n' % (tag, line)).encode()
        if literal is not None:
            data += literal + b'\r\n'
        self.send(data)
        untagged = []
        while True:
            parts = self.read()
            first = parts[0]
            if first.startswith(b'* '):
                untagged.append(parts)
                if first.startswith(b'* BYE') and not line.startswith('LOGOUT'):
                    raise Dropped('BYE: %s' % first[6:].decode('utf-8', 'replace'))
                continue
            if first.startswith(b'+'):
                if on_continue is None:
                    raise ClientBug('unexpected continuation %r' % first)
                on_continue(self, untagged)
                continue
            m = TAGGED_RE.match(first.decode('utf-8', 'replace'))
            if not m or m.group(1) != tag:
                raise ClientBug('unexpected line %r (tag %s)' % (first, tag))
            return Reply(m.group(2), m.group(3) or '', m.group(4), untagged)


def fetch_items(untagged):
    """(uid, {ITEM: value}) of the FETCH responses among untagged."""
    for parts in untagged:
        if not re.match(rb'\* \d+ FETCH ', parts[0]):
            continue
        p = parse(parts)
        kv = p[3] if len(p) > 3 and isinstance(p[3], list) else []
        items = {}
        for i in range(0, len(kv) - 1, 2):
            items[str(kv[i]).upper()] = kv[i + 1]
        if 'UID' in items:
            yield int(items['UID']), items



def lmtp_deliver(host, port, rcpt, data, timeout) -> int:
    """One delivery on its own connection; the final reply code."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        f = s.makefile('rb')

        def reply():
            while True:
                line = f.readline()
                if len(line) < 4:
                    raise Dropped('LMTP: connection closed')
                if line[3:4] != b'-':
                    return int(line[:3])
        steps = [None, b'LHLO stress\r\n', b'MAIL FROM:<stress@example.com>\r\n',
                 ('RCPT TO:<%s>\r\n' % rcpt).encode(), b'DATA\r\n']
        want = [220, 250, 250, 250, 354]
        for cmd, code in zip(steps, want):
            if cmd:
                s.sendall(cmd)
            got = reply()
            if got != code:
                return got
        body = data.replace(b'\r\n.', b'\r\n..')
        s.sendall(body + b'.\r\n')
        code = reply()
        s.sendall(b'QUIT\r\n')
        return code
