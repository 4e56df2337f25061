# -*- coding: utf-8 -*-
# Copyright (c) 2026, pvesan.storage contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type  # pylint: disable=invalid-name

import os
import stat

import pytest

from ansible_collections.pvesan.storage.plugins.module_utils._files import atomic_write, read_text


def test_read_text_of_a_missing_file_is_none(tmp_path):
    assert read_text(str(tmp_path / 'nope')) is None


def test_atomic_write_creates_with_mode_and_replaces(tmp_path):
    path = str(tmp_path / 'a.conf')
    atomic_write(path, u'one\n', 0o600)
    assert read_text(path) == u'one\n' and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    atomic_write(path, u'two \u00e9\n', 0o644)
    assert read_text(path) == u'two \u00e9\n' and stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert os.listdir(str(tmp_path)) == ['a.conf']  # no temp file left


def test_atomic_write_makes_the_directory_only_when_asked(tmp_path):
    path = str(tmp_path / 'conf.d' / 'x.conf')
    with pytest.raises(OSError):
        atomic_write(path, u'x', 0o644)
    atomic_write(path, u'x', 0o644, make_dirs=True)
    assert read_text(path) == u'x'


def test_a_failed_move_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = str(tmp_path / 'keep.conf')
    atomic_write(path, u'old', 0o644)

    def broken_mover(src, dest):
        raise OSError('disk gone')

    with pytest.raises(OSError, match='disk gone'):
        atomic_write(path, u'new', 0o644, mover=broken_mover)
    assert read_text(path) == u'old' and os.listdir(str(tmp_path)) == ['keep.conf']
