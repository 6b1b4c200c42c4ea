"""Tests for ``server.core.policy``: one ordered policy type instead of compared strings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.core.config import load_config
from server.core.policy import POLICIES
from server.core.policy import Policy
from server.core.policy import as_policy
from server.core.rules import AccessControl
from server.core.rules import AccessRequest
from tests.conftest import BASE_CONFIG


def test_order_is_bypass_one_two_deny() -> None:
    """Policies rank by what they ask of a visitor, not alphabetically ('deny' < 'one_factor')."""
    assert sorted([Policy.DENY, Policy.ONE_FACTOR, Policy.BYPASS, Policy.TWO_FACTOR]) == [
        Policy.BYPASS, Policy.ONE_FACTOR, Policy.TWO_FACTOR, Policy.DENY,
    ]  # fmt: skip
    assert Policy.DENY > Policy.ONE_FACTOR  # as strings, "deny" < "one_factor"
    assert max(Policy.TWO_FACTOR, Policy.DENY) is Policy.DENY
    assert Policy.ONE_FACTOR < "two_factor"
    assert "deny" > Policy.TWO_FACTOR  # noqa: SIM300 - the reflected comparison ranks too
    assert [p.factors for p in Policy] == [0, 1, 2, None]


def test_a_policy_is_its_spelling() -> None:
    """JSON, f-strings, repr in messages, equality and dict keys are the SPEC strings."""
    assert POLICIES == ("bypass", "one_factor", "two_factor", "deny")
    assert json.dumps({"policy": Policy.TWO_FACTOR}) == '{"policy": "two_factor"}'
    assert f"{Policy.BYPASS} {Policy.DENY!r}" == "bypass 'deny'"
    assert Policy.DENY == "deny"
    assert {"deny": 1}[Policy.DENY] == 1
    assert as_policy("one_factor") is Policy.ONE_FACTOR


def test_ordering_against_junk_is_an_error() -> None:
    """A string that is no policy cannot be ranked (no silent alphabetical order)."""
    with pytest.raises(TypeError):
        _ = Policy.DENY < "allow"
    with pytest.raises(ValueError, match="is not one of bypass, one_factor, two_factor, deny"):
        as_policy("allow")


def test_config_and_engine_hand_out_policies(tmp_path: Path) -> None:
    """The loaded config and the engine's decisions carry Policy members, not bare strings."""
    path = tmp_path / "authctl.toml"
    path.write_text(BASE_CONFIG, encoding="utf-8")
    config = load_config(path)
    assert config.access_control.default_policy is Policy.DENY
    assert all(isinstance(r.policy, Policy) for r in config.access_control.rules)
    engine = AccessControl(config.access_control)
    decision = engine.evaluate(AccessRequest(host="public.example.com"))
    assert decision.policy is Policy.BYPASS
    explanation = engine.explain(AccessRequest(host="nowhere.example.org"))
    assert explanation.policy is Policy.DENY
    assert all(isinstance(r.policy, Policy) for r in explanation.rules)
