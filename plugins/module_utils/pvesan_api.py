# -*- coding: utf-8 -*-
# Copyright (c) pvesan.storage developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Small HTTPS client of the pvesan-service REST API (docs/service.md), on ansible.module_utils.urls.

Modules use it instead of the ``pvesan`` CLI, which is not installed on the controller or on
every node. Errors become :class:`PvesanApiError` with the service's own message (its JSON
``detail``) and the HTTP status (0 when the service cannot be reached).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re

from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.six.moves.urllib.parse import quote, urlencode
from ansible.module_utils.urls import open_url

_UNITS = {'': 1, 'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30, 'T': 1 << 40, 'P': 1 << 50}
_SIZE_RE = re.compile(r'^\s*(\d+)\s*([KMGTP]?)(?:I?B)?\s*$', re.IGNORECASE)


class PvesanApiError(Exception):
    def __init__(self, message, status=0):
        super(PvesanApiError, self).__init__(message)
        self.status = status


def parse_size(value):
    """Bytes from an int or a string like ``10G``, ``512M``, ``1048576`` (binary units); None if invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    m = _SIZE_RE.match(str(value))
    if not m:
        return None
    size = int(m.group(1)) * _UNITS[m.group(2).upper()]
    return size if size > 0 else None


class PvesanApi:
    """One service endpoint with one bearer token."""

    def __init__(self, api_url, token, validate_certs=True, ca_path=None, timeout=30):
        if not api_url.startswith('https://'):
            # refused before anything is sent: the bearer token never travels in clear
            raise PvesanApiError('refusing to send the API token to %s: the pvesan service URL must be https://' % api_url)
        self.base = api_url.rstrip('/')
        self.token = token
        self.validate_certs = validate_certs
        self.ca_path = ca_path
        self.timeout = timeout

    def request(self, method, path, body=None, query=None):
        url = self.base + path
        query = dict((k, v) for k, v in (query or {}).items() if v not in (None, [], ''))
        if query:
            url += '?' + urlencode(query, doseq=True)
        headers = {'Authorization': 'Bearer ' + self.token, 'Accept': 'application/json'}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers['Content-Type'] = 'application/json'
        try:
            resp = open_url(url, method=method, data=data, headers=headers, validate_certs=self.validate_certs,
                            ca_path=self.ca_path, timeout=self.timeout, follow_redirects='none')
            raw = resp.read()
        except HTTPError as e:
            raise PvesanApiError(self._message(e), e.code)
        except (URLError, OSError, ValueError) as e:
            raise PvesanApiError('cannot reach the pvesan service at %s: %s' % (self.base, getattr(e, 'reason', e)))
        return json.loads(raw) if raw else None

    @staticmethod
    def _message(err):
        try:
            detail = json.loads(err.read() or b'{}').get('detail')
        except (ValueError, AttributeError):
            detail = None
        if isinstance(detail, list):
            detail = '; '.join('%s: %s' % ('.'.join(str(x) for x in d.get('loc', [])[1:]), d.get('msg')) for d in detail)
        return 'pvesan service: HTTP %d: %s' % (err.code, detail or err.reason)

    # -- volumes -----------------------------------------------------------------------------
    def status(self):
        return self.request('GET', '/api/v1/status')

    def volumes(self, prefix=None):
        return self.request('GET', '/api/v1/volumes', query={'prefix': prefix})

    def volume(self, name):
        """The volume, or None when it does not exist."""
        try:
            return self.request('GET', '/api/v1/volumes/' + quote(name, safe=''))
        except PvesanApiError as e:
            if e.status == 404:
                return None
            raise

    def create_volume(self, name, size, service_type=None, include=None, exclude=None):
        body = {'name': name, 'size': size}
        if service_type:
            body['service_type'] = service_type
        if include:
            body['query_include'] = include
        if exclude:
            body['query_exclude'] = exclude
        return self.request('POST', '/api/v1/volumes', body)

    def resize_volume(self, name, size):
        return self.request('POST', '/api/v1/volumes/%s/resize' % quote(name, safe=''), {'size': size})

    def delete_volume(self, name):
        return self.request('DELETE', '/api/v1/volumes/' + quote(name, safe=''))

    def clone_volume(self, name, new_name, snapshot=None):
        body = {'name': new_name}
        if snapshot:
            body['snapshot'] = snapshot
        return self.request('POST', '/api/v1/volumes/%s/clone' % quote(name, safe=''), body)

    # -- snapshots ---------------------------------------------------------------------------
    def snapshots(self, name):
        return self.request('GET', '/api/v1/volumes/%s/snapshots' % quote(name, safe=''))

    def create_snapshot(self, name, snap):
        return self.request('POST', '/api/v1/volumes/%s/snapshots' % quote(name, safe=''), {'name': snap})

    def delete_snapshot(self, name, snap):
        return self.request('DELETE', '/api/v1/volumes/%s/snapshots/%s' % (quote(name, safe=''), quote(snap, safe='')))

    def rollback_snapshot(self, name, snap):
        return self.request('POST', '/api/v1/volumes/%s/snapshots/%s/rollback' % (quote(name, safe=''), quote(snap, safe='')))
