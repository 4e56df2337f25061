# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Output recorded from the real tools in the kernel VM (scripts/kernel-vm.sh, `make
kernel-vm-record`; tests/kernel-vm/record.sh runs the commands): the one reader of recordings,
for the collection's unit tests and the service's (service/tests/conftest.py puts this directory
on sys.path).

A fixture directory holds ``NAME.out`` (stdout) and ``NAME.err`` (stderr) byte for byte, and
``commands.tsv``: one line per run, ``NAME<TAB>exit status<TAB>command line``, so a test fails when
the code runs anything but the exact recorded command."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shlex


class Recording(object):
    def __init__(self, directory):
        self.directory = directory
        self.runs = {}
        with open(os.path.join(directory, 'commands.tsv')) as f:
            for line in f:
                name, rc, cmd = line.rstrip('\n').split('\t', 2)
                self.runs[name] = (shlex.split(cmd), int(rc))

    def _read(self, name, ext):
        assert name in self.runs, 'no recording %s in %s' % (name, self.directory)
        path = os.path.join(self.directory, name + ext)
        if not os.path.exists(path):
            return ''
        with open(path) as f:
            return f.read()

    def argv(self, name):
        return self.runs[name][0]

    def rc(self, name):
        return self.runs[name][1]

    def out(self, name):
        return self._read(name, '.out')

    def err(self, name):
        return self._read(name, '.err')

    def answer(self, name):
        """(rc, stdout, stderr) as AnsibleModule.run_command returns them."""
        return self.rc(name), self.out(name), self.err(name)

    def step(self, name):
        """(command line, rc, stdout, stderr), what the service's replaying runners expect."""
        return (' '.join(self.argv(name)), self.rc(name), self.out(name), self.err(name))
