"""The linearizability checker's own tests (no server): the histories it must accept, the anomalies it
must name (a stale read, a lost acknowledged write, a value nobody wrote, time running backwards), and
seeded random histories from a real concurrent register, which must all pass, each then corrupted in
one read, which must all fail."""

import random
import threading
import time

from linearizability import INDETERMINATE, Op, check


def w(client, key, value, call, ret=INDETERMINATE):
    return Op(client, "write", key, value, call, ret)


def r(client, key, value, call, ret=INDETERMINATE):
    return Op(client, "read", key, value, call, ret)


def test_sequential_and_overlapping_histories_are_accepted():
    assert check([w(1, "k", "a", 0, 1), r(2, "k", "a", 2, 3)]).ok
    assert check([r(1, "k", None, 0, 1), w(1, "k", "a", 2, 3)]).ok
    # A read overlapping a write may see either value.
    assert check([w(1, "k", "a", 0, 10), r(2, "k", None, 1, 2), r(3, "k", "a", 3, 4)]).ok
    # ... but once one reader saw the new value, a later reader may not see the old one.
    bad = check([w(1, "k", "a", 0, 10), r(2, "k", "a", 1, 2), r(3, "k", None, 3, 4)])
    assert not bad.ok
    assert "key 'k'" in bad.explanation


def test_a_stale_read_after_an_acknowledged_write_fails():
    result = check([w(1, "k", "a", 0, 1), w(1, "k", "b", 2, 3), r(2, "k", "a", 4, 5)])
    assert not result.ok
    assert "read -> 'a'" in result.explanation


def test_a_lost_acknowledged_write_fails():
    # b was acknowledged, then every later read says a: b is lost.
    history = [w(1, "k", "a", 0, 1), w(2, "k", "b", 2, 3), r(3, "k", "a", 4, 5), r(3, "k", "a", 6, 7)]
    assert not check(history).ok


def test_a_value_nobody_wrote_fails():
    assert not check([w(1, "k", "a", 0, 1), r(2, "k", "zz", 2, 3)]).ok


def test_an_unanswered_write_may_take_effect_late_or_never():
    # The write of b never answered (its node was killed): a read long after may see b ...
    assert check([w(1, "k", "a", 0, 1), w(2, "k", "b", 2), r(3, "k", "b", 100, 101)]).ok
    # ... or a,
    assert check([w(1, "k", "a", 0, 1), w(2, "k", "b", 2), r(3, "k", "a", 100, 101)]).ok
    # ... but not b and then a again without another write.
    assert not check([w(1, "k", "a", 0, 1), w(2, "k", "b", 2), r(3, "k", "b", 100, 101), r(3, "k", "a", 102, 103)]).ok
    # An unanswered write cannot take effect before it was called.
    assert not check([r(3, "k", "b", 0, 1), w(2, "k", "b", 2)]).ok


def test_many_unanswered_writes_nobody_read_are_checked_quickly_and_still_catch_a_stale_read():
    # A partition leaves many writes unanswered; those no read saw may never have taken effect, so the
    # search leaves them out instead of trying them in every position (2^60 subsets otherwise).
    lost = [w(c, "k", f"lost-{c}", 10 + c) for c in range(60)]
    history = [w(1, "k", "a", 0, 1), *lost, w(2, "k", "b", 100, 101), r(3, "k", "b", 102, 103)]
    result = check(history, max_states=10_000)
    assert result.ok, result.explanation
    assert not check(history + [r(3, "k", "a", 104, 105)], max_states=10_000).ok


def test_keys_are_independent_and_the_failing_key_is_named():
    history = [w(1, "x", "1", 0, 1), r(2, "x", "1", 2, 3), w(1, "y", "1", 0, 1), r(2, "y", None, 2, 3)]
    result = check(history)
    assert not result.ok
    assert result.key == "y"


def record_concurrent_history(seed: int, clients: int = 4, ops_per_client: int = 25, keys: int = 2) -> list[Op]:
    """Runs threads against a locked dict (a linearizable register by construction), recording each
    operation's call and return times; some answers are dropped as if the client timed out."""
    rng = random.Random(seed)
    store: dict[str, str] = {}
    lock = threading.Lock()
    history: list[Op] = []
    history_lock = threading.Lock()
    plans = [
        [(rng.choice(["read", "write"]), f"k{rng.randrange(keys)}", rng.random() < 0.1) for _ in range(ops_per_client)]
        for _ in range(clients)
    ]

    def client(cid: int):
        for n, (kind, key, lose_answer) in enumerate(plans[cid]):
            value = f"c{cid}-{n}"
            call = time.monotonic()
            with lock:
                if kind == "write":
                    store[key] = value
                else:
                    value = store.get(key)
            ret = time.monotonic()
            if lose_answer:
                ret = INDETERMINATE
            with history_lock:
                history.append(Op(cid, kind, key, value, call, ret))

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return history


def test_recorded_histories_pass_and_each_corrupted_one_fails():
    for seed in range(40):
        history = record_concurrent_history(seed)
        result = check(history)
        assert result.ok, f"seed {seed}: {result.explanation}"
        # Corrupt one answered read into a value nobody wrote: the checker must notice.
        reads = [i for i, op in enumerate(history) if op.kind == "read" and op.ret != INDETERMINATE]
        if not reads:
            continue
        i = random.Random(seed).choice(reads)
        op = history[i]
        history[i] = Op(op.client, op.kind, op.key, "never-written", op.call, op.ret)
        assert not check(history).ok, f"seed {seed}: a corrupted read was accepted"


def test_a_stale_read_hidden_in_a_recorded_history_fails():
    # A read is made to return the value before the last acknowledged write that finished before it began.
    found = 0
    for seed in range(40):
        history = record_concurrent_history(seed, clients=3, ops_per_client=20, keys=1)
        ordered = sorted(history, key=lambda op: op.call)
        for i, op in enumerate(ordered):
            if op.kind != "read" or op.ret == INDETERMINATE:
                continue
            done = [x for x in ordered if x.kind == "write" and x.ret < op.call]
            if len(done) < 2:
                continue
            last = max(done, key=lambda x: x.ret)
            # Only when no other write overlaps the read or the last write (then the old value is stale for sure).
            others = [
                x for x in ordered if x.kind == "write" and x is not last and x.ret > last.call and x.call < op.ret
            ]
            if others:
                continue
            previous = [x for x in done if x.ret < last.call]
            if not previous:
                continue
            stale = max(previous, key=lambda x: x.ret).value
            if stale == op.value:
                continue
            corrupted = [x if x is not op else Op(op.client, "read", op.key, stale, op.call, op.ret) for x in history]
            assert not check(corrupted).ok, f"seed {seed}: a stale read was accepted"
            found += 1
            break
    assert found >= 5, "too few histories had a read to make stale: the test proves nothing"
