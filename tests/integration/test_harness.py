"""Self-tests of the harness itself (maildir only, fast): LMTP wire format,
per-recipient LMTP replies, TLS helpers, users, doveadm, mail generator,
clean stop/restart."""

import glob
import os
import re
import signal
import socket
import threading
import time

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
    msg = b'Subject: wire\nX-A: b\n\n.\n..\n.dot\nbare\r\ncrlf\r\n.crlfdot\nend'
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
        if dc.is_24:
            # 2.4 reads DATA with strict CRLF.CRLF: only lines ending in
            # CRLF are dot-stuffed (LmtpClient.dot_stuff())
            want = (b'DATA\r\nSubject: wire\nX-A: b\n\n.\n..\n.dot\nbare\r\ncrlf\r\n'
                    b'..crlfdot\nend\r\n.\r\n')
        else:
            want = (b'DATA\r\nSubject: wire\nX-A: b\n\n..\n...\n..dot\nbare\r\ncrlf\r\n'
                    b'..crlfdot\nend\r\n.\r\n')
        assert want in data, data
        files = glob.glob(dc.mail_dir() + '/new/*')
        assert len(files) == 1
        stored = open(files[0], 'rb').read()
        assert stored.endswith(b'\nSubject: wire\nX-A: b\n\n.\n..\n.dot\nbare\ncrlf\n'
                               b'.crlfdot\nend\n'), stored
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


def test_quick_restarts_log_nothing():
    """start() returns with every Dovecot process started up, and a stop()
    right away leaves nothing behind and nothing in the log.  (start()'s
    probes make the master spawn login, lmtp, auth and stats processes; a
    SIGTERM while they start up left them blocked on the stats-writer and
    config sockets: "Timeout waiting for handshake response", "Error
    reading configuration ... Connection reset by peer".)"""
    with harness.Dovecot('maildir') as dc:
        for _ in range(2):
            kids = dc._children()
            assert kids and all(kids.values()), dc._describe(kids)
            pgid = dc.pgid
            dc.restart()
            assert not dc._pg_alive(pgid), dc._pg_members(pgid)
        pgid = dc.pgid
    assert not dc._pg_alive(pgid), dc._pg_members(pgid)
    dc.assert_no_log_errors()


def _sigterm_pending(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('ShdPnd:'):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def test_stop_kills_child_forked_at_sigterm():
    """A connection queued on a listener when the master gets SIGTERM makes
    it fork one more child before it handles the signal; that child would
    block in its start-up on sockets nobody serves any more (and log 5 s
    later).  stop() kills it by pid, and only the master's line about that
    kill is left out of log_errors()."""
    with harness.Dovecot('maildir') as dc:
        master = dc.pid
        held = []
        settle = dc.settle

        def resume_on_sigterm():
            deadline = time.monotonic() + 30
            while not _sigterm_pending(master) and time.monotonic() < deadline:
                time.sleep(0.01)
            os.kill(master, signal.SIGCONT)   # a stopped process can't exit: still ours

        def settle_then_queue(timeout=None):
            # once settled, freeze the master and queue a connection:
            # resumed after stop()'s SIGTERM, it finds both pending, the
            # connection first, and forks a pop3-login for it
            kids = settle(timeout)
            os.kill(master, signal.SIGSTOP)
            held.append(socket.create_connection(('127.0.0.1', dc.ports['pop3']),
                                                 timeout=30))
            t = threading.Thread(target=resume_on_sigterm)
            t.start()
            held.append(t)
            return kids
        dc.settle = settle_then_queue
        try:
            dc.stop()
        finally:
            if held:
                held[1].join(60)
                held[0].close()
    assert len(dc.killed_pids) == 1, dc.killed_pids
    killed = dc.killed_pids.pop()
    lines = dc.log_errors(include_benign=True)
    assert any(re.search(r'pop3-login: Fatal: master: service\(pop3-login\): child %d '
                         r'killed with signal 9' % killed, l) for l in lines), lines
    dc.killed_pids.add(killed)
    dc.assert_no_log_errors()


def test_log_errors_leave_out_only_harness_kills():
    dc = harness.Dovecot('maildir')
    dc.killed_pids.add(4242)
    lines = [
        'auth: Fatal: master: service(auth): child 4242 killed with signal 9',
        'pop3-login: Fatal: master: service(pop3-login): child 4242 killed with signal 9 '
        '[last ip=127.0.0.1]',
        'master: Error: service(log): child 4242 killed with signal 9',
        'auth: Fatal: master: service(auth): child 4243 killed with signal 9',
        'master: Warning: Killed with signal 15 (by pid=%d uid=0 code=kill)' % os.getpid(),
        'master: Warning: Killed with signal 15 (by pid=%d uid=0 code=kill)' % (os.getpid() + 1),
        'lmtp(4242): Error: conn unix:stats-writer: Timeout waiting for handshake response',
        'lmtp(4242): Info: Connect from 127.0.0.1',
    ]
    with open(dc.log_path, 'a') as f:
        f.write(''.join('2026-01-01 00:00:00 %s\n' % l for l in lines))
    got = [l.split(' ', 2)[2] for l in dc.log_errors()]
    assert got == [lines[3], lines[5], lines[6]], got
    assert len(dc.log_errors(include_benign=True)) == 7


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


# ---------------------------------------------------------------------------
# the config layer (dovecot_conf.py): 2.3 syntax in, the syntax of the
# Dovecot under test out

def test_config_translation_24():
    """The 2.3 -> 2.4 rules the tests rely on, rule by rule (pure Python:
    runs on either version)."""
    import dovecot_conf as dc24
    t = dc24.translate
    assert dc24.mail_location_24('lmdb:~/lmdb:INDEX=MEMORY:LAYOUT=fs') == [
        ('mail_driver', 'lmdb'), ('mail_path', '~/lmdb'),
        ('mail_index_path', 'MEMORY'), ('mailbox_list_layout', 'fs')]
    assert t('mail_location = maildir:~/Maildir:LAYOUT=index\n') == \
        'mail_driver = maildir\nmail_path = ~/Maildir\nmailbox_list_layout = index\n'
    # plugin {} settings become global; quota becomes a named quota filter
    assert t('plugin {\n  lmdb_autopurge_interval = 0\n  quota = count:User quota\n'
             '  quota_rule = *:storage=100M:messages=1000\n  quota_vsizes = yes\n}\n') == \
        ('quota "User quota" {\n  driver = count\n  storage_size = 100M\n'
         '  message_count = 1000\n  storage_grace = 10485760\n}\n'   # 2.3's default: 10%
         'lmdb_autopurge_interval = 0\n')
    assert t('protocol imap {\n  mail_plugins = $mail_plugins imap_quota\n}\n') == \
        'protocol imap {\n  mail_plugins {\n    imap_quota = yes\n  }\n}\n'
    assert t('mail_plugins = quota zlib\n') == 'mail_plugins = quota mail_compress\n'
    assert t('passdb {\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u /p\n}\n') \
        == ('passdb passwd-file {\n  driver = passwd-file\n  default_password_scheme = PLAIN\n'
            '  passwd_file_path = /p\n}\n')
    assert t('ssl_cert = </c.pem\nssl_key = </k.pem\ndisable_plaintext_auth = no\n') == \
        'ssl_server_cert_file = /c.pem\nssl_server_key_file = /k.pem\nauth_allow_cleartext = yes\n'
    assert t('import_environment = TZ LD_PRELOAD=/x.so\n') == \
        'import_environment {\n  TZ = %{env:TZ}\n  LD_PRELOAD = /x.so\n}\n'
    assert t('service lmtp {\n  service_count = 1\n  inet_listener lmtp {\n'
             '    address = 127.0.0.1\n  }\n}\n') == \
        ('service lmtp {\n  restart_request_count = 1\n  inet_listener lmtp {\n'
         '    listen = 127.0.0.1\n  }\n}\n')
    assert t('plugin {\n  lazy_expunge = EXPUNGED\n  zlib_save = gz\n}\n') == \
        'lazy_expunge_mailbox = EXPUNGED\nmail_compress_write_method = gz\n'
    # POP3 UIDL formats, userdb fields (passwd-file expands '%%' once), doveadm -o
    assert dc24.uidl_format_24('%08Xu%08Xv') == '%{uid | hex(8)}%{uidvalidity | hex(8)}'
    assert dc24.uidl_format_24('%g') == '%{guid}'
    assert t('pop3_uidl_format = %f\n') == 'pop3_uidl_format = %{filename}\n'
    assert dc24.userdb_fields('userdb_mail=lmdb:~/lmdb userdb_pop3_uidl_format=%%g '
                              'userdb_pop3_policy_dele=keep') == \
        ('userdb_mail_driver=lmdb userdb_mail_path=~/lmdb '
         'userdb_pop3_uidl_format=%%{guid} userdb_pop3_policy_dele=keep')
    assert dc24.doveadm_opts(['-o', 'pop3_uidl_format=%g', '-f', 'json']) == \
        ['-o', 'pop3_uidl_format=%{guid}', '-f', 'json']
    # what 2.4 no longer has is refused with the reason
    for text, why in (('plugin {\n  quota = dict:User quota::file:/q\n}\n', 'removed'),
                      ('service replicator {\n  process_min_avail = 1\n}\n', 'replicator'),
                      ('plugin {\n  mail_replica = tcp:127.0.0.1:1\n}\n', 'replication'),
                      ('mail_plugins = $mail_plugins replication\n', 'replication')):
        try:
            t(text)
        except dc24.Unsupported as e:
            assert why in str(e), (text, e)
        else:
            raise AssertionError('translated %r' % text)
    # the 2.3 text itself goes through unchanged on 2.3
    d = harness.Dovecot('maildir', extra='plugin {\n  quota = count:User quota\n}\n')
    if not d.is_24:
        assert d.config_text() == d.config_text_23()
        assert 'plugin {\n  quota = count:User quota\n}\n' in d.config_text()


def test_config_24_accepted_by_doveconf():
    """On 2.4, everything the translator writes is valid for 2.4's
    doveconf (start() checks each instance's config with doveconf -n; this
    config has one of every construct the tests use) and means what the
    2.3 text meant."""
    extra = ('lmtp_add_received_header = no\n'
             'mail_max_keyword_length = 50\n'
             'pop3_uidl_format = %g\n'
             'mail_attachment_dir = ~/att\n'
             'import_environment = TZ CORE_OUTOFMEM FAKETIME DLMDB_PROBE=1\n'
             'namespace inbox {\n  inbox = yes\n  separator = /\n  prefix =\n}\n'
             'plugin {\n  quota = count:User quota\n  quota_rule = *:storage=100k\n'
             '  quota_vsizes = yes\n  lazy_expunge = EXPUNGED\n'
             '  lazy_expunge_only_last_instance = yes\n}\n'
             'protocol imap {\n  mail_plugins = $mail_plugins imap_quota\n}\n'
             'service lmtp {\n  service_count = 1\n}\n'
             'service doveadm {\n  inet_listener {\n    address = 127.0.0.1\n'
             '    port = ' + str(harness.free_port()) + '\n  }\n}\n')
    dc = harness.Dovecot('maildir', tls=True, mail_plugins=('quota', 'lazy_expunge'),
                         extra=extra, mail_location='maildir:~/Maildir:LAYOUT=fs')
    if not dc.is_24:
        raise harness.Skip('Dovecot %s: no 2.4 doveconf here' % harness._version_str())
    out = dc.check_config()
    # (doveconf -n leaves out mailbox_list_layout = fs: the global default,
    # though maildir's own is maildir++; the mailbox below shows it applies)
    for want in ('mail_driver = maildir', 'mail_path = ~/Maildir', 'auth_allow_cleartext = yes', 'quota "User quota"',
                 'pop3_uidl_format = %{guid}', 'lazy_expunge_mailbox = EXPUNGED',
                 'mail_ext_attachment {\n  path = ~/att\n}',
                 'restart_request_count = 1', 'passwd_file_path = %s' % dc.path('passwd')):
        assert want in out, (want, out)
    # and it runs: quota over IMAP, the namespace's separator, a login
    with dc:
        imap = dc.imap()
        typ, data = imap.getquotaroot('INBOX')
        assert typ == 'OK' and b'User quota' in data[0][0], data
        typ, data = imap.list('""', 'INBOX')
        assert typ == 'OK' and b'"/"' in data[0], data
        typ, data = imap.create('a/b')
        assert typ == 'OK', data
        assert os.path.isdir(os.path.join(dc.mail_dir(), 'a', 'b', 'cur')), \
            list(os.walk(dc.mail_dir()))
        dc.assert_no_log_errors()
