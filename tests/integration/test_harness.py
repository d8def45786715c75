"""Self-tests of the harness itself (maildir only, fast): LMTP wire format,
per-recipient LMTP replies, TLS helpers, users, doveadm, mail generator."""

import glob
import os
import re

import harness
import mailgen
from harness import imap_fetch, pop3_multiline


def test_mailgen_deterministic():
    a = mailgen.generate(100)
    b = mailgen.generate(100)
    assert [m.raw for m in a] == [m.raw for m in b]
    assert len(a) == 100
    assert len({m.message_id for m in a}) == 100
    for m in a:
        assert m.raw.count(b'\nMessage-ID: ' + m.message_id.encode()) == 1, m.index
        if m.eol == b'\r\n':
            assert m.raw.count(b'\n') == m.raw.count(b'\r\n'), m.index
        else:
            assert b'\r' not in m.raw, m.index
    kinds = {m.kind for m in a}
    assert kinds >= {'plain', 'alternative', 'mixed', 'latin1', 'utf8', 'folded', 'dots', 'big'}
    assert sum(1 for m in a if m.eol == b'\n') >= 5
    big = [m for m in a if m.kind == 'big']
    assert len(big) == 1 and 5_000_000 <= len(big[0].raw) <= 6_000_000, len(big[0].raw)
    assert any(b'\x80' <= bytes([c]) for m in a if m.kind == 'latin1' for c in m.raw[-200:])


def test_lmtp_wire_is_exact():
    """What the LMTP server receives is exactly our bytes (bare LF kept),
    dot-stuffed; and what is stored is the un-stuffed message."""
    msg = b'Subject: wire\nX-A: b\n\n.\n..\n.dot\nbare\r\ncrlf\nend'
    with harness.Dovecot('maildir', extra='') as dc:
        raw_dir = dc.path('rawlog')
        os.mkdir(raw_dir)
        dc.extra = 'lmtp_rawlog_dir = %s\n' % raw_dir
        dc.restart()
        r = dc.lmtp_deliver('testuser', msg)
        assert r.all_ok(), r
        ins = b''.join(open(f, 'rb').read() for f in sorted(glob.glob(raw_dir + '/*.in')))
        # rawlog lines are "<timestamp> <data>"
        data = re.sub(rb'(?m)^\d+\.\d+ ', b'', ins)
        assert b'DATA\r\nSubject: wire\nX-A: b\n\n..\n...\n..dot\nbare\r\ncrlf\nend\r\n.\r\n' \
            in data, data
        files = glob.glob(dc.mail_dir() + '/new/*')
        assert len(files) == 1
        stored = open(files[0], 'rb').read()
        assert stored.endswith(b'\nSubject: wire\nX-A: b\n\n.\n..\n.dot\nbare\ncrlf\nend\n'), stored
        dc.assert_no_log_errors()


def test_lmtp_per_recipient_replies():
    with harness.Dovecot('maildir', users=['alice', ('bob', 'secret')]) as dc:
        r = dc.lmtp_deliver(['alice', 'nosuchuser', 'bob', 'testuser'],
                            b'Subject: multi\r\n\r\nhello\r\n')
        assert r.rcpt['nosuchuser'][0] == 550, r
        assert r.status == {'alice': 250, 'nosuchuser': 550, 'bob': 250, 'testuser': 250}, r
        assert set(r.data) == {'alice', 'bob', 'testuser'}
        for u, pw in (('alice', 'testpass'), ('bob', 'secret'), ('testuser', 'testpass')):
            imap = dc.imap(u, pw)
            typ, data = imap.select('INBOX')
            assert data == [b'1'], (u, data)
            body = imap_fetch(imap, '1', '(BODY.PEEK[TEXT])')[1]['BODY[TEXT]']
            assert body == b'hello\r\n'
            imap.logout()
        # only unknown recipients: no DATA at all
        r = dc.lmtp_deliver(['ghost'], b'Subject: x\r\n\r\ny\r\n')
        assert r.status == {'ghost': 550} and r.data_cmd is None, r
        # a user added while running
        dc.add_user('carol', 'pw3')
        r = dc.lmtp_deliver('carol', b'Subject: late\r\n\r\nz\r\n')
        assert r.all_ok(), r
        pop = dc.pop3('carol')
        assert pop.stat()[0] == 1
        pop.quit()
        st = dc.doveadm('mailbox', 'status', 'messages', 'INBOX', user='bob').stdout
        assert st.strip() == 'INBOX messages=1', st
        assert dc.doveadm('user', 'nobody-here', check=False).returncode != 0
        dc.assert_no_log_errors()


def test_tls_helpers():
    with harness.Dovecot('maildir', tls=True) as dc:
        assert set(dc.ports) == {'imap', 'pop3', 'lmtp', 'imaps', 'pop3s'}
        assert dc.lmtp_deliver('testuser', b'Subject: tls\r\n\r\nsecret\r\n').all_ok()
        for conn in (dc.imap_ssl(), dc.imap_starttls()):
            assert conn.sock.version() is not None  # an SSLSocket
            assert conn.select('INBOX')[1] == [b'1']
            conn.logout()
        for conn in (dc.pop3_ssl(), dc.pop3_stls()):
            assert conn.sock.version() is not None
            assert pop3_multiline(conn, 'RETR 1')[1].endswith(b'\r\n\r\nsecret\r\n')
            conn.quit()
        dc.assert_no_log_errors()


def test_restart_keeps_ports_and_data():
    with harness.Dovecot('maildir') as dc:
        ports = dict(dc.ports)
        pid = dc.pid
        assert dc.lmtp_deliver('testuser', b'Subject: r\r\n\r\nx\r\n').all_ok()
        dc.restart()
        assert dc.ports == ports and dc.pid != pid and dc.running
        imap = dc.imap()
        assert imap.select('INBOX')[1] == [b'1']
        imap.logout()
    assert not dc.running
    assert not dc._pg_alive(dc.pgid)


def test_module_missing_is_clear():
    old = os.environ.get('DLMDB_BUILD_DIR')
    os.environ['DLMDB_BUILD_DIR'] = '/nonexistent-build-dir'
    try:
        harness.Dovecot('lmdb')
        raise AssertionError('expected ModuleMissing')
    except harness.ModuleMissing as e:
        assert 'lib10_storage_lmdb_plugin.so' in str(e) and 'DLMDB_BUILD_DIR' in str(e), e
    finally:
        if old is None:
            del os.environ['DLMDB_BUILD_DIR']
        else:
            os.environ['DLMDB_BUILD_DIR'] = old


def test_bad_config_is_reported():
    dc = harness.Dovecot('maildir', extra='this_is_not_a_setting = 1\n')
    try:
        dc.start()
        raise AssertionError('start() with a bad config succeeded')
    except harness.HarnessError as e:
        assert 'this_is_not_a_setting' in str(e), e
    assert not dc.running
