"""Which worker a member request may be forwarded to, and the proofs of the shared token
(``streams.peers``)."""

from __future__ import annotations

import pytest

from loyalty.streams.peers import (
    PeerHosts,
    answer_is_proven,
    answer_proof,
    new_nonce,
    peer_base_url,
    request_is_signed,
    request_signature,
)
from loyalty.streams.settings import DEFAULT_PEER_HOSTS

LOOPBACK = PeerHosts.parse(DEFAULT_PEER_HOSTS)
TOKEN = "t" * 64
TARGET = "/members/a%2Fb/ledger?limit=5"


# --- where a request may go -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("advertised", "base"),
    [
        ("http://127.0.0.1:6066", "http://127.0.0.1:6066"),
        # The reproduction of the issue: a path and query of a rogue group member are dropped.
        ("http://127.0.0.1:7001/anything?q=", "http://127.0.0.1:7001"),
        ("http://user:secret@localhost:7000/x/y#fragment", "http://localhost:7000"),
        ("HTTPS://LocalHost", "https://localhost:443"),
        ("http://localhost", "http://localhost:80"),
        ("http://[::1]:8080/", "http://[::1]:8080"),
        ("http://[0:0:0:0:0:0:0:1]:8080", "http://[0:0:0:0:0:0:0:1]:8080"),  # same address
    ],
)
def test_only_scheme_host_and_port_of_an_allowed_peer_are_taken(advertised, base):
    assert peer_base_url(advertised, LOOPBACK) == base


@pytest.mark.parametrize(
    "advertised",
    [
        "",
        "127.0.0.1:6066",  # no scheme
        "//127.0.0.1:6066",
        "ftp://127.0.0.1:21",
        "file:///etc/passwd",
        "unix:///tmp/worker.sock",
        "http:///members",
        "http://evil.example:80",
        "http://10.0.0.5:6066",  # not in the default list
        "http://127.0.0.1:80@evil.example/",  # user information before the real host
        "http://127.0.0.1.evil.example:80",
        "http://localhost.:80",
        "http://127.1:80",  # resolves to loopback, but is not written as an allowed host
        "http://127.0.0.1:0",
        "http://127.0.0.1:99999",
        "http://127.0.0.1:port",
    ],
)
def test_other_advertised_urls_are_never_fetched(advertised):
    assert peer_base_url(advertised, LOOPBACK) is None


def test_the_allow_list_takes_names_addresses_and_networks():
    hosts = PeerHosts.parse(["Worker-1", "10.1.0.0/16", "[fd00::7]", " 192.0.2.9 "])
    assert peer_base_url("http://worker-1:6066", hosts) == "http://worker-1:6066"
    assert peer_base_url("http://10.1.200.3:6066", hosts) == "http://10.1.200.3:6066"
    assert peer_base_url("http://[fd00:0::7]:6066", hosts) == "http://[fd00:0::7]:6066"
    assert peer_base_url("http://192.0.2.9", hosts) == "http://192.0.2.9:80"
    for refused in ("http://worker-2:6066", "http://10.2.0.1:6066", "http://127.0.0.1:6066"):
        assert peer_base_url(refused, hosts) is None


@pytest.mark.parametrize("entry", ["", "http://worker-1", "worker-1:6066", "a/b", "u@host"])
def test_an_allow_list_entry_that_is_not_a_host_is_refused_at_start(entry):
    with pytest.raises(ValueError, match="LOYALTY_PEER_HOSTS"):
        PeerHosts.parse([entry])


# --- the signature of a forwarded request ---------------------------------------------------


def test_a_request_signed_with_the_token_is_accepted():
    nonce = new_nonce()
    signature = request_signature(TOKEN, nonce, "GET", TARGET)
    assert request_is_signed(TOKEN, nonce, "GET", TARGET, signature)


@pytest.mark.parametrize(
    ("token", "nonce", "method", "target"),
    [
        ("another token", None, "GET", TARGET),
        (TOKEN, "0" * 32, "GET", TARGET),  # another nonce
        (TOKEN, None, "POST", TARGET),
        (TOKEN, None, "GET", "/members/a%2Fb/ledger?limit=50"),
    ],
)
def test_a_request_signed_otherwise_is_refused(token, nonce, method, target):
    signed_nonce = new_nonce()
    signature = request_signature(TOKEN, signed_nonce, "GET", TARGET)
    assert not request_is_signed(token, nonce or signed_nonce, method, target, signature)


def test_without_a_token_or_with_a_malformed_nonce_no_request_is_signed():
    nonce = new_nonce()
    assert not request_is_signed(
        "", nonce, "GET", TARGET, request_signature("", nonce, "GET", TARGET)
    )
    for bad_nonce in ("", "abc", nonce.upper(), nonce + "0", "x\nGET"):
        signature = request_signature(TOKEN, bad_nonce, "GET", TARGET)
        assert not request_is_signed(TOKEN, bad_nonce, "GET", TARGET, signature)
    assert not request_is_signed(TOKEN, nonce, "GET", TARGET, None)
    assert not request_is_signed(TOKEN, None, "GET", TARGET, "0" * 64)
    assert not request_is_signed(TOKEN, nonce, "GET", TARGET, "é" * 64)  # not ASCII: no error


# --- the proof of an answer -----------------------------------------------------------------

RELAYED = [("Retry-After", ""), ("Loyalty-Owner", "http://127.0.0.1:6066")]
BODY = b'{"member_id":"m","balance":180}'


def test_an_answer_with_the_owners_proof_is_trusted():
    nonce = new_nonce()
    proof = answer_proof(TOKEN, nonce, 200, RELAYED, BODY)
    assert answer_is_proven(TOKEN, nonce, 200, RELAYED, BODY, proof)


@pytest.mark.parametrize(
    ("nonce", "status", "relayed", "body"),
    [
        ("0" * 32, 200, RELAYED, BODY),  # a proof recorded for another request
        (None, 404, RELAYED, BODY),
        (None, 200, [("Retry-After", ""), ("Loyalty-Owner", "http://evil:1")], BODY),
        (None, 200, RELAYED, b'{"member_id":"m","balance":999999}'),  # a forged balance
    ],
)
def test_an_answer_that_differs_from_the_proven_one_is_not_trusted(nonce, status, relayed, body):
    request_nonce = new_nonce()
    proof = answer_proof(TOKEN, nonce or request_nonce, 200, RELAYED, BODY)
    assert not answer_is_proven(TOKEN, request_nonce, status, relayed, body, proof)


def test_an_answer_without_a_proof_of_this_token_is_not_trusted():
    nonce = new_nonce()
    assert not answer_is_proven(TOKEN, nonce, 200, RELAYED, BODY, None)
    assert not answer_is_proven(TOKEN, nonce, 200, RELAYED, BODY, "")
    other = answer_proof("another token", nonce, 200, RELAYED, BODY)
    assert not answer_is_proven(TOKEN, nonce, 200, RELAYED, BODY, other)
    # Without a token nothing is trusted, even a proof made with the empty token.
    empty = answer_proof("", nonce, 200, RELAYED, BODY)
    assert not answer_is_proven("", nonce, 200, RELAYED, BODY, empty)
    # A request's signature is no answer's proof.
    signature = request_signature(TOKEN, nonce, "GET", TARGET)
    assert not answer_is_proven(TOKEN, nonce, 200, RELAYED, BODY, signature)
