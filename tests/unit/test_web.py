"""The guard in front of every page (``agents.web``): only our pages are served, and only
for a request target in origin form."""

from __future__ import annotations

import re

import pytest

from loyalty.agents.openapi import OPENAPI_DOCUMENT
from loyalty.agents.web import is_public_page, request_target_error


def test_every_documented_page_is_served():
    for template in OPENAPI_DOCUMENT["paths"]:
        path = re.sub(r"\{[^}]+\}", "member-1", template)
        assert is_public_page(path), template


@pytest.mark.parametrize(
    "path", ["/members/a/b", "/members/x/ledger", "/health", "/health/ready", "/health/live"]
)
def test_member_pages_and_the_health_checks_are_served(path):
    assert is_public_page(path)


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/table/member_to_state/member-1/",  # Faust's: any key of any table
        "/table/",
        "/router/",  # Faust's: the workers' URLs
        "/graph/",
        "/assignment/",
        "/performance/",
        "/metrics/",
        "/metricsx",
        "/catalog/x",
        "/members",
        "/healthz",
        "",
    ],
)
def test_no_other_page_is_served(path):
    assert not is_public_page(path)


def test_only_the_origin_form_of_a_request_target_is_taken():
    assert request_target_error("/members/m?limit=5") is None
    assert request_target_error("//evil/members/m") is None  # a path: routed, then 404
    for target in ("http://x/members/m", "https://x:1/members/m", "x:80", "*", ""):
        assert request_target_error(target) is not None
