# -*- coding: utf-8 -*-
# Copyright (c) 2026, pvesan.storage contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Whole-file reads and atomic writes shared by the modules (standard library only).

A file is never left half-written: the new content goes to a temp file in the same directory,
is flushed to disk and renamed over the old one.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type  # pylint: disable=invalid-name

import errno
import os
import tempfile


def read_text(path):
    """File content, or None when it does not exist."""
    try:
        with open(path, 'rb') as f:
            return f.read().decode('utf-8', 'surrogateescape')
    except (IOError, OSError) as e:
        if getattr(e, 'errno', None) == errno.ENOENT:
            return None
        raise


def atomic_write(path, data, mode, mover=None, make_dirs=False):
    """Write ``data`` (text) to a temp file next to ``path``, fsync it and rename it into place
    with ``mode``.

    ``mover(src, dest)`` defaults to os.replace; modules pass AnsibleModule.atomic_move (which
    keeps SELinux contexts).  ``make_dirs`` creates a missing parent directory (0755).
    """
    directory = os.path.dirname(path) or '.'
    if make_dirs and not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    fd, tmp = tempfile.mkstemp(prefix='.%s.tmp.' % os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data.encode('utf-8', 'surrogateescape'))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.chmod(tmp, mode)
        except OSError:
            pass  # pmxcfs (/etc/pve) decides permissions itself
        (mover or os.replace)(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    try:
        if os.stat(path).st_mode & 0o7777 != mode:
            os.chmod(path, mode)  # atomic_move gives a new file the umask's mode
    except OSError:
        pass
