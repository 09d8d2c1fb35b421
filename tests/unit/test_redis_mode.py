"""ORCHESTRATOR_TEST_REDIS: which Redis the tests start (tests/redis_mode.py)."""

from __future__ import annotations

import pytest

from redis_mode import TEST_REDIS_ENV, redis_mode, slot_checked_redis


@pytest.mark.parametrize(("value", "mode"), [(None, "single"), ("", "single"), ("single", "single"),
                                             ("slots", "slots"), (" slots ", "slots")])
def test_the_accepted_values(monkeypatch: pytest.MonkeyPatch, value: str | None, mode: str) -> None:
    if value is None:
        monkeypatch.delenv(TEST_REDIS_ENV, raising=False)
    else:
        monkeypatch.setenv(TEST_REDIS_ENV, value)
    assert redis_mode() == mode
    assert slot_checked_redis() is (mode == "slots")


@pytest.mark.parametrize("value", ["bogus", "cluster", "SLOTS"])
def test_any_other_value_is_refused_naming_the_accepted_ones(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(TEST_REDIS_ENV, value)
    with pytest.raises(ValueError, match=f"{TEST_REDIS_ENV}='{value}' is not one of single, slots"):
        redis_mode()
