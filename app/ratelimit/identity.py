"""Who a request comes from, for rate limiting (docs/design.md, "Client identity").

In order: an API key in ``X-API-Key``, or the header ``auth.api_key.header`` names (its sha256 looked up among the known keys gives the client
id and tier; an unknown key identifies nobody and the next rule applies), else the ``X-Client-ID``
header, else the peer address as ``ip:<addr>``. The peer is the TCP peer unless that peer is a
trusted proxy (``rate_limiter.trusted_proxies``): then it is the rightmost address of
X-Forwarded-For that is not itself a trusted proxy, since only the part a trusted hop appended can
be believed.

Anyone can send any ``X-Client-ID``, so it is believed on its own only from a peer (as resolved
above) in ``rate_limiter.client_id_trusted_from``. From any other peer the declared id is a
sub-account of ``ip:<peer>``: ``Identity.account`` names that address, and the limiter charges every
request to both, so rotating ids divides the address's quota and never multiplies it.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Iterable
from typing import NamedTuple

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

API_KEY_HEADER = b"x-api-key"
CLIENT_ID_HEADER = b"x-client-id"
FORWARDED_FOR_HEADER = b"x-forwarded-for"

# Client ids made from X-Client-ID are cut to this length (they become part of Redis keys).
_MAX_CLIENT_ID = 256
# Bounds of the per-replica memos below (cleared when full: they only save work).
_MAX_DIGESTS = 4096
_MAX_PEERS = 4096


def hash_api_key(key: str) -> str:
    """How keys are kept: only this digest is stored, never the key."""
    return hashlib.sha256(key.encode()).hexdigest()


class KeyOwner(NamedTuple):
    """What an API key's entry says of its holder."""

    client_id: str
    tier: str | None = None
    # For routes with allow_roles / deny_roles (app/auth/).
    roles: tuple[str, ...] = ()


class Identity(NamedTuple):
    # A NamedTuple: one is made per request, and a tuple is the cheapest immutable record.
    client_id: str
    tier: str | None = None
    # "api_key", "client_id" or "ip": how the client was recognised (for logs and tests).
    source: str = "ip"
    # For an X-Client-ID from an untrusted peer: "ip:<peer>", whose quota the client shares.
    account: str | None = None


class ProxyTrust:
    """Which peers may speak for their clients through X-Forwarded-For."""

    def __init__(self, trusted: Iterable[str]) -> None:
        self.networks: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(t, strict=False) for t in trusted)
        self._known: dict[str, bool] = {}

    def trusts(self, addr: str) -> bool:
        if not self.networks:
            return False
        known = self._known.get(addr)
        if known is None:
            try:
                ip = ipaddress.ip_address(addr)
                known = any(ip in net for net in self.networks)
            except ValueError:
                known = False
            if len(self._known) > 4096:  # peers are few (the load balancers); bound it anyway
                self._known.clear()
            self._known[addr] = known
        return known

    def client_addr(self, peer: str, forwarded_for: bytes | None) -> str:
        if forwarded_for is None or not self.trusts(peer):
            return peer
        hops = [h.strip() for h in forwarded_for.decode("latin-1").split(",")]
        for hop in reversed(hops):
            if not hop:
                continue
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return peer  # a malformed chain: believe only what we saw ourselves
            if not self.trusts(hop):
                return hop
        return next((h for h in hops if h), peer)

    def address_of(self, headers: list[tuple[bytes, bytes]], peer: str) -> str:
        """The client's address as the rules above give it, from the request's headers."""
        if not self.networks or not self.trusts(peer):
            return peer
        forwarded = [value for name, value in headers if name == FORWARDED_FOR_HEADER]
        return self.client_addr(peer, b",".join(forwarded)) if forwarded else peer


class ClientIdentifier:
    def __init__(self, trust: ProxyTrust, api_key_lookup: Callable[[str], KeyOwner | None],
                 client_id_trust: ProxyTrust | None = None, api_key_header: str | None = None) -> None:
        self.trust = trust
        self.lookup = api_key_lookup
        # Where clients put their key: the one place authentication reads it too (no header there: the default).
        self.api_key_header = api_key_header.lower().encode("latin-1") if api_key_header else API_KEY_HEADER
        # The peers whose X-Client-ID is believed on its own (the same CIDR matching as proxies).
        self.client_id_trust = client_id_trust or ProxyTrust(())
        # API key (as sent) -> its sha256: a client sends the same key with every request.
        self._digests: dict[bytes, str] = {}
        # TCP peer -> its identity, for requests that name no client and no trusted forwarder.
        self._peers: dict[str, Identity] = {}

    def identify(self, headers: list[tuple[bytes, bytes]], peer: str) -> Identity:
        # dict() keeps the last of repeated names, as a scan would; only X-Forwarded-For joins its
        # repeats, and it matters only from a trusted peer.
        found = dict(headers)
        api_key = found.get(self.api_key_header)
        if api_key:
            digest = self._digests.get(api_key)
            if digest is None:
                if len(self._digests) >= _MAX_DIGESTS:
                    self._digests.clear()
                digest = self._digests[api_key] = hash_api_key(api_key.decode("latin-1").strip())
            owner = self.lookup(digest)
            if owner is not None:
                return Identity(owner[0], owner[1], "api_key")
        client_id = found.get(CLIENT_ID_HEADER)
        if client_id:
            text = client_id.decode("latin-1").strip()[:_MAX_CLIENT_ID]
            if text:
                addr = self.trust.address_of(headers, peer)
                if self.client_id_trust.trusts(addr):
                    return Identity(text, None, "client_id")
                return Identity(text, None, "client_id", "ip:" + addr)
        if FORWARDED_FOR_HEADER in found and self.trust.trusts(peer):
            forwarded_for = b",".join([value for name, value in headers if name == FORWARDED_FOR_HEADER])
            return Identity("ip:" + self.trust.client_addr(peer, forwarded_for), None, "ip")
        identity = self._peers.get(peer)
        if identity is None:
            if len(self._peers) >= _MAX_PEERS:
                self._peers.clear()
            identity = self._peers[peer] = Identity("ip:" + peer, None, "ip")
        return identity
