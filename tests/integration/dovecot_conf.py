"""Dovecot configuration in the syntax of the Dovecot under test.

The harness and the tests write configuration in Dovecot 2.3 syntax
(mail_location, plugin {} blocks, quota_rule, %u...).  When the Dovecot
under test is 2.4, translate() rewrites that text into 2.4 syntax, and
userdb_fields() / doveadm_opts() do the same for passwd-file extra fields
and doveadm -o options.  One place knows both syntaxes; a test states its
settings once.

The 2.4 rules are those of Dovecot 2.4.1 (src/*/…-settings.c and the
upgrade notes, docs/installation/upgrade/2.3-to-2.4.md):
  * mail_location = DRIVER:PATH[:KEY=VALUE...] -> mail_driver, mail_path,
    mail_index_path (INDEX=), mail_control_path (CONTROL=),
    mailbox_list_layout (LAYOUT=), mail_alt_path (ALT=), mail_inbox_path
    (INBOX=), ...; namespace { location } the same inside the namespace;
    the userdb field mail= likewise;
  * plugin { } is gone: its settings are global, some renamed; quota and
    quota_rule become a `quota "NAME" { }` filter;
  * mail_plugins is a boollist: `$mail_plugins x` -> `mail_plugins { x = yes }`;
  * passdb/userdb sections are named and take passwd_file_path;
  * ssl_cert/ssl_key = <file -> ssl_server_cert_file/ssl_server_key_file = file;
  * disable_plaintext_auth -> auth_allow_cleartext (inverted);
  * import_environment is a string list: `import_environment { K = V }`;
  * service_count -> restart_request_count, idle_kill -> idle_kill_interval,
    inet_listener address -> listen;
  * %-variables of pop3_uidl_format (%g, %08Xu...) -> %{guid}, %{uid | hex(8)}...
A 2.3 construct with no 2.4 form raises Unsupported (the harness reports
the test as skipped with that reason).  Anything the translator does not
know is passed through unchanged: doveconf judges it.
"""

from __future__ import annotations

import re
import subprocess

__all__ = ['Unsupported', 'binary_version', 'parse', 'render', 'translate',
           'userdb_fields', 'doveadm_opts', 'uidl_format_24', 'mail_location_24',
           'plugin_name_24',
           'header_24']


class Unsupported(Exception):
    """A 2.3 setting that Dovecot 2.4 can't express (removed feature)."""


def binary_version(binary: str, root: str = '') -> tuple[int, ...] | None:
    """(major, minor, micro) of `binary --version`, e.g. '2.4.1 (7d8c0e5759)'
    -> (2, 4, 1); None if it can't be run.  root: run it chroot'ed there."""
    cmd = [binary, '--version']
    if root:
        cmd = ['chroot', root] + cmd
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    mo = re.match(r'\s*(\d+)\.(\d+)(?:\.(\d+))?', r.stdout)
    if r.returncode != 0 or not mo:
        return None
    return tuple(int(x or 0) for x in mo.groups())


def header_24(version: tuple[int, ...], storage_version: str | None = None) -> str:
    """The two lines a 2.4 config must start with.  dovecot_storage_version
    is the oldest Dovecot that must read what this one writes (default:
    the version under test)."""
    v = '%d.%d.%d' % tuple(version[:3])
    return ('dovecot_config_version = %s\ndovecot_storage_version = %s\n'
            % (v, storage_version or v))


# ---------------------------------------------------------------------------
# a small model of Dovecot's config syntax (shared by 2.3 and 2.4)

class Setting:
    def __init__(self, key: str, value: str):
        self.key, self.value = key, value

    def __repr__(self):
        return 'Setting(%r, %r)' % (self.key, self.value)


class Section:
    def __init__(self, kind: str, name: str | None, body: list):
        self.kind, self.name, self.body = kind, name, body

    def __repr__(self):
        return 'Section(%r, %r, %r)' % (self.kind, self.name, self.body)


class Raw:
    """A line kept as it is (comments, !include)."""

    def __init__(self, text: str):
        self.text = text


_SECTION_RE = re.compile(r'^([A-Za-z0-9_.-]+)(?:\s+("[^"]*"|\S+))?\s*\{$')
_SETTING_RE = re.compile(r'^([^=\s{}]+)\s*=\s*(.*)$')


def parse(text: str) -> list:
    """Config text -> [Setting | Section | Raw].  Values stay as written
    (quotes included)."""
    stack: list[list] = [[]]
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s:
            continue
        if s.startswith('#') or s.startswith('!'):
            stack[-1].append(Raw(s))
        elif s == '}':
            if len(stack) == 1:
                raise ValueError('config line %d: unbalanced }' % n)
            stack.pop()
        elif _SECTION_RE.match(s):
            mo = _SECTION_RE.match(s)
            sec = Section(mo.group(1), mo.group(2), [])
            stack[-1].append(sec)
            stack.append(sec.body)
        elif _SETTING_RE.match(s):
            mo = _SETTING_RE.match(s)
            stack[-1].append(Setting(mo.group(1), mo.group(2).strip()))
        else:
            raise ValueError('config line %d: cannot parse %r' % (n, line))
    if len(stack) != 1:
        raise ValueError('config: unclosed section')
    return stack[0]


def render(nodes: list, indent: int = 0) -> str:
    out = []
    pad = '  ' * indent
    for node in nodes:
        if isinstance(node, Raw):
            out.append(pad + node.text + '\n')
        elif isinstance(node, Setting):
            out.append('%s%s = %s\n' % (pad, node.key, node.value) if node.value != ''
                       else '%s%s =\n' % (pad, node.key))
        else:
            head = node.kind + (' ' + node.name if node.name else '')
            out.append('%s%s {\n%s%s}\n' % (pad, head, render(node.body, indent + 1), pad))
    return ''.join(out)


# ---------------------------------------------------------------------------
# value translations

# mail_location KEY= parts (2.3 mailbox_list_settings_parse()) -> 2.4 settings
_LOCATION_KEYS = {
    'INBOX': 'mail_inbox_path',
    'INDEX': 'mail_index_path',
    'INDEXPVT': 'mail_index_private_path',
    'INDEXCACHE': 'mail_cache_path',
    'CONTROL': 'mail_control_path',
    'VOLATILEDIR': 'mail_volatile_path',
    'ALT': 'mail_alt_path',
    'LAYOUT': 'mailbox_list_layout',
    'SUBSCRIPTIONS': 'mailbox_subscriptions_filename',
    'DIRNAME': 'mailbox_directory_name',
    'MAILBOXDIR': 'mailbox_root_directory_name',
    'LISTINDEX': 'mailbox_list_index_prefix',
}
_LOCATION_FLAGS = {
    'ITERINDEX': ('mailbox_list_iter_from_index_dir', 'yes'),
    'NO-NOSELECT': ('mailbox_list_drop_noselect', 'yes'),
    'NO-FS-VALIDATION': ('mailbox_list_validate_fs_names', 'no'),
    'UTF-8': ('mailbox_list_utf8', 'yes'),
    'ALTNOCHECK': ('mail_alt_check', 'no'),
}


def mail_location_24(location: str) -> list[tuple[str, str]]:
    """'lmdb:~/lmdb:INDEX=MEMORY' -> [('mail_driver', 'lmdb'),
    ('mail_path', '~/lmdb'), ('mail_index_path', 'MEMORY')]."""
    location = _unquote(location)
    if ':' not in location:
        # 'auto' or a bare driver name
        return [('mail_driver', location)] if location else []
    driver, rest = location.split(':', 1)
    parts = rest.split(':')
    out = [('mail_driver', driver), ('mail_path', _var_24(parts[0]))]
    for p in parts[1:]:
        if not p:
            continue
        key, eq, value = p.partition('=')
        if eq and key in _LOCATION_KEYS:
            out.append((_LOCATION_KEYS[key], _var_24(value)))
        elif not eq and key in _LOCATION_FLAGS:
            out.append(_LOCATION_FLAGS[key])
        elif key == 'FULLDIRNAME':
            out += [('mailbox_directory_name', _var_24(value)),
                    ('mailbox_directory_name_legacy', 'no')]
        else:
            raise Unsupported('mail_location part %r has no 2.4 form' % p)
    return out


# one-letter variables of user/path settings (not of pop3_uidl_format)
_USER_VARS = {'u': 'user', 'n': 'user | username', 'd': 'user | domain',
              'h': 'home', 's': 'service', 'r': 'remote_ip', 'l': 'local_ip'}


def _var_24(value: str, escaped: bool = False) -> str:
    """%u/%n/%d/%h... of a 2.3 value -> %{user}/...; '%%' stays a literal
    percent.  escaped: the value passes one more expansion first (a
    passwd-file field), so '%%X' means a literal '%X' there."""
    def sub(mo):
        v = mo.group(1)
        if v == '%':
            return '%%'
        if v in _USER_VARS:
            return '%%{%s}' % _USER_VARS[v]
        raise Unsupported('variable %%%s in %r has no 2.4 translation here' % (v, value))
    if '%' not in value:
        return value
    return re.sub(r'%([%a-zA-Z])', sub, value)


# pop3_uidl_format: %[0][width][X|x]<var>; 2.3 hex is lowercase, as 2.4's hex()
_UIDL_VARS = {'u': 'uid', 'v': 'uidvalidity', 'g': 'guid', 'm': 'md5', 'f': 'filename'}
_UIDL_RE = re.compile(r'%(%|(0?)(\d*)([Xx]?)([a-zA-Z]))')


def uidl_format_24(fmt: str) -> str:
    """'%08Xu%08Xv' -> '%{uid | hex(8)}%{uidvalidity | hex(8)}', '%g' -> '%{guid}'."""
    def sub(mo):
        if mo.group(1) == '%':
            return '%%'
        _zero, width, hexa, var = mo.group(2), mo.group(3), mo.group(4), mo.group(5)
        if var not in _UIDL_VARS:
            raise Unsupported('pop3_uidl_format variable %%%s has no 2.4 form' % var)
        name = _UIDL_VARS[var]
        if hexa:
            return '%%{%s | hex(%s)}' % (name, width) if width else '%%{%s | hex}' % name
        if width:
            raise Unsupported('pop3_uidl_format %r: decimal padding not translated to 2.4' % fmt)
        return '%%{%s}' % name
    return _UIDL_RE.sub(sub, fmt)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _file_value(value: str) -> str:
    """'<path' (2.3: the file's content) -> 'path' (2.4 *_file settings)."""
    value = _unquote(value)
    return value[1:] if value.startswith('<') else value


# ---------------------------------------------------------------------------
# settings

# plain renames (any level)
_RENAMES = {
    'mail_attachment_dir': 'mail_ext_attachment_path',
    'mail_attachment_min_size': 'mail_ext_attachment_min_size',
    'mail_attachment_hash': 'mail_ext_attachment_hash',
    'lazy_expunge': 'lazy_expunge_mailbox',
    'quota_max_mail_size': 'quota_mail_size',
    'ssl_ca_dir': 'ssl_client_ca_dir',
    'ssl_ca_file': 'ssl_client_ca_file',
    'default_idle_kill': 'default_idle_kill_interval',
}
# value = <file -> *_file = path
_FILE_RENAMES = {
    'ssl_cert': 'ssl_server_cert_file',
    'ssl_key': 'ssl_server_key_file',
    'ssl_dh': 'ssl_server_dh_file',
    'mail_crypt_global_public_key': 'crypt_global_public_key_file',
}
# settings removed in 2.4 and why
_REMOVED = {
    'mail_replica': 'replication (the replicator service) was removed in Dovecot 2.4',
    'replication_sync_timeout': 'replication was removed in Dovecot 2.4',
    'replication_full_sync_interval': 'replication was removed in Dovecot 2.4',
    'replication_dsync_parameters': 'replication was removed in Dovecot 2.4',
    'quota_set': 'quota_set (SETQUOTA) was removed in Dovecot 2.4',
}
_REMOVED_SERVICES = {
    'replicator': 'the replicator service was removed in Dovecot 2.4',
    'aggregator': 'the aggregator service (replication) was removed in Dovecot 2.4',
    'director': 'the director was removed in Dovecot 2.4',
}
_REMOVED_PLUGINS = {
    'replication': 'the replication plugin was removed in Dovecot 2.4',
    'old_stats': 'old_stats was removed in Dovecot 2.4',
    'imap_old_stats': 'old_stats was removed in Dovecot 2.4',
    'fts_lucene': 'fts-lucene was removed in Dovecot 2.4',
    'fts_squat': 'fts-squat was removed in Dovecot 2.4',
    'mailbox_alias': 'mailbox-alias was removed in Dovecot 2.4',
}
# plugin renames in mail_plugins (None: built in / nothing to load)
_PLUGIN_RENAMES = {'zlib': 'mail_compress', 'imap_zlib': None, 'listescape': None}


def plugin_name_24(name: str) -> str | None:
    """The 2.4 name of a 2.3 mail plugin (None: nothing to load any more)."""
    if name in _REMOVED_PLUGINS:
        raise Unsupported(_REMOVED_PLUGINS[name])
    return _PLUGIN_RENAMES.get(name, name)


def _mail_plugins_24(value: str) -> Setting | Section:
    words = _unquote(value).split()
    append = '$mail_plugins' in words
    names = []
    for w in words:
        if w == '$mail_plugins':
            continue
        if w.startswith('$'):
            raise Unsupported('mail_plugins variable %s has no 2.4 form' % w)
        w = plugin_name_24(w)
        if w and w not in names:
            names.append(w)
    if append:
        return Section('mail_plugins', None, [Setting(n, 'yes') for n in names])
    return Setting('mail_plugins', ' '.join(names))


def _import_environment_24(value: str) -> Section:
    body = []
    for w in _unquote(value).split():
        key, eq, val = w.partition('=')
        body.append(Setting(key, val if eq else '%%{env:%s}' % key))
    return Section('import_environment', None, body)


def _setting_24(key: str, value: str, ctx: tuple) -> list:
    """One 2.3 setting in context ctx (tuple of enclosing section kinds)
    -> 2.4 nodes."""
    kind = ctx[-1] if ctx else None
    if key in _REMOVED:
        raise Unsupported(_REMOVED[key])
    if key in ('mail_location', 'mail') or (key == 'location' and kind == 'namespace'):
        return [Setting(k, v) for k, v in mail_location_24(value)]
    if key == 'mail_plugins':
        return [_mail_plugins_24(value)]
    if key == 'import_environment':
        return [_import_environment_24(value)]
    if key == 'disable_plaintext_auth':
        return [Setting('auth_allow_cleartext',
                        'no' if _unquote(value) in ('yes', '') else 'yes')]
    if key == 'pop3_uidl_format':
        return [Setting(key, uidl_format_24(value))]
    if key in _FILE_RENAMES:
        return [Setting(_FILE_RENAMES[key], _file_value(value))]
    if key == 'mail_crypt_global_private_key':
        return [Section('crypt_global_private_key', 'main',
                        [Setting('crypt_private_key_file', _file_value(value))])]
    if key == 'mail_crypt_save_version':
        if _unquote(value) != '2':
            raise Unsupported('mail_crypt_save_version = %s has no 2.4 form' % value)
        return []   # 2.4 always writes the version-2 format
    if key == 'zlib_save':
        return [Setting('mail_compress_write_method', value)]
    if key == 'zlib_save_level':
        # 2.4 has a level per method (compress_<method>_level); the tests
        # compress with gz
        return [Setting('compress_gz_level', value)]
    if kind == 'service':
        if key == 'service_count':
            return [Setting('restart_request_count',
                            'unlimited' if _unquote(value) == '0' else value)]
        if key == 'idle_kill':
            return [Setting('idle_kill_interval', value)]
    if kind == 'inet_listener' and key == 'address':
        return [Setting('listen', value)]
    if key in _RENAMES:
        return [Setting(_RENAMES[key], value)]
    if key in ('mail_home',) or key.endswith('_dir') and '%' in value:
        return [Setting(key, _var_24(value))]
    return [Setting(key, value)]


# quota (plugin settings quota, quota2, ... and quota_rule, quota_rule2, ...)
_QUOTA_RULE_KEYS = {'storage': 'storage_size', 'bytes': 'storage_size',
                    'messages': 'message_count'}


def _quota_24(plugin_settings: list) -> tuple[list, list]:
    """Pull quota/quota_rule/quota_grace/quota_vsizes out of a plugin {}
    block.  -> (quota filter sections, remaining settings)."""
    roots: dict[str, dict] = {}
    rest = []
    for s in plugin_settings:
        mo = re.fullmatch(r'quota(\d*)(_rule\d*|_grace|_vsizes|_warning\d*)?', s.key) \
            if isinstance(s, Setting) else None
        if not mo:
            rest.append(s)
            continue
        idx, what = mo.group(1) or '', mo.group(2) or ''
        if what == '_vsizes':
            continue        # 2.4's count driver always counts virtual sizes
        if what.startswith('_warning'):
            raise Unsupported('quota_warning scripts: not translated to 2.4')
        root = roots.setdefault(idx, {'rules': []}) if what in ('', '_grace') else None
        if what == '':
            driver, _, rest_args = _unquote(s.value).partition(':')
            # count and maildir are 2.4 quota drivers of the same name
            if driver not in ('count', 'maildir'):
                raise Unsupported('quota backend %r was removed in Dovecot 2.4 '
                                  '(only count, maildir, fs, imapc are left)' % driver
                                  if driver in ('dict', 'dirsize') else
                                  'quota backend %r: not translated to 2.4' % driver)
            name = rest_args.split(':', 1)[0] or 'User quota'
            root.update(driver=driver, name=name)
        elif what == '_grace':
            root['grace'] = _unquote(s.value)
        else:
            # quota_rule (root 1), quota_rule2 (root 1 too: rules are per root
            # only by mailbox pattern); only '*' rules are translated
            r = roots.setdefault('', {'rules': []})
            r['rules'].append(_unquote(s.value))
    sections = []
    for idx, root in sorted(roots.items()):
        if 'driver' not in root:
            raise Unsupported('quota_rule without quota')
        body = [Setting('driver', root['driver'])]
        storage = None
        for rule in root['rules']:
            mbox, _, limits = rule.partition(':')
            if mbox != '*':
                raise Unsupported('per-mailbox quota_rule %r: not translated to 2.4' % rule)
            for lim in limits.split(':'):
                k, _, v = lim.partition('=')
                if k == 'ignore' or k not in _QUOTA_RULE_KEYS:
                    raise Unsupported('quota_rule part %r: not translated to 2.4' % lim)
                body.append(Setting(_QUOTA_RULE_KEYS[k], v))
                if _QUOTA_RULE_KEYS[k] == 'storage_size':
                    storage = v
        # 2.3's quota_grace defaults to 10%% of the limit, 2.4's
        # quota_storage_grace to 10M and takes no percentage
        grace = root.get('grace', '10%')
        if grace.endswith('%'):
            if storage is not None:
                body.append(Setting('storage_grace', '%d' % (_size_bytes(storage) *
                                                             int(grace[:-1]) // 100)))
        else:
            body.append(Setting('storage_grace', grace))
        sections.append(Section('quota', '"%s"' % root['name'], body))
    return sections, rest


_SIZE_UNITS = {'': 1, 'b': 1, 'k': 1 << 10, 'm': 1 << 20, 'g': 1 << 30, 't': 1 << 40}


def _size_bytes(value: str) -> int:
    mo = re.fullmatch(r'\s*(\d+)\s*([bkmgtBKMGT]?)[bB]?\s*', value)
    if not mo:
        raise Unsupported('size %r: not translated to 2.4' % value)
    return int(mo.group(1)) * _SIZE_UNITS[mo.group(2).lower()]


def _static_args_24(kind: str, args: str) -> list:
    """2.3's static passdb/userdb args -> 2.4: passdb 'password=X' is the
    passdb's password setting; userdb 'uid=.. gid=.. home=..' its fields { }
    (%u... as %{user}...)."""
    pairs = [a.partition('=') for a in args.split()]
    if any(not eq for _k, eq, _v in pairs):
        raise Unsupported('%s static args %r: not translated to 2.4' % (kind, args))
    if kind == 'passdb':
        if [k for k, _eq, _v in pairs] != ['password']:
            raise Unsupported('passdb static args %r: only password= is translated '
                              'to 2.4' % args)
        return [Setting('password', pairs[0][2])]
    return [Section('fields', None, [Setting(k, _var_24(v)) for k, _eq, v in pairs])]


def _passdb_userdb_24(sec: Section) -> Section:
    driver = None
    args = None
    body = []
    for n in sec.body:
        if isinstance(n, Setting) and n.key == 'driver':
            driver = _unquote(n.value)
        elif isinstance(n, Setting) and n.key == 'args':
            args = _unquote(n.value)
        else:
            body.extend(_nodes_24([n], (sec.kind,)))
    if driver is None:
        raise ValueError('%s without driver' % sec.kind)
    out = [Setting('driver', driver)]
    if args is not None and driver == 'static':
        out += _static_args_24(sec.kind, args)
    elif args is not None:
        if driver != 'passwd-file':
            raise Unsupported('%s %s args: not translated to 2.4' % (sec.kind, driver))
        path = None
        for a in args.split():
            k, eq, v = a.partition('=')
            if not eq:
                path = _var_24(a)
            elif k == 'scheme':
                out.append(Setting('default_password_scheme', v))
            elif k == 'username_format' and v in ('%u', '%{user}'):
                pass    # 2.4 looks the user up as given
            else:
                raise Unsupported('passwd-file arg %r: not translated to 2.4' % a)
        if path:
            out.append(Setting('passwd_file_path', path))
    return Section(sec.kind, sec.name or driver, out + body)


def _nodes_24(nodes: list, ctx: tuple = ()) -> list:
    out = []
    for n in nodes:
        if isinstance(n, Raw):
            out.append(n)
        elif isinstance(n, Setting):
            out.extend(_setting_24(n.key, n.value, ctx))
        elif n.kind == 'plugin':
            quota, rest = _quota_24(n.body)
            out.extend(quota)
            out.extend(_nodes_24(rest, ctx))
        elif n.kind in ('passdb', 'userdb'):
            out.append(_passdb_userdb_24(n))
        elif n.kind == 'service' and n.name in _REMOVED_SERVICES:
            raise Unsupported(_REMOVED_SERVICES[n.name])
        else:
            name = n.name
            if name is None and n.kind == 'inet_listener':
                # 2.4 listeners are named; 2.3's unnamed one was ""
                name = 'unnamed'
            out.append(Section(n.kind, name, _nodes_24(n.body, ctx + (n.kind,))))
    return out


def translate(text: str) -> str:
    """2.3 config text -> 2.4 config text (without the version header)."""
    return render(_nodes_24(parse(text)))


# ---------------------------------------------------------------------------
# passwd-file extra fields and doveadm -o

def userdb_fields(extra: str) -> str:
    """passwd-file extra fields (space-separated, 2.3: 'userdb_mail=lmdb:~/lmdb
    userdb_pop3_uidl_format=%%g') -> 2.4 ('userdb_mail_driver=lmdb
    userdb_mail_path=~/lmdb ... userdb_pop3_uidl_format=%%{guid}').  A userdb
    field is applied in 2.4 as an override of the setting of that name."""
    out = []
    for field in extra.split():
        key, eq, value = field.partition('=')
        prefix = ''
        if key.startswith('userdb_'):
            prefix, key = 'userdb_', key[len('userdb_'):]
        if not eq:
            out.append(field)
            continue
        if key == 'pop3_uidl_format':
            # passwd-file expands the field once more: '%%g' there is '%g'
            fmt = uidl_format_24(value.replace('%%', '%'))
            out.append('%s%s=%s' % (prefix, key, fmt.replace('%{', '%%{')))
            continue
        if key == 'quota_rule':
            sections, _ = _quota_24([Setting('quota', 'count:User quota'),
                                     Setting('quota_rule', value)])
            for s in sections[0].body[1:]:
                out.append('%squota_%s=%s' % (prefix, s.key, s.value))
            continue
        nodes = _setting_24(key, value, ())
        for nd in nodes:
            if not isinstance(nd, Setting):
                raise Unsupported('userdb field %s: no 2.4 form' % field)
            out.append('%s%s=%s' % (prefix, nd.key, nd.value))
    return ' '.join(out)


def doveadm_opts(opts) -> list:
    """doveadm global options with 2.3 settings ('-o', 'pop3_uidl_format=%g')
    -> the same options with 2.4 settings."""
    out = []
    it = iter(opts)
    for o in it:
        if o == '-o':
            kv = next(it)
            key, _, value = kv.partition('=')
            for nd in _setting_24(key, value, ()):
                if not isinstance(nd, Setting):
                    raise Unsupported('doveadm -o %s: no 2.4 form as one option' % kv)
                out += ['-o', '%s=%s' % (nd.key, nd.value)]
        else:
            out.append(o)
    return out
