# The lab's connection: containers.podman.podman with Ansible's pipelining. That plugin turns
# pipelining off because it runs `podman exec` without --interactive, so a module fed on stdin
# never reaches the container. With --interactive it does, and each module costs one
# `podman exec` instead of three or four (temporary directory, chmod, run, clean-up): about
# 1 s less per task on this machine. Test infrastructure only; not part of the collection's
# plugins.
from __future__ import annotations

import shlex

from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.connection import ensure_connect
from ansible_collections.containers.podman.plugins.connection.podman import Connection as PodmanConnection

DOCUMENTATION = """
    name: podman_pipelined
    short_description: Run tasks in an existing podman container, with pipelining
    description:
      - containers.podman.podman, with modules fed to C(podman exec --interactive) on stdin
        when pipelining is on.
    author: pvesan.storage developers
    extends_documentation_fragment:
      - ansible.builtin.connection_pipelining
    options:
      remote_addr:
        description: The container to run in.
        default: inventory_hostname
        vars:
          - name: ansible_host
          - name: inventory_hostname
          - name: ansible_podman_host
      remote_user:
        description: The user to run as inside the container.
        ini:
          - section: defaults
            key: remote_user
        env:
          - name: ANSIBLE_REMOTE_USER
        vars:
          - name: ansible_user
      podman_extra_args:
        description: Extra arguments to pass to the podman command line.
        default: ''
        vars:
          - name: ansible_podman_extra_args
      podman_executable:
        description: The podman command.
        default: podman
        vars:
          - name: ansible_podman_executable
"""


class Connection(PodmanConnection):
    transport = "podman_pipelined"
    has_pipelining = True

    @ensure_connect
    def exec_command(self, cmd, in_data=None, sudoable=False):
        if in_data is None:
            return super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        args = ["exec", "--interactive"]
        if self.user:
            args.extend(("--user", self.user))
        return self._podman(args, shlex.split(to_native(cmd, errors="surrogate_or_strict")), in_data)
