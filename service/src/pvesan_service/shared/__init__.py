"""Code the service shares with the collection's modules, as byte-identical copies of
``plugins/module_utils/`` (their one place: edit them there, then ``make sync-shared``):

- ``_tgt``: tgtd (tgtadm's commands and its management socket), plan/apply of targets;
- ``_lio``: the kernel target through rtslib-fb, plan/apply of targets;
- ``_pvesan_client``: the API client, the size parser and the name rules (the CLI uses it).

``make test`` fails while a copy differs (service/tests/test_shared.py).  Copies, not symlinks:
the wheel, the role's install hash and every tool see them as the files they are.
"""
