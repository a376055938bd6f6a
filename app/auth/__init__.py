"""Authentication and access control at the edge, one folder per concern (as Kong's plugins are):
each holds its config schema, its handler and, where it has one, its storage.

- ``key_auth``: API keys, read from a header or the query, checked against the in-memory mirror
  of ``rate_limiter.api_keys`` and the keys added through the admin API;
- ``jwt_auth``: bearer JWTs verified with PyJWT against a JWKS (a URL or a file) that rotates;
- ``acl``: ``allow_roles`` / ``deny_roles``;
- ``ip_restriction``: ``ip_allow`` / ``ip_deny`` CIDR lists;
- ``cors``: preflights answered by the gateway, CORS headers on every answer;
- ``abuse``: failed authentications counted per address, with a growing cooling period.

``schema`` is the ``auth:`` section (top level, and per route with inheritance).
"""
