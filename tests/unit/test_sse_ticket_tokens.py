"""SSE tickets (gateway/auth.py): bound to one session, short-lived, never an access token, and
the stream they open lives as long as the access token that minted them."""

from __future__ import annotations

import time

import pytest

from gateway.auth import SSE_TICKET_TTL_S, Claims, TokenService
from gateway.config import GatewayConfig
from gateway.errors import ApiError

SID = "0b0d3a0c-6a43-4d7e-9b7e-1f7a1e0c2f10"
OTHER = "5f0c0d5e-6a43-4d7e-9b7e-1f7a1e0c2f10"


@pytest.fixture
def tokens() -> TokenService:
    return TokenService(GatewayConfig())


def _code(fn) -> str:
    with pytest.raises(ApiError) as err:
        fn()
    return err.value.code


def test_a_ticket_names_its_caller_and_lives_as_long_as_the_minting_token(tokens) -> None:
    access = tokens.verify(tokens.issue("amy", ["admin"]))
    claims = tokens.verify_ticket(tokens.issue_ticket(access, SID), SID)
    assert claims == Claims("amy", ("admin",), access.expires_at)


def test_a_ticket_opens_only_its_own_session(tokens) -> None:
    ticket = tokens.issue_ticket(Claims("amy", (), 0), SID)
    assert _code(lambda: tokens.verify_ticket(ticket, OTHER)) == "TOKEN_INVALID"


def test_a_ticket_expires_after_its_minute(tokens) -> None:
    old = time.time() - SSE_TICKET_TTL_S - tokens.config.token_grace_s - 1
    ticket = tokens.issue_ticket(Claims("amy", (), 0), SID, now=old)
    assert _code(lambda: tokens.verify_ticket(ticket, SID)) == "TOKEN_EXPIRED"


def test_a_ticket_is_not_an_access_token_and_an_access_token_is_not_a_ticket(tokens) -> None:
    ticket = tokens.issue_ticket(Claims("amy", (), 0), SID)
    assert _code(lambda: tokens.verify(ticket)) == "TOKEN_INVALID"
    assert _code(lambda: tokens.verify_ticket(tokens.issue("amy"), SID)) == "TOKEN_INVALID"
    refresh = tokens.issue("amy", kind="refresh")
    assert _code(lambda: tokens.verify_ticket(refresh, SID)) == "TOKEN_INVALID"
    assert _code(lambda: tokens.verify_ticket(None, SID)) == "TOKEN_MISSING"
