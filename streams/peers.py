"""Which worker a member request may be forwarded to, and how a forwarded answer proves it
comes from a worker of the group. Pure: the standard library only.

A worker learns the others' URLs from the consumer group's assignment metadata, which any
client allowed to join the group can write. So a forwarding worker takes only
``scheme://host:port`` from an advertised URL (never its path, query, user information or
fragment), and only for a host of ``LOYALTY_PEER_HOSTS``; and it relays an answer only if
the answer carries a proof that its sender knows ``LOYALTY_PEER_TOKEN``:

1. The forwarder sends a fresh random nonce (``Loyalty-Peer-Nonce``) and
   ``Loyalty-Peer-Signature: HMAC-SHA256(token, "request" \\n nonce \\n method \\n target)``,
   ``target`` being the request target exactly as sent (path and query, percent-encoded).
2. The owner answers only a request whose signature is valid (else 503), with
   ``Loyalty-Peer-Proof: HMAC-SHA256(token, "answer" \\n nonce \\n status \\n each relayed
   header \\n SHA-256 of the body)``.
3. The forwarder compares the proof with the one it computes (``hmac.compare_digest``) and
   relays the answer only if they are equal.

The nonce binds the proof to one request, so a recorded answer cannot be replayed, and the
``request``/``answer`` prefixes keep a request's signature from serving as an answer's
proof. Fields are joined with newlines, which none of them can contain (the nonce is
checked, HTTP request targets, methods and header values have none). This is integrity,
not secrecy: the answers are the same any client gets from the owner directly; use TLS
(``https`` URLs) or a private network against eavesdroppers.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

NONCE_HEADER = "Loyalty-Peer-Nonce"
"""Request header of a forwarded request: 32 random hexadecimal digits."""
SIGNATURE_HEADER = "Loyalty-Peer-Signature"
"""Request header of a forwarded request: the forwarder's HMAC of the request."""
PROOF_HEADER = "Loyalty-Peer-Proof"
"""Answer header to a forwarded request: the owner's HMAC of the answer."""

PEER_SCHEMES = {"http": 80, "https": 443}
"""Schemes a worker forwards over, with their default ports."""
_NONCE = re.compile(r"[0-9a-f]{32}")

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class PeerHosts:
    """The allow-list of ``LOYALTY_PEER_HOSTS``: host names (compared without case) and IP
    addresses or networks (compared as addresses, so ``::1`` is ``0:0:0:0:0:0:0:1``)."""

    names: frozenset[str]
    networks: tuple[IpNetwork, ...]

    @classmethod
    def parse(cls, entries: Iterable[str]) -> PeerHosts:
        """The allow-list of ``entries``; ValueError names an entry that is not a host."""
        names: set[str] = set()
        networks: list[IpNetwork] = []
        for entry in entries:
            host = entry.strip().lower().removeprefix("[").removesuffix("]")
            try:
                networks.append(ipaddress.ip_network(host, strict=False))
            except ValueError:
                if not host or "/" in host or ":" in host or "@" in host:
                    raise ValueError(
                        f"LOYALTY_PEER_HOSTS: {entry!r} is not a host name, IP address or "
                        "IP network"
                    ) from None
                names.add(host)
        return cls(frozenset(names), tuple(networks))

    def __contains__(self, host: object) -> bool:
        if not isinstance(host, str):
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return host.lower() in self.names
        return any(address in network for network in self.networks)


def peer_base_url(advertised: str, allowed: PeerHosts) -> str | None:
    """``scheme://host:port`` of a worker's advertised URL, or None when its scheme is not
    http or https, its host is not in ``allowed`` or its port is invalid. Nothing else of
    the advertised text (path, query, user information, fragment) is kept."""
    try:
        parts = urlsplit(advertised)
        port = parts.port
    except ValueError:  # a port that is not a number from 0 to 65535
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname  # lower case, without brackets or user information
    if scheme not in PEER_SCHEMES or host is None or host not in allowed or port == 0:
        return None
    netloc = f"[{host}]" if ":" in host else host
    return f"{scheme}://{netloc}:{port or PEER_SCHEMES[scheme]}"


def new_nonce() -> str:
    """A fresh nonce for one forwarded request."""
    return secrets.token_hex(16)


def _mac(token: str, *fields: str) -> str:
    return hmac.new(token.encode(), "\n".join(fields).encode(), hashlib.sha256).hexdigest()


def _equal(expected: str, given: str) -> bool:
    # As bytes: compare_digest refuses str with characters beyond ASCII (a TypeError).
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


def request_signature(token: str, nonce: str, method: str, target: str) -> str:
    """The forwarder's signature of ``method target`` under ``token``."""
    return _mac(token, "request", nonce, method, target)


def request_is_signed(
    token: str, nonce: str | None, method: str, target: str, signature: str | None
) -> bool:
    """Whether a forwarded request comes from a worker that knows ``token`` (never, when
    ``token`` is empty or the nonce is not one ``new_nonce`` makes)."""
    if not token or nonce is None or signature is None or not _NONCE.fullmatch(nonce):
        return False
    return _equal(request_signature(token, nonce, method, target), signature)


def answer_proof(
    token: str, nonce: str, status: int, relayed: Sequence[tuple[str, str]], body: bytes
) -> str:
    """The owner's proof of an answer: its status, the headers the forwarder relays
    (``(name, value)`` in the forwarder's order, ``""`` for an absent one) and its body."""
    headers = [f"{name}: {value}" for name, value in relayed]
    return _mac(token, "answer", nonce, str(status), *headers, hashlib.sha256(body).hexdigest())


def answer_is_proven(
    token: str,
    nonce: str,
    status: int,
    relayed: Sequence[tuple[str, str]],
    body: bytes,
    proof: str | None,
) -> bool:
    """Whether ``proof`` is the owner's proof of this answer to the request of ``nonce``."""
    if not token or proof is None:
        return False
    return _equal(answer_proof(token, nonce, status, relayed, body), proof)
