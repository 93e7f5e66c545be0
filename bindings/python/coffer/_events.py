"""Event subscriptions (coffer_subscribe / coffer_unsubscribe; docs/events.md)."""

import ctypes
import json
import threading
from types import TracebackType
from typing import Any, Callable, Dict, List, Optional, Type

from . import _native
from ._native import lib


class Subscription:
    """A running subscription: `callback(event)` is called with each event's CloudEvents JSON,
    parsed into a dict, on one of the library's delivery threads (never the thread that wrote),
    in order, one call at a time. Use it as a context manager, or call close(); close() returns
    once a callback in flight has returned (from inside the callback it returns at once).

    An exception raised by the callback is kept in `errors` (it cannot cross the C boundary); the
    subscription goes on.
    """

    def __init__(self, owner: Any, pattern: str, callback: Callable[[Dict[str, Any]], None],
                 token: Optional[str]) -> None:
        self._owner = owner
        self._callback = callback
        self.pattern = pattern
        self.errors: List[BaseException] = []
        self._lock = threading.Lock()
        self.id: Optional[int] = None

        def deliver(text: Optional[int], length: int, _ctx: Optional[int]) -> None:
            try:
                event = json.loads(ctypes.string_at(text, length)) if text else {}
                self._callback(event)
            except BaseException as error:  # noqa: BLE001 - nothing may unwind into C
                self.errors.append(error)

        # Kept on the object: the library calls it until unsubscribed, ctypes must not free it.
        self._c_callback = _native.EVENT_FN(deliver)
        out = ctypes.c_uint64(0)
        status = lib.coffer_subscribe(owner._h(), None if token is None else token.encode(), pattern.encode(),
                                      self._c_callback, None, ctypes.byref(out))
        if status != 0:
            from . import _error
            raise _error(status)
        self.id = out.value

    @property
    def active(self) -> bool:
        return self.id is not None

    def close(self) -> None:
        """Unsubscribes (coffer_unsubscribe). Safe to call twice, and after the Coffer was closed."""
        with self._lock:
            sid, self.id = self.id, None
        if sid is not None and not self._owner.closed:
            lib.coffer_unsubscribe(self._owner._h(), sid)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<coffer.Subscription {self.pattern!r} {'active' if self.active else 'closed'}>"
