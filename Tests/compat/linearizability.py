"""A linearizability checker for key-value register histories (issue 18).

A history is what clients saw: each operation with the time it was called and the time its answer
came back, on one monotonic clock (every client in one test process). An operation whose answer
never came (a timeout, a killed node) is *indeterminate*: it may have taken effect at any time after
its call, or never, so its return time is infinity and a read's value is unknown.

The history is linearizable when there is one order of the operations that (1) keeps every operation
that returned before another was called ahead of it and (2) is a legal run of a plain register: a
read returns the last value written (None before any write). The check is Wing and Gong's search
with Lowe's memoisation (the approach of Knossos and Porcupine): take, among the operations not yet
placed, one whose call precedes every pending return, apply it to the model, and backtrack when the
model disagrees; a set of (placed operations, model state) already explored is not explored again.
Keys are independent registers, so each key is checked on its own (P-compositionality), and a write
that never answered and that no read saw is left out (it may never have taken effect), which keeps the
search small.

    ops = [Op(client=1, kind="write", key="k", value="a", call=0.0, ret=1.0),
           Op(client=2, kind="read", key="k", value="a", call=0.5, ret=2.0)]
    result = check(ops)
    assert result.ok, result.explanation
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Optional

INDETERMINATE = math.inf


@dataclass(frozen=True)
class Op:
    client: int
    kind: str  # "write", "read" or "delete"
    key: str
    value: Optional[str]  # written value, or the value read (None: not found); ignored for delete
    call: float
    ret: float = INDETERMINATE  # INDETERMINATE when no answer came

    @property
    def indeterminate(self) -> bool:
        return self.ret == INDETERMINATE


@dataclass
class Result:
    ok: bool
    key: Optional[str] = None
    explanation: str = ""
    ops_checked: int = 0
    states_explored: int = 0
    # The longest prefix of a legal order found for the failing key: where the search got stuck.
    longest_prefix: list[Op] = field(default_factory=list)


class Budget(Exception):
    """The search explored more states than allowed: the history was neither proven nor refuted."""


def _step(state: Optional[str], op: Op) -> tuple[bool, Optional[str]]:
    """Applies op to a register holding state: (legal, new state)."""
    if op.kind == "write":
        return True, op.value
    if op.kind == "delete":
        return True, None
    if op.kind == "read":
        if op.indeterminate:
            return True, state  # nobody saw its answer
        return op.value == state, state
    raise ValueError(f"unknown operation kind {op.kind!r}")


def _check_key(ops: list[Op], max_states: int) -> tuple[bool, int, list[Op]]:
    """Wing-Gong-Lowe search over one key's operations; (linearizable, states explored, longest prefix)."""
    # A read that never answered constrains nothing: drop it. So does a write that never answered and
    # whose value no read returned (values are unique per write): the history is legal with it exactly
    # when it is legal without it, since the write may never have taken effect. Partitions leave many such
    # writes, and each one left in would multiply the search.
    seen = {op.value for op in ops if op.kind == "read" and not op.indeterminate}
    ops = [op for op in ops
           if not (op.indeterminate and (op.kind == "read" or op.kind == "write" and op.value not in seen))]
    n = len(ops)
    if n == 0:
        return True, 0, []
    # Events in time order; a return at the same instant as a call sorts first (the op ended before
    # the other began, which is the stricter reading of real time).
    events: list[tuple[float, int, int]] = []  # (time, 0 = return / 1 = call, op index)
    for i, op in enumerate(ops):
        if op.ret < op.call:
            raise ValueError(f"operation {op} returns before it is called")
        events.append((op.call, 1, i))
        if not op.indeterminate:
            events.append((op.ret, 0, i))
    events.sort()
    # For each op: the position of its return among the events (math.inf for indeterminate ones).
    # An op may be placed next when it is called before the earliest return of the unplaced ops.
    call_pos = {}
    ret_pos = {}
    for pos, (_, is_call, i) in enumerate(events):
        (call_pos if is_call else ret_pos)[i] = pos
    order_by_call = sorted(range(n), key=lambda i: call_pos[i])

    placed = 0  # bitmask of placed ops
    state: Optional[str] = None
    stack: list[tuple[int, Optional[str], int]] = []  # (op placed, state before, bitmask before)
    seen: set[tuple[int, Optional[str]]] = set()
    explored = 0
    longest: list[int] = []
    full = (1 << n) - 1
    # Candidate cursor per depth: which position in order_by_call to try next.
    cursor = 0
    while True:
        if placed == full:
            return True, explored, [ops[i] for i, _, _ in stack]
        # The earliest return among unplaced ops bounds which ops may go next.
        earliest_return = math.inf
        for i in range(n):
            if not placed >> i & 1:
                r = ret_pos.get(i, math.inf)
                if r < earliest_return:
                    earliest_return = r
        advanced = False
        while cursor < n:
            i = order_by_call[cursor]
            cursor += 1
            if placed >> i & 1:
                continue
            if call_pos[i] > earliest_return:
                break  # ops are in call order: none further may go next either
            legal, new_state = _step(state, ops[i])
            if not legal:
                continue
            nxt = placed | 1 << i
            if (nxt, new_state) in seen:
                continue
            seen.add((nxt, new_state))
            explored += 1
            if explored > max_states:
                raise Budget(f"more than {max_states} states explored")
            stack.append((i, state, cursor))
            placed, state, cursor = nxt, new_state, 0
            if len(stack) > len(longest):
                longest = [j for j, _, _ in stack]
            advanced = True
            break
        if advanced:
            continue
        # An indeterminate op may also never have taken effect: once every other op is placed, what is
        # left unplaced is exactly those, and the history is legal without them.
        if all(placed >> i & 1 or ops[i].indeterminate for i in range(n)):
            return True, explored, [ops[i] for i, _, _ in stack]
        if not stack:
            return False, explored, [ops[i] for i in longest]
        i, state, cursor = stack.pop()
        placed &= ~(1 << i)


def check(history: Iterable[Op], max_states: int = 2_000_000) -> Result:
    """Checks a whole history, key by key; the first key that is not linearizable fails it."""
    by_key: dict[str, list[Op]] = {}
    for op in history:
        by_key.setdefault(op.key, []).append(op)
    total_ops = 0
    total_states = 0
    for key in sorted(by_key):
        ops = by_key[key]
        ok, states, prefix = _check_key(ops, max_states)
        total_ops += len(ops)
        total_states += states
        if not ok:
            lines = [f"key {key!r}: no legal order of its {len(ops)} operations exists"]
            lines.append("longest legal prefix found:")
            lines += [f"  {_describe(op)}" for op in prefix]
            placed = set(map(id, prefix))
            rest = sorted((op for op in ops if id(op) not in placed), key=lambda op: op.call)
            lines.append("operations that could not be placed after it:")
            lines += [f"  {_describe(op)}" for op in rest[:20]]
            return Result(False, key, "\n".join(lines), total_ops, total_states, prefix)
    return Result(True, None, f"{total_ops} operations on {len(by_key)} keys are linearizable", total_ops, total_states)


def _describe(op: Op) -> str:
    end = "never answered" if op.indeterminate else f"{op.ret:.6f}"
    what = {"write": f"write {op.value!r}", "delete": "delete", "read": f"read -> {op.value!r}"}[op.kind]
    return f"client {op.client}: {what}  [{op.call:.6f} .. {end}]"


def check_campaign(history, log, label):
    """The end of a fault campaign (test_raft_campaign, test_cluster_campaign): checks that the run did what
    it claims to test (30 acknowledged writes, 30 reads, a kill of the leader, a SIGSTOP), prints what
    happened with the time from each kill to the next acknowledged write, and returns the checker's
    result. `log` holds (action, node, time) entries; kills are the actions starting with "kill"."""
    acknowledged = [op for op in history if op.kind == "write" and op.ret != INDETERMINATE]
    reads = [op for op in history if op.kind == "read"]
    kills = [entry for entry in log if entry[0].startswith("kill")]
    assert len(acknowledged) >= 30, f"only {len(acknowledged)} writes were acknowledged"
    assert len(reads) >= 30, f"only {len(reads)} reads answered"
    assert kills, "the nemesis never killed the leader"
    assert any(entry[0] == "SIGSTOP" for entry in log), "the nemesis never froze a node"
    # Failover as a client sees it: from each kill -9 of the leader to the next acknowledged write.
    failovers = []
    for _, _, at in kills:
        after = [op.ret for op in acknowledged if op.call >= at]
        if after:
            failovers.append(min(after) - at)
    result = check(history)
    print(
        f"\n{label}: {len(history)} operations ({len(acknowledged)} acknowledged writes, {len(reads)} reads), "
        f"nemesis: {[(a, n) for a, n, _ in log]}, kill -9 -> next acknowledged write: "
        f"{[f'{f * 1000:.0f} ms' for f in failovers]}; {result.explanation.splitlines()[0]}"
    )
    return result
