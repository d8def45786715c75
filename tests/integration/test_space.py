"""Space: the LMDB map's ceiling, a full filesystem, compaction while other
sessions run, and reuse of freed pages (lmdb only: these are properties of
the LMDB environment)."""

import os
import subprocess
import threading
import time

import harness

USER = 'testuser'


def message(i: int, size: int) -> bytes:
    head = ('From: sender@example.com\r\nSubject: space %d\r\n'
            'Message-ID: <space-%d@example.com>\r\n\r\n' % (i, i)).encode()
    line = ('%06d ' % i).encode() + b'z' * 70 + b'\r\n'
    return head + line * (size // len(line) + 1)


def stats(dc) -> dict:
    out = dc.doveadm('lmdb', 'stats', user=USER).stdout
    return {k: int(v) for k, v in (kv.split('=') for kv in out.split())}


def data_mdb(dc) -> str:
    return os.path.join(dc.home(USER), 'lmdb', 'data.mdb')


def message_ids(dc) -> list[str]:
    return [mid for _uid, mid in dc.message_ids(USER)]


SMALL_MAP = ('plugin {\n'
             '  lmdb_map_size_initial = 1M\n'
             '  lmdb_map_size_max = 8M\n'
             '  lmdb_map_reserve = 1M\n'
             '  lmdb_autopurge_interval = 0\n'
             '}\n'
             'quota_full_tempfail = no\n')


def test_map_ceiling():
    """Deliveries stop at the ceiling minus the reserve with a temporary
    failure; reads, flags and expunges keep working; delivery resumes once
    space is freed. The map grows by itself until then."""
    with harness.Dovecot('lmdb', extra=SMALL_MAP) as dc:
        dc.start()
        client = dc.lmtp()
        delivered, refused = [], None
        for i in range(200):
            r = client.deliver('sender@example.com', [USER], message(i, 100_000))
            code = r.status[USER]
            if code == 250:
                delivered.append(i)
                continue
            refused = (i, code, r.data[USER])
            break
        client.quit()
        assert refused is not None, 'the 8M ceiling was never reached'
        # 451: temporary, so the sender retries; never 552 (bounce)
        assert refused[1] == 451, refused
        # the map grew past its 1M start by itself
        assert len(delivered) * 100_000 > 4_000_000, len(delivered)
        log = dc.wait_log('is full', 'lmdb_map_size_max')
        assert 'is full' in log and 'lmdb_map_size_max' in log, log[-2000:]

        imap = dc.imap(USER)
        typ, data = imap.select('INBOX')
        assert int(data[0]) == len(delivered)
        got = harness.imap_fetch(imap, '1:*', '(BODY.PEEK[])')
        for uid, item in got.items():
            i = delivered[uid - 1]
            assert harness.lf(item['BODY[]']).endswith(
                harness.lf(message(i, 100_000)).split(b'\n\n', 1)[1]), uid
        # at the ceiling, flag changes and expunges still fit
        typ, resp = imap.uid('STORE', '1:*', '+FLAGS', '(\\Seen $AtCeiling)')
        assert typ == 'OK', resp
        typ, resp = imap.uid('STORE', '1:10', '+FLAGS', '(\\Deleted)')
        assert typ == 'OK', resp
        typ, resp = imap.expunge()
        assert typ == 'OK', resp
        imap.logout()
        dc.doveadm('purge', user=USER)

        r = dc.lmtp_deliver([USER], message(1000, 100_000))
        assert r.status == {USER: 250}, r
        assert dc.doveadm('lmdb', 'verify', user=USER, check=False).returncode == 0
        flags = dc.doveadm('fetch', 'flags', 'mailbox', 'INBOX', 'all',
                           user=USER).stdout
        assert flags.count('$AtCeiling') == len(delivered) - 10


def test_address_space_limit():
    """The map must fit in the process's address space (Dovecot's
    vsz_limit). When growing it would not, delivery is refused with a
    temporary failure and an error naming vsz_limit, the process survives
    (LMDB unmaps the old map before a failed mmap: that used to crash it),
    nothing acknowledged is lost, and a larger vsz_limit lets mail in
    again."""
    config = ('default_vsz_limit = 200M\n'
              'plugin {\n  lmdb_map_size_initial = 8M\n}\n')
    with harness.Dovecot('lmdb', extra=config) as dc:
        dc.start()
        client = dc.lmtp()
        delivered, refused = 0, None
        for i in range(400):
            r = client.deliver('sender@example.com', [USER], message(i, 1_000_000))
            if r.status[USER] != 250:
                refused = (i, r.status[USER], r.data[USER])
                break
            delivered += 1
        client.quit()
        assert refused is not None, '400 MB fit under a 200M vsz_limit?'
        assert refused[1] == 451, refused
        # the map grew from 8M for as long as the limit allowed
        assert delivered > 60, delivered
        log = dc.wait_log('vsz_limit', 'default_vsz_limit')
        assert 'vsz_limit' in log and 'default_vsz_limit' in log, log[-2000:]
        assert 'killed with signal' not in log, log[-2000:]
        # the warning came first, while mail still fit
        warned = log.find('MB of data and this process may map')
        assert 0 <= warned < log.find('default_vsz_limit'), log[-3000:]
        # stats names a vsz_limit that fits this user's mail
        needed = int(stats(dc)['vsz_limit_needed'])
        assert 200 * 2**20 < needed <= 200 * 2**20 + 256 * 2**20, needed

        imap = dc.imap(USER)
        typ, data = imap.select('INBOX')
        assert int(data[0]) == delivered, (data, delivered)
        imap.logout()
        assert dc.doveadm('lmdb', 'verify', user=USER, check=False).returncode == 0

        dc.stop()
        dc.extra = config.replace('200M', '1G')
        dc.start()
        r = dc.lmtp_deliver([USER], message(1000, 1_000_000))
        assert r.status == {USER: 250}, r
        assert len(message_ids(dc)) == delivered + 1
        assert 'killed with signal' not in dc.log()


def test_full_filesystem():
    """A full filesystem gives deliveries a temporary failure and loses
    nothing that was acknowledged."""
    extra = ('plugin {\n  lmdb_autopurge_interval = 0\n}\n'
             'mail_location = lmdb:~/mail/lmdb\n')
    # not started yet: the tmpfs is mounted first (on 2.4 Dovecot's
    # processes run in a mount namespace made at start, which sees no
    # later mount); dc.start() below
    dc = harness.Dovecot('lmdb', extra=extra, mail_location='lmdb:~/mail/lmdb')
    mnt = os.path.join(dc.home(USER), 'mail')
    os.makedirs(mnt, exist_ok=True)
    r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=6m,mode=0700',
                        'tmpfs', mnt], capture_output=True, text=True)
    if r.returncode != 0:
        raise harness.Skip('cannot mount a tmpfs here: %s' % r.stderr.strip())
    try:
        os.chown(mnt, dc.uid, dc.gid)
        # something else on the same filesystem that can be removed
        # later to free space, as an admin would
        ballast = os.path.join(mnt, 'ballast')
        with open(ballast, 'wb') as f:
            f.write(b'\0' * 1_500_000)
        dc.start()
        client = dc.lmtp()
        acked, codes = [], []
        for i in range(100):
            res = client.deliver('sender@example.com', [USER],
                                 message(i, 200_000))
            codes.append(res.status[USER])
            if res.status[USER] == 250:
                acked.append(i)
            elif len(codes) - len(acked) >= 3:
                break
        client.quit()
        failures = [c for c in codes if c != 250]
        assert failures, 'the 6M filesystem never filled up'
        assert all(400 <= c < 500 for c in failures), codes
        # every acknowledged message is there, byte for byte
        ids = message_ids(dc)
        assert sorted(ids) == sorted('<space-%d@example.com>' % i
                                     for i in acked), (ids, acked)
        log = dc.log()
        assert 'No space left on device' in log, log[-2000:]
        # reading still works on the full filesystem
        imap = dc.imap(USER)
        typ, data = imap.select('INBOX')
        assert typ == 'OK' and int(data[0]) == len(acked), data
        got = harness.imap_fetch(imap, '1:*', '(RFC822.SIZE)')
        assert len(got) == len(acked)
        imap.logout()
        # space freed: delivery resumes, and expunges work again
        os.unlink(ballast)
        res = dc.lmtp_deliver([USER], message(999, 200_000))
        assert res.status == {USER: 250}, res
        dc.doveadm('expunge', 'mailbox', 'INBOX', 'uid', '1:3', user=USER)
        dc.doveadm('purge', user=USER)
        assert len(message_ids(dc)) == len(acked) + 1 - 3
        assert dc.doveadm('lmdb', 'verify', user=USER,
                          check=False).returncode == 0
    finally:
        dc.stop()
        subprocess.run(['umount', '-l', mnt], capture_output=True)


def test_compact_under_load():
    """doveadm lmdb compact while deliveries and IMAP sessions run: exact
    message counts, nothing lost, the file shrinks."""
    extra = 'plugin {\n  lmdb_autopurge_interval = 0\n}\n'
    with harness.Dovecot('lmdb', extra=extra) as dc:
        dc.start()
        dc.lmtp_deliver_many([USER], [message(i, 30_000) for i in range(300)])
        dc.doveadm('expunge', 'mailbox', 'INBOX', 'uid', '1:200', user=USER)
        dc.doveadm('purge', user=USER)
        before = stats(dc)
        assert before['reclaimable_bytes'] > 3_000_000, before

        stop = threading.Event()
        errors = []
        acked = []

        def writer(base):
            try:
                c = dc.lmtp()
                for i in range(base, base + 150):
                    r = c.deliver('sender@example.com', [USER], message(i, 20_000))
                    if r.status[USER] == 250:
                        acked.append(i)
                    else:
                        errors.append(('lmtp', i, r.status))
                c.quit()
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(('writer', repr(e)))

        def reader():
            try:
                imap = dc.imap(USER)
                while not stop.is_set():
                    typ, data = imap.select('INBOX')
                    assert typ == 'OK', data
                    n = int(data[0])
                    if n:
                        typ, data = imap.fetch('%d' % max(1, n - 3) + ':*',
                                               '(BODY.PEEK[] FLAGS)')
                        assert typ == 'OK', data
                imap.logout()
            except Exception as e:  # noqa: BLE001
                errors.append(('reader', repr(e)))

        threads = [threading.Thread(target=writer, args=(1000,)),
                   threading.Thread(target=writer, args=(2000,)),
                   threading.Thread(target=reader)]
        for t in threads:
            t.start()
        compacted = []
        for _ in range(2):
            time.sleep(0.3)
            r = dc.doveadm('lmdb', 'compact', user=USER, check=False)
            assert r.returncode == 0, r.stderr
            compacted.append(r.stdout)
        for t in threads[:2]:
            t.join(120)
        stop.set()
        threads[2].join(60)
        assert not errors, errors

        ids = message_ids(dc)
        expected = ['<space-%d@example.com>' % i for i in range(200, 300)] + \
            ['<space-%d@example.com>' % i for i in acked]
        assert len(ids) == len(set(ids)), 'duplicates'
        assert sorted(ids) == sorted(expected)
        assert len(acked) == 300
        after = stats(dc)
        assert after['messages'] == 400, after
        # the first compaction gave back what purge had freed
        first = dict(kv.split('=') for kv in compacted[0].split())
        assert int(first['reclaimed']) > 2_000_000, compacted
        assert dc.doveadm('lmdb', 'verify', user=USER, check=False).returncode == 0
        assert not dc.log_errors(include_warnings=False), dc.log_errors()


def test_free_pages_reused():
    """Deleting mail and delivering the same volume again grows the file
    by less than 10 %: LMDB reuses the pages purge freed."""
    extra = 'plugin {\n  lmdb_autopurge_interval = 0\n}\n'
    with harness.Dovecot('lmdb', extra=extra) as dc:
        dc.start()
        batch = [message(i, 40_000) for i in range(150)]
        dc.lmtp_deliver_many([USER], batch)
        size1 = os.path.getsize(data_mdb(dc))
        dc.doveadm('expunge', 'mailbox', 'INBOX', 'all', user=USER)
        dc.doveadm('purge', user=USER)
        assert stats(dc)['bodies'] == 0
        dc.lmtp_deliver_many([USER], [message(i + 500, 40_000) for i in range(150)])
        size2 = os.path.getsize(data_mdb(dc))
        assert size2 < size1 * 1.10, (size1, size2)
        assert stats(dc)['messages'] == 150
