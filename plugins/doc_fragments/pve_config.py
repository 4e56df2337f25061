# -*- coding: utf-8 -*-
# Copyright (c) pvesan.storage developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """Options of the modules that read or write Proxmox VE's cluster file system (storage.cfg, priv/)."""

    DOCUMENTATION = r"""
options:
  config_root:
    description:
      - Directory that holds C(storage.cfg) and C(priv/) (Proxmox's cluster file system); C(/etc/pve) on a Proxmox node.
    type: path
    default: /etc/pve
"""
