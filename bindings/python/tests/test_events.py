"""Events through the Python binding (Coffer.subscribe; docs/events.md)."""

import queue
import threading
import time

import pytest

import coffer


def next_event(q, timeout=10):
    try:
        return q.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"no event within {timeout}s") from None


def test_a_kv_write_reaches_the_callback_with_its_metadata_and_no_value():
    with coffer.Coffer({"dev": True}, token="root") as c:
        seen = queue.Queue()
        threads = queue.Queue()
        def callback(event):
            threads.put(threading.get_ident())
            seen.put(event)
        with c.subscribe("kv*", callback) as sub:
            assert sub.active and sub.id
            c.kv.put("app/db", {"password": "hunter2-secret"})
            event = next_event(seen)
            assert threads.get() != threading.get_ident(), "callbacks run on the library's thread"
        assert not sub.active
        assert event["specversion"] == "1.0" and event["datacontentype"] == "application/cloudevents"
        assert event["data"]["event_type"] == "kv-v2/data-write"
        metadata = event["data"]["event"]["metadata"]
        assert metadata["path"] == "secret/data/app/db" and metadata["data_path"] == "secret/data/app/db"
        assert metadata["current_version"] == "1" and metadata["operation"] == "data-write"
        assert event["data"]["plugin_info"]["mount_path"] == "secret/"
        assert "hunter2-secret" not in repr(event)
        # After close, nothing more arrives.
        c.kv.put("app/db", {"password": "again"})
        with pytest.raises(queue.Empty):
            seen.get(timeout=0.3)
        assert sub.errors == []


def test_events_come_in_order_and_the_glob_filters_types():
    with coffer.Coffer({"dev": True}, token="root") as c:
        seen = queue.Queue()
        with c.subscribe("kv-v2/data-write", lambda e: seen.put(e)):
            for i in range(20):
                c.kv.put("ordered", {"i": str(i)})
            c.request("DELETE", "secret/metadata/ordered")  # kv-v2/metadata-delete: not matched
            versions = [next_event(seen)["data"]["event"]["metadata"]["current_version"] for _ in range(20)]
        assert versions == [str(i) for i in range(1, 21)]
        assert seen.empty()


def test_a_token_without_subscribe_is_refused_or_sees_nothing():
    with coffer.Coffer({"dev": True}, token="root") as c:
        c.request("PUT", "sys/policy/reader", body={"policy": 'path "secret/data/*" { capabilities = ["read"] }'})
        reader = c.request("POST", "auth/token/create", body={"policies": ["reader"]}).body["auth"]["client_token"]
        with pytest.raises(coffer.PermissionDeniedError):
            c.subscribe("kv-v2/data-write", lambda e: None, token=reader)
        with pytest.raises(coffer.PermissionDeniedError):
            c.subscribe("kv*", lambda e: None, token="not-a-token")
        seen = queue.Queue()
        with c.subscribe("kv*", lambda e: seen.put(e), token=reader):
            c.kv.put("app/db", {"password": "x"})
            with pytest.raises(queue.Empty):
                seen.get(timeout=0.5)


def test_unsubscribe_from_inside_the_callback_does_not_deadlock():
    with coffer.Coffer({"dev": True}, token="root") as c:
        done = threading.Event()
        holder = {}
        def callback(event):
            holder["sub"].close()
            done.set()
        holder["sub"] = c.subscribe("*", callback)
        c.kv.put("x", {"a": "b"})
        assert done.wait(10)
        assert not holder["sub"].active
        assert holder["sub"].errors == []


def test_close_ends_subscriptions():
    c = coffer.Coffer({"dev": True}, token="root")
    sub = c.subscribe("*", lambda e: None)
    c.close()
    sub.close()  # after the Coffer: nothing to do, no error
    assert not sub.active


def test_a_rotation_fires_the_callback_and_a_failed_one_writes_nothing():
    """Issue 20's done-when from Python: rotate a secret and watch the callback fire (docs/rotation.md)."""
    with coffer.Coffer({"dev": True}, token="root") as c:
        c.kv.put("app/db", {"user": "app", "password": "before-rotation"})
        c.request("PUT", "secret/rotation/app/db",
                  body={"field": "password", "generator": "password", "length": 24, "grace_period": "1s"})
        seen = queue.Queue()
        with c.subscribe("kv-v2/rotation-*", lambda e: seen.put(e)):
            c.request("POST", "secret/rotate/app/db")
            types = []
            # The grace period (1 s) ends on the library's own scheduler, which archives the old version.
            while "kv-v2/rotation-archived" not in types:
                types.append(next_event(seen)["data"]["event_type"])
        assert types == ["kv-v2/rotation-started", "kv-v2/rotation-succeeded", "kv-v2/rotation-archived"]
        rotated = c.kv.get("app/db")
        assert rotated.data["password"] != "before-rotation" and len(rotated.data["password"]) == 24
        assert rotated.data["user"] == "app"
        assert rotated.version == 2

        # A validator that refuses every candidate: nothing is written, the failure is an event.
        c.request("PUT", "secret/rotation/app/db",
                  body={"field": "password", "generator": "password", "length": 24,
                        "validate_command": ["/bin/false"], "grace_period": "1s"})
        with c.subscribe("kv-v2/rotation-*", lambda e: seen.put(e)):
            # The archived event can arrive before the scheduler's runner has let go of the secret; a
            # rotation asked for meanwhile is refused as busy (409-style conflict): ask again.
            deadline = time.monotonic() + 10
            while True:
                try:
                    answer = c.request("POST", "secret/rotate/app/db").body
                    break
                except coffer.ConflictError:
                    assert time.monotonic() < deadline, "the first rotation never let go of the secret"
                    time.sleep(0.02)
            assert answer["data"]["last_run"]["outcome"] == "failed"
            assert "validation" in answer["data"]["last_run"]["error"]
            failed = next_event(seen)
            while failed["data"]["event_type"] != "kv-v2/rotation-failed":
                failed = next_event(seen)
        assert c.kv.get("app/db").version == 2
        assert rotated.data["password"] not in repr(failed)
