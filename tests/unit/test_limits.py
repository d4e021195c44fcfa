"""server.admission.limits: bytes in flight and the per-token request rate (a fake clock, no server)."""

from __future__ import annotations

from server.admission.limits import InflightBytes, TokenRate


def test_inflight_bytes_refuse_beyond_the_limit_but_always_admit_one() -> None:
    held = InflightBytes(1000)
    assert held.reserve(600) and held.reserve(400)  # exactly the limit
    assert not held.reserve(1)
    held.release(600)
    assert held.reserve(500) and held.used == 900
    held.release(900)
    assert held.used == 0 and held.reserve(5000)  # alone: bounded by max_body_bytes, not by this
    assert not held.reserve(1)


def test_token_rate_refills_with_time_and_keeps_tokens_apart() -> None:
    now = [0.0]
    rate = TokenRate(2.0, clock=lambda: now[0])  # bursts of 2, then 2 a second
    assert [rate.allow(b"a") for _ in range(3)] == [True, True, False]
    assert rate.allow(b"b")  # another token: its own bucket
    now[0] = 0.25
    assert not rate.allow(b"a")  # half a request earned
    now[0] = 0.5
    assert rate.allow(b"a") and not rate.allow(b"a")
    now[0] = 100.0
    assert [rate.allow(b"a") for _ in range(3)] == [True, True, False]  # the burst is capped


def test_a_rate_below_one_still_admits_one_request() -> None:
    now = [0.0]
    rate = TokenRate(0.5, clock=lambda: now[0])
    assert rate.allow(b"a") and not rate.allow(b"a")
    now[0] = 1.9
    assert not rate.allow(b"a")
    now[0] = 2.0
    assert rate.allow(b"a")


def test_a_request_is_never_refused_by_its_own_earlier_chunks() -> None:
    inflight = InflightBytes(100)
    assert inflight.reserve(80) and inflight.reserve(80, own=80)  # one chunked body alone, past the limit
    other = InflightBytes(100)
    assert other.reserve(30)  # another request's body
    assert other.reserve(60, own=0) and not other.reserve(60, own=60)  # 30 held by someone else
