# -*- coding: utf-8 -*-
# Copyright (c) pvesan.storage contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Edit multipath.conf files in place and validate them with the real ``multipath -t``.

The editor keeps everything it does not manage (comments, unknown sections, ordering, the
author's indentation) and only touches the lines of the entries it is asked to change. Statements
must be one per line, as multipath itself writes them (``name {`` opens, ``}`` closes).

Standard library only, Python 3.8+.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import shutil
import tempfile

SECTIONS = ('defaults', 'blacklist', 'blacklist_exceptions', 'devices', 'multipaths', 'overrides')
# Sections whose entries are plain "key value" settings (a dict in the module).
DICT_SECTIONS = ('defaults', 'overrides')
# Sections that hold a list of subsections, and the keys that identify one subsection.
LIST_SUBSECTION = {'devices': 'device', 'multipaths': 'multipath'}
SUBSECTION_KEYS = {'device': ('vendor', 'product'), 'multipath': ('wwid',)}
# blacklist / blacklist_exceptions: simple matchers, plus "device" subsections.
BLACKLIST_KEYS = ('devnode', 'wwid', 'property', 'protocol')

DEFAULT_CONFIG_DIR = '/etc/multipath/conf.d'
WWIDS_HEADER = (
    '# Multipath wwids, Version : 1.0\n'
    '# NOTE: This file is automatically maintained by multipath and multipathd.\n'
    '# You should not need to edit this file in normal circumstances.\n'
    '#\n'
    '# Valid WWIDs:\n'
)


class ConfError(Exception):
    """A file the editor cannot handle, or an invalid request; the message says what to fix."""


class Node(object):
    """An attribute (``key value``) or a section (``name { ... }``) with its line numbers."""

    def __init__(self, kind, name, value=None, start=0, end=0, depth=0):
        self.kind = kind
        self.name = name
        self.value = value
        self.start = start
        self.end = end
        self.depth = depth
        self.children = []

    def sections(self, name):
        return [c for c in self.children if c.kind == 'section' and c.name == name]

    def attrs(self, name=None):
        return [c for c in self.children if c.kind == 'attr' and (name is None or c.name == name)]

    def attr_value(self, name):
        found = self.attrs(name)
        return found[-1].value if found else None


def tokenize(line):
    """Split one line into tokens: words, quoted strings (unquoted), ``{`` and ``}``."""
    tokens = []
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if ch.isspace():
            i += 1
        elif ch in '#!':
            break
        elif ch in '{}':
            tokens.append(ch)
            i += 1
        elif ch == '"':
            j = line.find('"', i + 1)
            if j < 0:
                j = n
            tokens.append(line[i + 1:j])
            i = j + 1
        else:
            j = i
            while j < n and not line[j].isspace() and line[j] not in '{}"':
                j += 1
            tokens.append(line[i:j])
            i = j
    return tokens


def parse(text):
    """Parse multipath.conf text into a tree of Nodes (the root has kind 'root')."""
    lines = text.splitlines()
    root = Node('root', None, start=0, end=len(lines), depth=-1)
    stack = [root]
    for idx, line in enumerate(lines):
        tokens = tokenize(line)
        if not tokens:
            continue
        if tokens == ['}']:
            if len(stack) == 1:
                raise ConfError('line %d: "}" without an open section' % (idx + 1))
            stack.pop().end = idx
            continue
        if tokens == ['{']:
            # "name" on one line and "{" on the next: turn the bare name into a section.
            prev = stack[-1].children[-1] if stack[-1].children else None
            if prev is None or prev.kind != 'attr' or prev.value is not None:
                raise ConfError('line %d: "{" without a section name' % (idx + 1))
            prev.kind = 'section'
            stack.append(prev)
            continue
        if '{' in tokens or '}' in tokens:
            if len(tokens) == 2 and tokens[1] == '{':
                node = Node('section', tokens[0], start=idx, depth=len(stack) - 1)
                stack[-1].children.append(node)
                stack.append(node)
                continue
            raise ConfError('line %d: put each statement of "%s" on its own line' % (idx + 1, line.strip()))
        value = ' '.join(tokens[1:]) if len(tokens) > 1 else None
        stack[-1].children.append(Node('attr', tokens[0], value, start=idx, end=idx, depth=len(stack) - 1))
    if len(stack) > 1:
        raise ConfError('section "%s" opened on line %d is never closed' % (stack[-1].name, stack[-1].start + 1))
    return root


def format_value(value):
    """Normalise a module value to multipath's spelling: booleans yes/no, numbers bare."""
    if isinstance(value, bool):
        return 'yes' if value else 'no'
    return str(value)


def quote(value):
    if re.match(r'^[0-9]+$', value):
        return value
    return '"%s"' % value


class Editor(object):
    """A multipath.conf being edited; ``text`` is the current content."""

    def __init__(self, text):
        self.lines = text.splitlines()
        self.trailing_newline = text.endswith('\n') or not text
        self.root = parse(text)
        self.indent = self._detect_indent()

    @property
    def text(self):
        if not self.lines:
            return ''
        return '\n'.join(self.lines) + ('\n' if self.trailing_newline else '')

    def _detect_indent(self):
        for line in self.lines:
            match = re.match(r'^([ \t]+)\S', line)
            if match:
                return match.group(1)
        return '\t'

    def _reparse(self):
        self.root = parse('\n'.join(self.lines))

    def _line(self, depth, tokens):
        return self.indent * depth + ' '.join(tokens)

    def _insert(self, at, new_lines):
        self.lines[at:at] = new_lines
        self._reparse()

    def _delete(self, start, end):
        del self.lines[start:end + 1]
        self._reparse()

    # --- generic helpers ---------------------------------------------------------------
    def section(self, name, create=True):
        found = self.root.sections(name)
        if found:
            return found[-1]
        if not create:
            return None
        if self.lines and self.lines[-1].strip():
            self.lines.append('')
        self.lines.extend([name + ' {', '}'])
        self.trailing_newline = True
        self._reparse()
        return self.root.sections(name)[-1]

    def _path(self, node):
        """How to find node again after a reparse: a list of child indexes from the root."""
        def walk(parent, trail):
            for i, child in enumerate(parent.children):
                if child is node:
                    return trail + [i]
                if child.kind == 'section':
                    found = walk(child, trail + [i])
                    if found:
                        return found
            return None
        return walk(self.root, [])

    def _resolve(self, path):
        node = self.root
        for i in path:
            node = node.children[i]
        return node

    def set_attr(self, section, key, value):
        """Set key to value in section; returns True when the text changed."""
        value = format_value(value)
        existing = section.attrs(key)
        if existing:
            last = existing[-1]
            if last.value == value:
                return False
            old = self.lines[last.start]
            lead = re.match(r'^\s*', old).group(0)
            self.lines[last.start] = lead + key + ' ' + quote(value)
            self._reparse()
            return True
        self._insert(section.end, [self._line(section.depth + 1, [key, quote(value)])])
        return True

    def remove_node(self, node):
        self._delete(node.start, node.end)
        return True

    def add_subsection(self, parent, name, settings):
        depth = parent.depth + 1
        new = [self._line(depth, [name, '{'])]
        for key, value in settings:
            new.append(self._line(depth + 1, [key, quote(format_value(value))]))
        new.append(self._line(depth, ['}']))
        self._insert(parent.end, new)
        return True


def _identity(name, entry):
    keys = SUBSECTION_KEYS[name]
    if not any(entry.get(k) is not None for k in keys):
        raise ConfError('a %s entry needs %s to identify it: %r' % (name, ' and '.join(keys), entry))
    return tuple(format_value(entry[k]) if entry.get(k) is not None else None for k in keys)


def _find_subsection(parent, name, entry):
    want = _identity(name, entry)
    for sub in parent.sections(name):
        if tuple(sub.attr_value(k) for k in SUBSECTION_KEYS[name]) == want:
            return sub
    return None


def _ordered_settings(name, entry):
    """The identifying keys first (as multipath writes them), then the rest in the given order."""
    keys = SUBSECTION_KEYS[name]
    items = [(k, entry[k]) for k in keys if entry.get(k) is not None]
    items += [(k, v) for k, v in entry.items() if k not in keys and k != 'state' and v is not None]
    return items


def _apply_subsection(ed, parent, name, entry, state):
    """Ensure one device/multipath subsection of parent is present (with entry's settings) or absent."""
    changed = False
    sub = _find_subsection(parent, name, entry)
    if state == 'absent':
        if sub is not None:
            changed = ed.remove_node(sub)
        return changed
    if sub is None:
        return ed.add_subsection(parent, name, _ordered_settings(name, entry))
    for key, value in _ordered_settings(name, entry):
        path = ed._path(sub)
        if ed.set_attr(sub, key, value):
            changed = True
        sub = ed._resolve(path)
    return changed


def apply(text, wanted, state='present'):
    """Return the new text with ``wanted`` applied.

    wanted maps section names to their entries: a dict of settings for defaults/overrides, a
    list of dicts for blacklist, blacklist_exceptions, devices and multipaths. A list entry may
    carry its own ``state`` that overrides the call's state.
    """
    ed = Editor(text)
    for sname in SECTIONS:
        entries = wanted.get(sname)
        if entries is None:
            continue
        exists = ed.section(sname, create=False) is not None
        if sname in DICT_SECTIONS:
            if not isinstance(entries, dict):
                raise ConfError('%s must be a dictionary of settings' % sname)
            for key, value in entries.items():
                if isinstance(value, (dict, list)):
                    raise ConfError('%s.%s: subsections are not managed here, give a plain value' % (sname, key))
                if state == 'absent' or value is None:
                    sec = ed.section(sname, create=False)
                    for attr in reversed(sec.attrs(key) if sec else []):
                        ed.remove_node(attr)
                        sec = ed.section(sname, create=False)
                else:
                    ed.set_attr(ed.section(sname), key, value)
            continue
        if not isinstance(entries, list):
            raise ConfError('%s must be a list of entries' % sname)
        for entry in entries:
            if not isinstance(entry, dict):
                raise ConfError('%s: each entry must be a dictionary, got %r' % (sname, entry))
            entry_state = entry.get('state') or state
            if entry_state not in ('present', 'absent'):
                raise ConfError('%s: state must be present or absent, got %r' % (sname, entry_state))
            if entry_state == 'absent' and not exists and ed.section(sname, create=False) is None:
                continue
            sec = ed.section(sname)
            if sname in LIST_SUBSECTION:
                _apply_subsection(ed, sec, LIST_SUBSECTION[sname], entry, entry_state)
                continue
            # blacklist / blacklist_exceptions
            body = dict((k, v) for k, v in entry.items() if k != 'state')
            if 'device' in body:
                if len(body) != 1 or not isinstance(body['device'], dict):
                    raise ConfError('%s: a device entry is {device: {vendor: ..., product: ...}}' % sname)
                _apply_subsection(ed, sec, 'device', body['device'], entry_state)
                continue
            if len(body) != 1 or list(body)[0] not in BLACKLIST_KEYS:
                raise ConfError('%s: each entry is one of %s or device, got %r' % (sname, ', '.join(BLACKLIST_KEYS), entry))
            key, value = list(body.items())[0]
            value = format_value(value)
            matches = [a for a in sec.attrs(key) if a.value == value]
            if entry_state == 'absent':
                for attr in reversed(matches):
                    ed.remove_node(attr)
            elif not matches:
                ed._insert(sec.end, [ed._line(sec.depth + 1, [key, quote(value)])])
    return ed.text


def config_dir_of(text):
    """The config_dir a main multipath.conf sets (or multipath's default)."""
    try:
        root = parse(text)
    except ConfError:
        return DEFAULT_CONFIG_DIR
    for sec in root.sections('defaults'):
        value = sec.attr_value('config_dir')
        if value:
            return value
    return DEFAULT_CONFIG_DIR


# --- wwids file --------------------------------------------------------------------------
def apply_wwids(text, wwids, state='present'):
    """Add or remove ``/wwid/`` lines of a multipath wwids file, keeping the others."""
    lines = text.splitlines() if text else WWIDS_HEADER.splitlines()
    present = [line.strip() for line in lines]
    for wwid in wwids:
        wwid = wwid.strip().strip('/')
        if not wwid or '/' in wwid:
            raise ConfError('invalid wwid %r' % wwid)
        entry = '/%s/' % wwid
        if state == 'present' and entry not in present:
            lines.append(entry)
            present.append(entry)
        elif state == 'absent':
            lines = [line for line in lines if line.strip() != entry]
            present = [line.strip() for line in lines]
    return '\n'.join(lines) + '\n'


# --- validation with the real multipath -t -----------------------------------------------
_TIMESTAMP = re.compile(r'^\s*[0-9]+\.[0-9]+ \| ')
_ERROR_WORDS = re.compile(r'invalid|missing|error|unknown|unmatched|not supported|failed', re.I)


def validate(run_command, multipath_bin, unshare_bin, candidate, path, config_file, main_text=None):
    """Run ``multipath -t`` against candidate as if it were installed at path.

    multipath reads only /etc/multipath.conf (no option names another file), so the check runs
    in a private mount namespace with a throw-away overlay over /etc holding the candidate: the
    host's files are never touched. path == config_file means candidate is the main file;
    otherwise it is a drop-in of the main file's config_dir, and main_text is that main file.

    run_command(argv) -> (rc, stdout, stderr). Returns (errors, warnings, merged_config).
    Raises ConfError when the check itself cannot run.
    """
    is_main = os.path.abspath(path) == os.path.abspath(config_file)
    main = candidate if is_main else (main_text or '')
    conf_dir = config_dir_of(main)
    if not conf_dir.startswith('/etc/'):
        raise ConfError('config_dir %s is outside /etc: cannot validate there, set validate: false' % conf_dir)
    stage = tempfile.mkdtemp(prefix='pvesan-multipath-')
    try:
        os.mkdir(os.path.join(stage, 'conf.d'))
        os.mkdir(os.path.join(stage, 'tmp'))
        with open(os.path.join(stage, 'multipath.conf'), 'w') as f:
            f.write(main)
        # The drop-ins multipath would read: those already in the directory, with ours replaced.
        src_dir = os.path.dirname(os.path.abspath(path)) if not is_main else conf_dir
        if os.path.isdir(src_dir):
            for name in sorted(os.listdir(src_dir)):
                full = os.path.join(src_dir, name)
                if name.endswith('.conf') and os.path.isfile(full) and full != os.path.abspath(path):
                    shutil.copy(full, os.path.join(stage, 'conf.d', name))
        dropin_name = os.path.basename(path)
        if not is_main:
            if not dropin_name.endswith('.conf'):
                raise ConfError('multipath only reads drop-ins named *.conf: %s' % path)
            with open(os.path.join(stage, 'conf.d', dropin_name), 'w') as f:
                f.write(candidate)
        script = (
            'set -e\n'
            'mount -t tmpfs pvesan-mpcheck "$1/tmp"\n'
            'mkdir "$1/tmp/up" "$1/tmp/wk"\n'
            'mount -t overlay pvesan-mpcheck -o lowerdir=/etc,upperdir="$1/tmp/up",workdir="$1/tmp/wk" /etc\n'
            'cp "$1/multipath.conf" /etc/multipath.conf\n'
            'rm -rf "$2" && mkdir -p "$2"\n'
            'for f in "$1"/conf.d/*.conf; do [ -e "$f" ] && cp "$f" "$2/"; done\n'
            'exec "$3" -t\n'
        )
        argv = [unshare_bin, '--mount', '--propagation', 'private', '/bin/sh', '-c', script, 'sh',
                stage, conf_dir, multipath_bin]
        rc, out, err = run_command(argv)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    if rc != 0:
        raise ConfError('could not run multipath -t in a private mount namespace (needs root, '
                        'unshare and overlayfs; or set validate: false): rc=%s %s' % (rc, err.strip()))
    errors, warnings = [], []
    shown = {'/etc/multipath.conf': config_file if not is_main else path}
    if not is_main:
        shown[os.path.join(conf_dir, dropin_name)] = path
    for line in err.splitlines():
        line = _TIMESTAMP.sub('', line).strip()
        if not line:
            continue
        for staged, real in shown.items():
            line = line.replace(staged, real)
        (errors if _ERROR_WORDS.search(line) else warnings).append(line)
    return errors, warnings, out
