"""Deterministic generator of varied RFC 5322 test messages.

    import mailgen
    msgs = mailgen.generate()            # list of GenMessage (raw + metadata)
    raws = mailgen.generate_messages()   # list of bytes

Every call with the same (count, seed) returns identical bytes (the
random stream depends on count: message i of generate(100) is not message
i of generate(10)).  The set
contains plain ASCII messages, multipart/alternative, multipart/mixed with
a base64 attachment, 8-bit ISO-8859-1 and UTF-8 bodies
(Content-Transfer-Encoding: 8bit), long folded headers, lines starting with
'.' (dot-stuffing), one ~5 MB message, and several messages with bare-LF
line endings (the rest use CRLF).  Every message has a unique Message-ID.

Each GenMessage carries what a test needs to compute expected values:
message_id, subject (raw header value, unfolded), from_/to (lists of
(display-name|None, mailbox, host)), date (raw header value), kind, eol,
and ``parts``: the expected MIME structure as a nested tuple
('multipart', subtype, [children]) or (type, subtype, params_dict, cte,
body_bytes_with_CRLF).
"""

from __future__ import annotations

import base64
import datetime
import random
from dataclasses import dataclass, field

DEFAULT_SEED = 0x1DB5EED
BIG_SIZE = 5 * 1024 * 1024

WORDS = ('lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod '
         'tempor incididunt ut labore et dolore magna aliqua enim ad minim veniam '
         'quis nostrud exercitation ullamco laboris nisi aliquip ex ea commodo '
         'consequat duis aute irure in reprehenderit voluptate velit esse cillum '
         'fugiat nulla pariatur excepteur sint occaecat cupidatat non proident '
         'sunt culpa qui officia deserunt mollit anim id est laborum').split()

LATIN1_WORDS = ['caf\xe9', 'na\xefve', 'gar\xe7on', '\xfcber', 'stra\xdfe', 'se\xf1or',
                'fj\xf6rd', '\xe5ngstr\xf6m', 'cr\xe8me', 'br\xfbl\xe9e', '\xa3100', 'd\xe9j\xe0']
UTF8_WORDS = ['\u65e5\u672c\u8a9e', '\u0440\u0443\u0441\u0441\u043a\u0438\u0439',
              '\u03b5\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac', 'emoji\U0001F600',
              '\u20ac\u00a0euro', '\u4e2d\u6587', '\u05e2\u05d1\u05e8\u05d9\u05ea',
              'na\u00efve', '\u00fcber']

PEOPLE = [
    ('Alice Example', 'alice', 'example.com'),
    ('Bob Builder', 'bob', 'example.org'),
    (None, 'carol', 'example.net'),
    ('Dave "The Dev" Smith', 'dave', 'dev.example.com'),
    ('Eve', 'eve', 'example.com'),
    (None, 'frank.o-reilly', 'sub.example.co.uk'),
]


@dataclass
class GenMessage:
    index: int
    raw: bytes
    message_id: str
    subject: str            # raw header value, unfolded (as IMAP ENVELOPE returns it)
    date: str
    from_: list
    to: list
    cc: list
    kind: str
    eol: bytes
    parts: tuple
    in_reply_to: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.raw)


def _addr(p) -> str:
    name, mbox, host = p
    if name is None:
        return '%s@%s' % (mbox, host)
    if any(c in name for c in '"(),.:;<>@[]\\'):
        qname = '"' + name.replace('\\', '\\\\').replace('"', '\\"') + '"'
    else:
        qname = name
    return '%s <%s@%s>' % (qname, mbox, host)


def _words(rng, n, pool=WORDS) -> str:
    return ' '.join(rng.choice(pool) for _ in range(n))


def _para_lines(rng, nlines, pool=WORDS, width=(3, 14)):
    return [_words(rng, rng.randint(*width), pool) for _ in range(nlines)]


def _fold(name: str, value_tokens: list[str], width: int = 76) -> list[str]:
    """Fold a header made of tokens into continuation lines."""
    lines = []
    cur = name + ':'
    for t in value_tokens:
        if len(cur) + 1 + len(t) > width and cur != name + ':':
            lines.append(cur)
            cur = '\t' + t
        else:
            cur += ' ' + t
    lines.append(cur)
    return lines


def _b64_lines(data: bytes) -> list[str]:
    enc = base64.b64encode(data).decode('ascii')
    return [enc[i:i + 76] for i in range(0, len(enc), 76)]


def _encoded_word(s: str) -> str:
    return '=?UTF-8?B?%s?=' % base64.b64encode(s.encode('utf-8')).decode('ascii')


def _leaf(ctype, subtype, params, cte, body_lines, eol_for_expect=b'\r\n', enc='ascii'):
    body = b''.join(l.encode(enc) + eol_for_expect for l in body_lines)
    return (ctype, subtype, params, cte, body)


def generate(count: int = 100, seed: int = DEFAULT_SEED) -> list[GenMessage]:
    rng = random.Random(seed)
    base_date = datetime.datetime(2023, 3, 1, 8, 0, 0, tzinfo=datetime.timezone.utc)
    kinds_cycle = ['plain', 'alternative', 'mixed', 'latin1', 'utf8', 'folded', 'dots']
    big_index = count // 2 if count > 1 else 0
    msgs = []
    for i in range(count):
        if i == big_index:
            kind = 'big'
        else:
            kind = kinds_cycle[i % len(kinds_cycle)]
        # several bare-LF messages, of different kinds
        eol = b'\n' if i % 9 == 4 else b'\r\n'
        msgs.append(_make(rng, i, kind, eol, base_date, seed))
    return msgs


def generate_messages(count: int = 100, seed: int = DEFAULT_SEED) -> list[bytes]:
    return [m.raw for m in generate(count, seed)]


def _make(rng: random.Random, i: int, kind: str, eol: bytes, base_date, seed) -> GenMessage:
    tz = datetime.timezone(datetime.timedelta(minutes=rng.choice([0, 60, -300, 330, 120])))
    date = (base_date + datetime.timedelta(hours=7 * i, minutes=rng.randint(0, 59),
                                           seconds=rng.randint(0, 59))).astimezone(tz)
    date_s = date.strftime('%a, %d %b %Y %H:%M:%S %z')
    msgid = '<%04d.%08x@mailgen.example>' % (i, seed & 0xffffffff)
    frm = [rng.choice(PEOPLE)]
    to = rng.sample(PEOPLE, rng.randint(1, 3))
    cc = rng.sample(PEOPLE, rng.randint(0, 2))
    in_reply_to = None
    subj_words = _words(rng, rng.randint(2, 8))
    subject = '[%03d] %s %s' % (i, kind, subj_words)
    hdr: list[str] = []
    hdr.append('From: ' + ', '.join(_addr(p) for p in frm))
    if kind == 'folded':
        hdr += _fold('To', [_addr(p) + ',' for p in to[:-1]] + [_addr(to[-1])], width=30)
    else:
        hdr.append('To: ' + ', '.join(_addr(p) for p in to))
    if cc:
        hdr.append('Cc: ' + ', '.join(_addr(p) for p in cc))
    if kind == 'utf8':
        subject = '[%03d] %s' % (i, _encoded_word('utf8 ' + ' '.join(rng.sample(UTF8_WORDS, 3))))
    if kind == 'folded':
        long_words = [subject] + [_words(rng, 1) for _ in range(rng.randint(30, 60))]
        subj_lines = _fold('Subject', long_words)
        # expected IMAP ENVELOPE subject: Dovecot unfolds CRLF+TAB into a
        # single space (verified on 2.3.19)
        subject = ' '.join(long_words)
        hdr += subj_lines
        refs = ['<ref%d.%d@mailgen.example>' % (i, k) for k in range(rng.randint(8, 20))]
        hdr += _fold('References', refs)
        in_reply_to = refs[-1]
        hdr.append('In-Reply-To: ' + in_reply_to)
        hdr += _fold('X-Long-Header', ['x%d=%s;' % (k, _words(rng, 1)) for k in range(80)], width=78)
    else:
        hdr.append('Subject: ' + subject)
    hdr.append('Date: ' + date_s)
    hdr.append('Message-ID: ' + msgid)
    if kind != 'plain' or i % 2:
        hdr.append('MIME-Version: 1.0')
    hdr.append('X-Mailgen-Index: %d' % i)

    body: list[bytes]
    parts: tuple
    if kind in ('plain', 'folded', 'dots'):
        lines = _para_lines(rng, rng.randint(1, 40))
        if kind == 'dots':
            lines = ['.', '..', '.starts with a dot', lines[0], '.', 'x.', '...three',
                     ''] + lines[1:] + ['.']
        if kind == 'plain' and i % 2 == 0:
            # no MIME headers at all
            hdr_ct = []
            parts = _leaf('text', 'plain', {'charset': 'us-ascii'}, '7bit', lines)
        else:
            hdr_ct = ['Content-Type: text/plain; charset=us-ascii',
                      'Content-Transfer-Encoding: 7bit']
            parts = _leaf('text', 'plain', {'charset': 'us-ascii'}, '7bit', lines)
        hdr += hdr_ct
        body = [l.encode('ascii') for l in lines]
    elif kind in ('latin1', 'utf8'):
        enc = 'iso-8859-1' if kind == 'latin1' else 'utf-8'
        pool = LATIN1_WORDS + WORDS[:10] if kind == 'latin1' else UTF8_WORDS + WORDS[:10]
        lines = _para_lines(rng, rng.randint(2, 30), pool)
        hdr += ['Content-Type: text/plain; charset=%s' % enc,
                'Content-Transfer-Encoding: 8bit']
        body = [l.encode(enc) for l in lines]
        parts = ('text', 'plain', {'charset': enc}, '8bit',
                 b''.join(l + b'\r\n' for l in body))
    elif kind == 'alternative':
        boundary = '=_alt_%d_%x' % (i, rng.getrandbits(32))
        text_lines = _para_lines(rng, rng.randint(1, 15))
        html_lines = ['<html><body>'] + ['<p>%s</p>' % l for l in text_lines] + ['</body></html>']
        hdr.append('Content-Type: multipart/alternative; boundary="%s"' % boundary)
        body = [b'This is a multi-part message in MIME format.', b'',
                ('--' + boundary).encode(),
                b'Content-Type: text/plain; charset=us-ascii',
                b'Content-Transfer-Encoding: 7bit', b'']
        body += [l.encode() for l in text_lines]
        body += [('--' + boundary).encode(),
                 b'Content-Type: text/html; charset=us-ascii',
                 b'Content-Transfer-Encoding: 7bit', b'']
        body += [l.encode() for l in html_lines]
        body += [('--' + boundary + '--').encode(), b'']
        # MIME: the line ending before a boundary belongs to the boundary
        t_body = b'\r\n'.join(l.encode() for l in text_lines)
        h_body = b'\r\n'.join(l.encode() for l in html_lines)
        parts = ('multipart', 'alternative', [
            ('text', 'plain', {'charset': 'us-ascii'}, '7bit', t_body),
            ('text', 'html', {'charset': 'us-ascii'}, '7bit', h_body),
        ])
    elif kind in ('mixed', 'big'):
        boundary = '----=_mixed_%d_%x' % (i, rng.getrandbits(32))
        text_lines = _para_lines(rng, rng.randint(1, 20))
        if kind == 'big':
            att_len = (BIG_SIZE * 3) // 4 - 4096
            att = bytes(rng.getrandbits(8) for _ in range(4096)) * (att_len // 4096)
            fname = 'big.bin'
            ctype = ('application', 'octet-stream')
        else:
            att_len = rng.randint(100, 20000)
            att = rng.randbytes(att_len)
            fname = 'file%d.%s' % (i, rng.choice(['png', 'pdf', 'bin']))
            ctype = {'png': ('image', 'png'), 'pdf': ('application', 'pdf'),
                     'bin': ('application', 'octet-stream')}[fname.rsplit('.', 1)[1]]
        b64 = _b64_lines(att)
        hdr.append('Content-Type: multipart/mixed;\r\n boundary="%s"' % boundary
                   if eol == b'\r\n' else
                   'Content-Type: multipart/mixed;\n boundary="%s"' % boundary)
        body = [b'', ('--' + boundary).encode(),
                b'Content-Type: text/plain; charset=utf-8',
                b'Content-Transfer-Encoding: 7bit', b'']
        body += [l.encode() for l in text_lines]
        body += [('--' + boundary).encode(),
                 ('Content-Type: %s/%s; name="%s"' % (ctype[0], ctype[1], fname)).encode(),
                 b'Content-Transfer-Encoding: base64',
                 ('Content-Disposition: attachment; filename="%s"' % fname).encode(), b'']
        body += [l.encode() for l in b64]
        body += [('--' + boundary + '--').encode()]
        parts = ('multipart', 'mixed', [
            ('text', 'plain', {'charset': 'utf-8'}, '7bit',
             b'\r\n'.join(l.encode() for l in text_lines)),
            (ctype[0], ctype[1], {'name': fname}, 'base64',
             b'\r\n'.join(l.encode() for l in b64)),
        ])
    else:  # pragma: no cover
        raise ValueError(kind)

    head = eol.join(h.encode('ascii') for h in hdr)
    if eol == b'\n':
        head = head.replace(b'\r\n', b'\n')
    raw = head + eol + eol + eol.join(body) + eol
    return GenMessage(index=i, raw=raw, message_id=msgid, subject=subject, date=date_s,
                      from_=frm, to=to, cc=cc, kind=kind, eol=eol, parts=parts,
                      in_reply_to=in_reply_to)


if __name__ == '__main__':
    import sys
    ms = generate()
    for m in ms:
        print(m.index, m.kind, 'LF' if m.eol == b'\n' else 'CRLF', len(m.raw), m.message_id)
    print('total', sum(len(m.raw) for m in ms), file=sys.stderr)
