# -*- coding: utf-8 -*-
# Copyright (c) pvesan.storage developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Client of the pvesan-service REST API (docs/service.md): the one Python client of the API.

Used by the collection's modules and, as a byte-identical copy in the service package
(``service/src/pvesan_service/shared/``, checked by ``make test``), by the ``pvesan`` CLI.
Standard library only, Python 3.8 and newer. It also holds the rules users meet everywhere:
the size parser and the name patterns (the service validates with the same ones).

Errors are ``ApiError`` with the service's own message (its JSON ``detail``) and the HTTP status
(0 when the service cannot be reached). The bearer token is only ever sent over HTTPS (an
``http://`` URL is refused before anything is sent unless ``insecure_http`` says so) and never
follows a redirect. How the bytes travel is a ``transport``: ``urllib_transport`` by default;
the modules pass one built on ``ansible.module_utils.urls``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # pylint: disable=invalid-name

import json
import re
import ssl
import time
import urllib.error
import urllib.request
from urllib.parse import quote, urlencode, urlsplit

# Names of volumes, tenants, pools, service types and tokens; snapshot names may hold capitals
# (Proxmox snapshot names, e.g. "Before_Upgrade").
NAME_PATTERN = r'^[a-z0-9][a-z0-9._-]{0,62}$'
SNAP_PATTERN = r'^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'
MAX_SIZE = 1 << 50  # 1 PiB: larger is a typo, and keeps every size inside a signed 64-bit column
# a size as a string: bytes, or a number with a binary unit (K M G T P, optionally B or iB)
SIZE_PATTERN = r'^([0-9]{1,16})([KMGTPkmgtp]?)(iB|IB|ib|B|b)?$'
_SIZE_RE = re.compile(SIZE_PATTERN)
_UNITS = {'': 1, 'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30, 'T': 1 << 40, 'P': 1 << 50}


def parse_size(value):
    """Bytes from an int or a string such as ``10G``, ``512M``, ``1T``, ``1048576`` (binary units);
    raises ValueError with what to write instead."""
    if isinstance(value, bool):
        raise ValueError('size must be a number of bytes or a string like 10G')
    if isinstance(value, int):
        size = value
    elif isinstance(value, str):
        m = _SIZE_RE.match(value.strip())
        if not m:
            raise ValueError('invalid size %r: use bytes or a number with K, M, G, T or P (binary units), e.g. 10G' % value)
        size = int(m.group(1)) * _UNITS[m.group(2).upper()]
    else:
        raise ValueError('size must be a number of bytes or a string like 10G')
    if size <= 0:
        raise ValueError('size must be greater than 0')
    if size > MAX_SIZE:
        raise ValueError('size %d is larger than the maximum of 1P' % size)
    return size


class ApiError(Exception):
    """A failed call: ``status`` is the HTTP status (0: the service could not be reached)."""

    def __init__(self, message, status=0):
        super(ApiError, self).__init__(message)
        self.message = message
        self.status = status


class Unreachable(ApiError):
    """The request never reached the service (refused, no route, no connection in time): safe to
    send again, whatever its method. An HA pair's API is like this while it fails over."""


def urllib_transport(ssl_context=None):
    """A transport on the standard library: ``send(method, url, headers, body, timeout)`` returns
    ``(status, body bytes, location header)``; redirects are not followed (urllib would send the
    Authorization header along, to wherever they point)."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):  # pylint: disable=unused-argument
            return None

    opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPSHandler(context=ssl_context))

    def send(method, url, headers, body, timeout):
        req = urllib.request.Request(url, data=body, headers=headers)
        req.get_method = lambda: method
        try:
            resp = opener.open(req, timeout=timeout)
            try:
                return resp.getcode(), resp.read(), None
            finally:
                resp.close()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), exc.headers.get('Location')
        except urllib.error.URLError as exc:
            # urllib wraps only what fails while connecting and sending; the request was never
            # whole at the service (errors while waiting for the answer are not URLError)
            raise Unreachable('cannot reach %s: %s' % (url.split('/api/')[0], exc.reason))
        except (OSError, ssl.SSLError) as exc:
            raise ApiError('cannot reach %s: %s' % (url.split('/api/')[0], getattr(exc, 'reason', exc)))
    return send


def _detail(status, body, location):
    try:
        detail = json.loads(body or b'{}').get('detail')
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, list):  # validation errors: "field: message" each
        detail = '; '.join('%s: %s' % ('.'.join(str(x) for x in d.get('loc', [])[1:]) or 'request', d.get('msg'))
                           for d in detail)
    if 300 <= status < 400:
        return ('the server answered with a redirect (HTTP %d to %s): not followed, the token goes only to the '
                'configured API URL' % (status, location))
    return detail or 'HTTP %d' % status


class PvesanClient:
    """One service endpoint with one bearer token; ``tenant`` names the tenant an admin token acts on
    (kept as ``acting_tenant``: ``tenant()`` is the call that shows one)."""

    def __init__(self, api_url, token, transport=None, tenant=None, timeout=30, insecure_http=False, retry_for=0):
        scheme = urlsplit(api_url).scheme
        if scheme != 'https' and not (scheme == 'http' and insecure_http):
            raise ApiError('refusing to send the API token to %s: use an https:// URL (plain http:// only when '
                           'insecure_http is set, for a lab)' % api_url)
        self.base = api_url.rstrip('/')
        self.token = token
        self.transport = transport or urllib_transport()
        self.acting_tenant = tenant
        self.timeout = timeout
        # seconds to keep trying a service that cannot be reached (an HA pair failing over)
        self.retry_for = retry_for

    def request(self, method, path, body=None, query=None, tenant_scoped=False, timeout=None):
        """One call; the decoded JSON answer (None for answers without a body)."""
        query = dict((k, v) for k, v in (query or {}).items() if v not in (None, [], (), False, ''))
        if tenant_scoped and self.acting_tenant:
            query.setdefault('tenant', self.acting_tenant)
        url = self.base + path
        if query:
            url += '?' + urlencode(dict((k, 'true' if v is True else v) for k, v in query.items()), doseq=True)
        headers = {'Authorization': 'Bearer ' + self.token, 'Accept': 'application/json'}
        data = None
        if body is not None:
            data = json.dumps(body).encode('utf-8')
            headers['Content-Type'] = 'application/json'
        deadline = time.monotonic() + self.retry_for
        while True:
            try:
                status, raw, location = self.transport(method, url, headers, data, timeout or self.timeout)
                break
            except Unreachable:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        if not 200 <= status < 300:
            raise ApiError(_detail(status, raw, location), status)
        return json.loads(raw) if raw else None

    # -- service ----------------------------------------------------------------------------------
    def health(self):
        return self.request('GET', '/healthz')

    def whoami(self):
        return self.request('GET', '/api/v1/whoami')

    def status(self, service_type=None, include=(), exclude=()):
        query = {'service_type': service_type, 'query_include': list(include or ()), 'query_exclude': list(exclude or ())}
        return self.request('GET', '/api/v1/status', query=query, tenant_scoped=True)

    def reconcile(self):
        return self.request('POST', '/api/v1/reconcile')

    # -- tenants and tokens -------------------------------------------------------------------------
    def create_tenant(self, name, initiators=(), quota_bytes=None, chap=None, no_chap=False):
        """``chap``: a dict of what to set (what is left out is generated); ``no_chap``: none. By
        default the service generates the tenant's credentials."""
        body = {'name': name, 'initiators': list(initiators or ())}
        if quota_bytes is not None:
            body['quota_bytes'] = quota_bytes
        if no_chap:
            body['chap'] = None
        elif chap is not None:
            body['chap'] = chap
        return self.request('POST', '/api/v1/tenants', body)

    def tenants(self):
        return self.request('GET', '/api/v1/tenants')

    def tenant(self, name):
        return self.request('GET', '/api/v1/tenants/' + _q(name))

    def update_tenant(self, name, **changes):
        """``initiators``, ``quota_bytes``, ``chap`` (None removes it, ``{}`` rotates the secret)."""
        return self.request('PATCH', '/api/v1/tenants/' + _q(name), changes)

    def delete_tenant(self, name):
        return self.request('DELETE', '/api/v1/tenants/' + _q(name))

    def create_token(self, name, tenant=None, readonly=False):
        return self.request('POST', '/api/v1/tokens', {'name': name, 'tenant': tenant, 'readonly': readonly})

    def tokens(self, tenant=None):
        return self.request('GET', '/api/v1/tokens', query={'tenant': tenant})

    def revoke_token(self, token_id):
        return self.request('DELETE', '/api/v1/tokens/' + _q(token_id))

    # -- pools and service types --------------------------------------------------------------------
    def create_pool(self, name, kind, options=None, tags=(), **limits):
        """``limits``: max_subscription (None: no limit), reserve_percent; left out: the service's defaults."""
        body = {'name': name, 'kind': kind, 'options': options or {}, 'tags': list(tags or ())}
        body.update(limits)
        return self.request('POST', '/api/v1/pools', body)

    def pools(self):
        return self.request('GET', '/api/v1/pools')

    def pool(self, name):
        return self.request('GET', '/api/v1/pools/' + _q(name))

    def update_pool(self, name, **changes):
        """``changes``: tags, max_subscription (None: no limit), reserve_percent; only those given change."""
        return self.request('PATCH', '/api/v1/pools/' + _q(name), changes)

    def delete_pool(self, name):
        return self.request('DELETE', '/api/v1/pools/' + _q(name))

    def create_service_type(self, name, description='', pool_tags=(), block_size=512, thin=True, chap=False, default=False):
        return self.request('POST', '/api/v1/service-types', {
            'name': name, 'description': description, 'pool_tags': list(pool_tags or ()), 'block_size': block_size,
            'thin': thin, 'chap': chap, 'default': default})

    def service_types(self):
        return self.request('GET', '/api/v1/service-types')

    def service_type(self, name):
        return self.request('GET', '/api/v1/service-types/' + _q(name))

    def delete_service_type(self, name):
        return self.request('DELETE', '/api/v1/service-types/' + _q(name))

    # -- volumes ------------------------------------------------------------------------------------
    def create_volume(self, name, size, service_type=None, include=(), exclude=(), tags=(), initiators=None, chap=None):
        body = {'name': name, 'size': size, 'service_type': service_type, 'query_include': list(include or ()),
                'query_exclude': list(exclude or ()), 'tags': list(tags or ())}
        if initiators is not None:
            body['initiators'] = list(initiators or ())
        if chap is not None:
            body['chap'] = chap
        return self.request('POST', '/api/v1/volumes', body, tenant_scoped=True)

    def volumes(self, prefix=None, vmid=None, tag=None, detail=False):
        return self.request('GET', '/api/v1/volumes', query={'prefix': prefix, 'vmid': vmid, 'tag': tag, 'detail': detail},
                            tenant_scoped=True)

    def volume(self, name):
        return self.request('GET', _volume(name), tenant_scoped=True)

    def find_volume(self, name):
        """The volume, or None when it does not exist."""
        try:
            return self.volume(name)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def resize_volume(self, name, size):
        return self.request('POST', _volume(name) + '/resize', {'size': size}, tenant_scoped=True)

    def reclaim_volume(self, name, timeout=3600):
        """Frees the volume's all-zero ranges: reads all its data, so it gets a long timeout."""
        return self.request('POST', _volume(name) + '/reclaim', tenant_scoped=True, timeout=timeout)

    def rename_volume(self, name, new_name):
        return self.request('POST', _volume(name) + '/rename', {'name': new_name}, tenant_scoped=True)

    def update_volume(self, name, **changes):
        """``tags``, ``initiators`` (None: the tenant's), ``chap`` (None: the tenant's; ``{}``: generated)."""
        return self.request('PATCH', _volume(name), changes, tenant_scoped=True)

    def delete_volume(self, name, cascade=False):
        return self.request('DELETE', _volume(name), query={'cascade': cascade}, tenant_scoped=True)

    def clone_volume(self, name, new_name, snapshot=None, tags=None):
        body = {'name': new_name, 'snapshot': snapshot}
        if tags is not None:
            body['tags'] = list(tags or ())
        return self.request('POST', _volume(name) + '/clone', body, tenant_scoped=True)

    # -- snapshots ----------------------------------------------------------------------------------
    def create_snapshot(self, name, snapshot):
        return self.request('POST', _volume(name) + '/snapshots', {'name': snapshot}, tenant_scoped=True)

    def snapshots(self, name):
        return self.request('GET', _volume(name) + '/snapshots', tenant_scoped=True)

    def delete_snapshot(self, name, snapshot, cascade=False):
        return self.request('DELETE', _volume(name) + '/snapshots/' + _q(snapshot), query={'cascade': cascade},
                            tenant_scoped=True)

    def rollback_snapshot(self, name, snapshot):
        return self.request('POST', _volume(name) + '/snapshots/' + _q(snapshot) + '/rollback', tenant_scoped=True)


def _q(part):
    return quote(part, safe='')


def _volume(name):
    return '/api/v1/volumes/' + _q(name)
