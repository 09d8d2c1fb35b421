"""Namespaces in tokens files and JWTs (orchestrator/core/auth.py) are checked as they are read
(namespaces on a real node: tests/integration/api/test_namespaces.py)."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest

from orchestrator.core.auth import Tokens, TokensError

JWT_SECRET = "namespaces-test-secret-of-32-bytes-" + uuid.uuid4().hex


def test_namespaces_in_tokens_files_and_jwts_are_checked() -> None:
    with pytest.raises(TokensError, match="`namespace` must be a namespace name"):
        Tokens.from_document({"tokens": [{"name": "x", "roles": ["admin"], "namespace": "Team A",
                                          "token": "t" * 20}]})
    rules = Tokens.from_document({"jwt": {"algorithm": "HS256"}}, JWT_SECRET.encode())
    now = int(time.time())
    claims = {"sub": "svc", "roles": ["operator"], "exp": now + 60}
    confined = rules.find(jwt.encode({**claims, "ns": "team-a"}, JWT_SECRET, algorithm="HS256"))
    assert confined is not None and confined.namespace == "team-a"
    unconfined = rules.find(jwt.encode(claims, JWT_SECRET, algorithm="HS256"))
    assert unconfined is not None and unconfined.namespace is None
    assert rules.find(jwt.encode({**claims, "ns": "../etc"}, JWT_SECRET, algorithm="HS256")) is None
