"""The admission types' contract: keyword-only arguments with their defaults, validation on construction, and frozen
Limits, Subjects and Tickets (a Ticket handed back to ``settle`` cannot have been altered on the way)."""

from __future__ import annotations

import dataclasses

import pytest

from tenantlm.admission import AdmissionRequest, Decision, Limits, RateStatus, SettleResult, Subject, Ticket

TYPES = (Limits, Subject, AdmissionRequest, Ticket, RateStatus, Decision, SettleResult)


def test_instances_hold_what_was_given_and_stay_frozen() -> None:
    sub = Subject(level="key", id="k1", limits=Limits(rpm=3))
    ticket = Ticket(tenant_id="t", request_id="r", subjects=(sub,), tokens=5, cost_usd=0.5, day="d:2026-11-23",
                    month="m:2026-11", bucket_s=7, lease_s=30.0)  # fmt: skip
    assert (ticket.subjects, ticket.bucket_s, ticket.degraded) == ((sub,), 7, False)
    assert ticket == dataclasses.replace(ticket) and hash(ticket) == hash(dataclasses.replace(ticket))
    decision = Decision(admitted=True, ticket=ticket)
    assert (decision.message, decision.requests, decision.retry_after_s) == ("", None, None)
    assert repr(RateStatus(limit=1, remaining=0, reset_s=2.5)) == "RateStatus(limit=1, remaining=0, reset_s=2.5)"
    with pytest.raises(dataclasses.FrozenInstanceError):
        ticket.tokens = 6  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del ticket.subjects  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        sub.id = "k2"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        sub.limits.rpm = 4  # type: ignore[misc]


def test_wrong_arguments_are_refused_as_before() -> None:
    with pytest.raises(TypeError, match=r"RateStatus.__init__\(\) missing 1 required keyword-only argument"):
        RateStatus(limit=1, remaining=0)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        SettleResult(budget_exhausted=False, colour=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="positional"):
        Subject("key", "k1", Limits())  # type: ignore[misc]


@pytest.mark.parametrize("cls", TYPES)
def test_no_argument_can_be_passed_by_position(cls: type) -> None:
    with pytest.raises(TypeError, match="positional"):
        cls(True)


def test_post_init_still_validates() -> None:
    sub = Subject(level="key", id="k1", limits=Limits())
    with pytest.raises(ValueError, match="appears twice"):
        AdmissionRequest(tenant_id="t", request_id="r", subjects=(sub, sub), tokens=1, cost_usd=0.0)
    with pytest.raises(ValueError, match="lease_s"):
        AdmissionRequest(tenant_id="t", request_id="r", subjects=(sub,), tokens=1, cost_usd=0.0, lease_s=0.0)
