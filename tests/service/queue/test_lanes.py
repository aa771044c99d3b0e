from service.core.lanes import LANE_ORDER, Lane, effective_rank
from service.queue.protocols import DrainRate


def test_lane_order_is_stat_first():
    assert (Lane.stat, Lane.urgent, Lane.routine, Lane.batch) == LANE_ORDER
    assert [lane.rank for lane in LANE_ORDER] == [0, 1, 2, 3]


def test_aging_lifts_one_lane_per_aging_period():
    assert effective_rank(Lane.batch, 0, 10) == 3
    assert effective_rank(Lane.batch, 10, 10) == 2
    # equivalent to ordering by enqueued_at + rank * aging: 30 s of waiting outranks stat
    assert effective_rank(Lane.batch, 31, 10) < effective_rank(Lane.stat, 0.5, 10)
    assert effective_rank(Lane.batch, 29, 10) > effective_rank(Lane.stat, 0.5, 10)


def test_drain_rate_retry_after_follows_measured_rate():
    rate = DrainRate(half_life=1.0)
    assert rate.retry_after(100) == 5  # nothing measured yet: a bounded guess
    now = 1000.0
    rate._last = now
    for _ in range(50):  # 10 completions per second
        now += 0.1
        rate.record(now)
    assert 9 < rate.per_second < 11
    assert rate.retry_after(50) in (5, 6)
    assert rate.retry_after(0) == 1
    assert rate.retry_after(10_000) == 60
