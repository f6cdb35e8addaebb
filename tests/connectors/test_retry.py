"""The one retry policy: backoff, Retry-After, one re-login, budget and throttle."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from connectors.errors import (
    AuthError,
    ConfigError,
    QuotaExceededError,
    RateLimitedError,
    RequestBudgetExceededError,
    RetriableError,
    SessionExpiredError,
)
from connectors.retry import RetryPolicy


def make_policy(**kwargs: object) -> tuple[RetryPolicy, list[float]]:
    slept: list[float] = []
    policy = RetryPolicy(sleep=slept.append, rng=random.Random(7), **kwargs)  # type: ignore[arg-type]
    return policy, slept


def failing(*errors: Exception, result: str = "ok") -> Callable[[], str]:
    queue = list(errors)

    def call() -> str:
        if queue:
            raise queue.pop(0)
        return result

    return call


def test_given_transient_faults_when_called_then_retried_with_capped_jittered_backoff() -> None:
    policy, slept = make_policy(base_delay_seconds=1.0, max_delay_seconds=3.0)
    call = failing(RetriableError("503"), RetriableError("timeout"), RetriableError("503"))
    assert policy.call(call) == "ok"
    assert len(slept) == 3
    for attempt, delay in enumerate(slept, start=1):
        assert 0 <= delay <= min(3.0, 1.0 * 2 ** (attempt - 1))
    assert policy.requests_made == 4
    assert policy.retries == 3


def test_given_persistent_faults_when_attempts_run_out_then_the_last_error_is_raised() -> None:
    policy, slept = make_policy(max_attempts=3)
    with pytest.raises(RetriableError, match="third"):
        policy.call(failing(RetriableError("1"), RetriableError("2"), RetriableError("third")))
    assert len(slept) == 2
    assert policy.requests_made == 3


def test_given_retry_after_when_rate_limited_then_exactly_that_long_is_waited() -> None:
    policy, slept = make_policy()
    assert policy.call(failing(RateLimitedError("429", retry_after_seconds=7))) == "ok"
    assert slept == [7]


def test_given_an_absurd_retry_after_when_rate_limited_then_the_run_stops_instead() -> None:
    policy, slept = make_policy(max_retry_after_seconds=60)
    with pytest.raises(RateLimitedError):
        policy.call(failing(RateLimitedError("429", retry_after_seconds=3600)))
    assert slept == []


@pytest.mark.parametrize(
    "error", [QuotaExceededError("daily"), AuthError("bad"), ConfigError("field")]
)
def test_given_a_non_retriable_error_when_called_then_it_is_raised_at_once(
    error: Exception,
) -> None:
    policy, slept = make_policy()
    with pytest.raises(type(error)):
        policy.call(failing(error))
    assert slept == []
    assert policy.requests_made == 1


def test_given_an_expired_session_when_called_then_one_relogin_then_success() -> None:
    policy, _ = make_policy()
    logins: list[int] = []
    result = policy.call(
        failing(SessionExpiredError("401")), reauthenticate=lambda: logins.append(1)
    )
    assert result == "ok"
    assert logins == [1]


def test_given_a_session_that_expires_twice_when_called_then_auth_error_after_one_relogin() -> None:
    policy, _ = make_policy()
    logins: list[int] = []
    with pytest.raises(SessionExpiredError):
        policy.call(
            failing(SessionExpiredError("401"), SessionExpiredError("401 again")),
            reauthenticate=lambda: logins.append(1),
        )
    assert logins == [1]


def test_given_a_request_budget_when_spent_then_the_next_request_is_refused() -> None:
    policy, _ = make_policy(request_budget=2)
    assert policy.call(failing()) == "ok"
    assert policy.call(failing()) == "ok"
    with pytest.raises(RequestBudgetExceededError) as caught:
        policy.call(failing())
    assert (caught.value.used, caught.value.limit) == (2, 2)


def test_given_a_rate_when_requests_burst_then_the_policy_waits_for_the_window() -> None:
    clock = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    policy = RetryPolicy(
        rate_requests=3, rate_period_seconds=10.0, sleep=sleep, monotonic=lambda: clock[0]
    )
    sent: list[float] = []
    for _ in range(7):
        policy.call(lambda: sent.append(clock[0]))
        clock[0] += 1.0
    # 3 requests at t=0,1,2; the 4th waits until t=10; never more than 3 in any 10 s.
    assert sent[:4] == [0.0, 1.0, 2.0, 10.0]
    assert all(later - first >= 10.0 for first, later in zip(sent, sent[3:], strict=False))
    assert sum(slept) > 0
