"""Coffer, an embeddable secrets engine, from Python: a binding of libcoffer's C ABI (include/coffer.h).

    with coffer.open({"storage": {"type": "sqlite", "path": "coffer.db"}}) as vault:
        vault.request("PUT", "sys/unseal", body={"key": unseal_key})
        vault.token = root_token
        vault.kv.put("app/db", {"password": "s3cret"})
        secret = vault.kv.get("app/db")      # KVSecret(data={'password': 's3cret'}, version=1)

A Coffer may be used from any number of threads at once (the library is thread-safe and ctypes
releases the GIL during calls). Failures raise a subclass of CofferError, one for each C status code.
The library is loaded from $COFFER_LIBRARY, else the copy inside this package (a wheel carries one),
else the system's libcoffer.so.0; `library_path()` tells which file that was.
"""

import ctypes
import json
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Type, Union

from . import _native
from ._native import lib
from ._events import Subscription

__all__ = [
    "open", "Coffer", "KV", "KVSecret", "Transit", "Response", "version", "abi_version", "library_path",
    "CofferError", "InvalidArgumentError", "SealedError", "PermissionDeniedError", "NotFoundError", "ConflictError",
    "UnavailableError", "StorageIOError", "OutOfMemoryError", "InternalError", "UnsupportedOperationError",
    "IntegrityError", "NotInitializedError", "AlreadyInitializedError", "RateLimitedError", "CorruptDatabaseError",
    "AuditFailedError", "error_class", "NO_CAS", "connect", "Remote", "SecretRead", "SOURCES", "Subscription",
]

# What a request body or a configuration may be: a dict (sent as JSON), JSON text, or JSON bytes.
JSONBody = Union[None, bytes, str, Mapping[str, Any]]

NO_CAS = -1  # COFFER_KV_NO_CAS


def version() -> str:
    """The version of the loaded libcoffer, e.g. "0.1.0"."""
    return bytes(lib.coffer_version()).decode()


def abi_version() -> int:
    """The ABI version of the loaded libcoffer (the N of libcoffer.so.N)."""
    return int(lib.coffer_abi_version())


def library_path() -> str:
    """The libcoffer file this process loaded: $COFFER_LIBRARY, the copy inside the package, or the
    one the dynamic loader found on the system library path."""
    return _native.library_path


# ---- Errors ---------------------------------------------------------------------------------


class CofferError(Exception):
    """A failed call. `code` is the C status (COFFER_E*, negative), `http_status` the HTTP status the
    server would answer (0 when the call failed before reaching the engine) and `body` the parsed
    error response ({"errors": [...]}) when there is one."""

    code: int = 0

    def __init__(self, code: int, message: str, http_status: int = 0, body: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(message or bytes(lib.coffer_strerror(code)).decode())
        self.code = code
        self.message = message
        self.http_status = http_status
        self.body = body


class InvalidArgumentError(CofferError, ValueError):
    code = -1


class SealedError(CofferError):
    code = -2


class PermissionDeniedError(CofferError, PermissionError):
    code = -3


class NotFoundError(CofferError, KeyError):
    code = -4

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class ConflictError(CofferError):
    code = -5


class UnavailableError(CofferError):
    code = -6


class StorageIOError(CofferError, OSError):
    code = -7


class OutOfMemoryError(CofferError, MemoryError):
    code = -8


class InternalError(CofferError):
    code = -9


class UnsupportedOperationError(CofferError):
    code = -10


class IntegrityError(CofferError):
    code = -11


class NotInitializedError(CofferError):
    code = -12


class AlreadyInitializedError(CofferError):
    code = -13


class RateLimitedError(CofferError):
    """A rate-limit or lease-count quota refused the call. `retry_after` is the whole seconds to wait
    (HTTP's Retry-After, from coffer_retry_after()), or None when the quota names no time."""

    code = -14
    retry_after: Optional[int] = None


class CorruptDatabaseError(CofferError):
    code = -15


class AuditFailedError(CofferError):
    code = -16


_ERRORS: Dict[int, Type[CofferError]] = {
    cls.code: cls
    for cls in (
        InvalidArgumentError, SealedError, PermissionDeniedError, NotFoundError, ConflictError, UnavailableError,
        StorageIOError, OutOfMemoryError, InternalError, UnsupportedOperationError, IntegrityError,
        NotInitializedError, AlreadyInitializedError, RateLimitedError, CorruptDatabaseError, AuditFailedError,
    )
}


def error_class(code: int) -> Type[CofferError]:
    """The exception class of a C status code (COFFER_E*): e.g. error_class(-4) is NotFoundError.
    A code this binding does not know (from a newer library) maps to CofferError itself."""
    return _ERRORS.get(code, CofferError)


def _error(code: int, http_status: int = 0, body: Optional[Dict[str, Any]] = None) -> CofferError:
    message = bytes(lib.coffer_errmsg()).decode("utf-8", "replace")
    error = error_class(code)(code, message, http_status, body)
    if isinstance(error, RateLimitedError) and hasattr(lib, "coffer_retry_after"):
        seconds = int(lib.coffer_retry_after())
        error.retry_after = seconds if seconds >= 0 else None
    return error


def _text(value: Optional[str], name: str) -> Optional[bytes]:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    return value.encode("utf-8")


def _json_bytes(value: JSONBody) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(dict(value), separators=(",", ":")).encode("utf-8")


# ---- Handles --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    """What coffer_request answered: the HTTP status and the JSON body (None for 204)."""

    status: int
    body: Optional[Dict[str, Any]]
    raw: bytes


@dataclass(frozen=True)
class KVSecret:
    """A KV v2 secret's data and the number of the version read."""

    data: Dict[str, Any]
    version: int


class Coffer:
    """An open Coffer (a coffer_t handle). Use it as a context manager, or call close().

    `config` is the JSON configuration of coffer_open, as a dict or a JSON string, e.g.
    {"storage": {"type": "sqlite", "path": "coffer.db"}} or {"dev": True}. `token` is the default
    client token for request() and kv; it can be changed later through the `token` attribute.
    coffer.open(config, token) is the same call.
    """

    def __init__(self, config: Union[str, Mapping[str, Any]], token: Optional[str] = None) -> None:
        self._handle: Optional[int] = None
        self._lock = threading.Lock()
        self.token: Optional[str] = token
        text = config if isinstance(config, str) else json.dumps(dict(config))
        handle = ctypes.c_void_p()
        status = lib.coffer_open(_text(text, "config"), ctypes.byref(handle))
        if status != 0:
            raise _error(status)
        self._handle = handle.value
        self.kv = KV(self)
        self.transit = Transit(self)

    def close(self) -> None:
        """Seals and closes. Safe to call twice; later calls on this object raise InvalidArgumentError."""
        with self._lock:
            handle, self._handle = self._handle, None
        if handle is not None:
            lib.coffer_close(handle)

    def __enter__(self) -> "Coffer":
        return self

    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<coffer.Coffer {'closed' if self._handle is None else 'open'}>"

    def __del__(self) -> None:
        if getattr(self, "_handle", None) is not None:
            self.close()

    @property
    def closed(self) -> bool:
        return self._handle is None

    def _h(self) -> int:
        handle = self._handle
        if handle is None:
            raise InvalidArgumentError(-1, "this Coffer is closed")
        return handle

    def request(
        self, method: str, path: str, body: JSONBody = None, token: Optional[str] = None,
        wrap_ttl: Optional[str] = None, client_address: Optional[str] = None, namespace: Optional[str] = None,
    ) -> Response:
        """Any operation of the Vault/OpenBao HTTP API, with the same JSON in and out.

        `method` is GET, PUT, POST, PATCH, DELETE or LIST; `path` is the API path without /v1/
        (e.g. "secret/data/app", "sys/unseal"); `body` a dict (sent as JSON), JSON text or bytes.
        `wrap_ttl` ("60s") wraps the answer as X-Vault-Wrap-TTL does; `client_address` is the
        address the call acts for (CIDR-bound tokens and secret IDs are checked against it);
        `namespace` ("team-a") is the namespace the call is for, as X-Vault-Namespace.
        Returns the HTTP status and the parsed body; raises a CofferError subclass when the
        operation fails (its `http_status` and `body` hold the HTTP error response).
        """
        data = _json_bytes(body)
        http = ctypes.c_int(0)
        out = ctypes.c_void_p()
        out_len = ctypes.c_size_t(0)
        args = (self._h(), _text(method, "method"), _text(path, "path"), _text(token or self.token, "token"),
                data or None, len(data))
        if wrap_ttl is None and client_address is None and namespace is None:
            status = lib.coffer_request(*args, ctypes.byref(http), ctypes.byref(out), ctypes.byref(out_len))
        else:
            opts = _native.RequestOpts(ctypes.sizeof(_native.RequestOpts), _text(wrap_ttl, "wrap_ttl"),
                                       _text(client_address, "client_address"), _text(namespace, "namespace"))
            status = lib.coffer_request_ex(*args, ctypes.byref(opts), ctypes.byref(http), ctypes.byref(out),
                                           ctypes.byref(out_len))
        raw = _native.take_buffer(out, out_len.value)
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:  # not JSON (no such path today); `raw` still has the bytes
            parsed = None
        if status != 0:
            raise _error(status, http.value, parsed)
        return Response(http.value, parsed, raw)

    def subscribe(
        self, pattern: str, callback: Callable[[Dict[str, Any]], None], token: Optional[str] = None,
    ) -> "Subscription":
        """Calls `callback(event)` with every event whose type matches `pattern` ("kv*", "*",
        "kv-v2/data-write") that `token` (default: this Coffer's) may see; returns the Subscription,
        a context manager that unsubscribes. See coffer.Subscription and docs/events.md for the
        thread rules. Raises PermissionDeniedError for a token that is not valid."""
        if not _native.HAS_EVENTS:
            raise InvalidArgumentError(-1, f"the loaded library ({library_path()}) has no coffer_subscribe; update it")
        return Subscription(self, pattern, callback, token or self.token)

    def replica_sync(self, timeout: float = 5.0) -> None:
        """On an embedded replica: waits until it has applied every write this process sent to the
        cluster's active node, so a read after it sees them (read your writes). Returns at once for a
        vault that is not a replica; raises UnavailableError when `timeout` seconds pass first."""
        if not _native.HAS_REPLICA:
            raise UnsupportedOperationError(-10, "this libcoffer has no embedded replicas (coffer_replica_sync)")
        milliseconds = max(0, min(int(timeout * 1000), 0xFFFFFFFF))
        status = lib.coffer_replica_sync(self._h(), milliseconds)
        if status != 0:
            raise _error(status)

    def metrics(self, format: str = "json") -> str:
        """The vault's counters, gauges and latency summaries (coffer_metrics; docs/metrics.md): "json"
        is OpenBao's sys/metrics JSON (json.loads it), "prometheus" the Prometheus text exposition.
        Needs no token. Raises InvalidArgumentError for another format, or when the loaded library
        predates coffer_metrics."""
        if not _native.HAS_METRICS:
            raise InvalidArgumentError(-1, f"the loaded library ({library_path()}) has no coffer_metrics; update it")
        out = ctypes.c_void_p()
        out_len = ctypes.c_size_t(0)
        status = lib.coffer_metrics(self._h(), _text(format, "format"), ctypes.byref(out), ctypes.byref(out_len))
        raw = _native.take_buffer(out, out_len.value)
        if status != 0:
            raise _error(status)
        return raw.decode("utf-8")

class KV:
    """The KV v2 fast paths (coffer_kv_get / coffer_kv_put): the secret's data only, with its version."""

    def __init__(self, owner: Coffer) -> None:
        self._owner = owner

    def get(self, path: str, version: int = 0, mount: str = "secret", token: Optional[str] = None) -> KVSecret:
        """The current (or the given) version of the secret at `mount`/`path`. Raises NotFoundError
        if it does not exist or that version is deleted or destroyed."""
        data = ctypes.c_void_p()
        data_len = ctypes.c_size_t(0)
        version_out = ctypes.c_int64(0)
        status = lib.coffer_kv_get(
            self._owner._h(), _text(mount, "mount"), _text(path, "path"), _text(token or self._owner.token, "token"),
            version, ctypes.byref(data), ctypes.byref(data_len), ctypes.byref(version_out))
        raw = _native.take_buffer(data, data_len.value)
        if status != 0:
            raise _error(status)
        return KVSecret(json.loads(raw), version_out.value)

    def put(
        self, path: str, data: Mapping[str, Any], cas: int = NO_CAS, mount: str = "secret", token: Optional[str] = None
    ) -> int:
        """Writes a new version and returns its number. With `cas` (0 or more) the write happens only
        if the current version is `cas` (0: only if the secret does not exist); else ConflictError."""
        payload = _json_bytes(data)
        version_out = ctypes.c_int64(0)
        status = lib.coffer_kv_put(
            self._owner._h(), _text(mount, "mount"), _text(path, "path"), _text(token or self._owner.token, "token"),
            payload, len(payload), cas, ctypes.byref(version_out))
        if status != 0:
            raise _error(status)
        return version_out.value


class Transit:
    """The transit fast paths (coffer_transit_encrypt / coffer_transit_decrypt): raw bytes in and
    out, the ciphertext as Vault writes it ("vault:v1:...")."""

    def __init__(self, owner: Coffer) -> None:
        self._owner = owner

    def encrypt(
        self, key: str, plaintext: bytes, context: Optional[bytes] = None, mount: str = "transit",
        token: Optional[str] = None,
    ) -> str:
        """Encrypts `plaintext` with the transit key `key`; returns the "vault:vN:..." ciphertext."""
        if not isinstance(plaintext, (bytes, bytearray)):
            raise InvalidArgumentError(-1, "plaintext must be bytes", 0, None)
        ciphertext = ctypes.c_void_p()
        length = ctypes.c_size_t(0)
        status = lib.coffer_transit_encrypt(
            self._owner._h(), _text(mount, "mount"), _text(key, "key"), _text(token or self._owner.token, "token"),
            bytes(plaintext), len(plaintext), context, len(context or b""), ctypes.byref(ciphertext), ctypes.byref(length))
        raw = _native.take_buffer(ciphertext, length.value)
        if status != 0:
            raise _error(status)
        return raw.decode("ascii")

    def decrypt(
        self, key: str, ciphertext: str, context: Optional[bytes] = None, mount: str = "transit",
        token: Optional[str] = None,
    ) -> bytes:
        """Decrypts a "vault:vN:..." ciphertext made with `key`; returns the plaintext bytes."""
        text = ciphertext.encode("utf-8")
        plaintext = ctypes.c_void_p()
        length = ctypes.c_size_t(0)
        status = lib.coffer_transit_decrypt(
            self._owner._h(), _text(mount, "mount"), _text(key, "key"), _text(token or self._owner.token, "token"),
            text, len(text), context, len(context or b""), ctypes.byref(plaintext), ctypes.byref(length))
        raw = _native.take_buffer(plaintext, length.value)
        if status != 0:
            raise _error(status)
        return raw


# Named as gzip.open and shelve.open are: coffer.open(...). Inside this module it hides the built-in open.
def open(config: Union[str, Mapping[str, Any]], token: Optional[str] = None) -> Coffer:
    """Opens a Coffer (coffer_open); use it as a context manager, which closes it:

        with coffer.open({"storage": {"type": "sqlite", "path": "coffer.db"}}) as vault:
            ...

    The same as Coffer(config, token); see Coffer for `config` and `token`."""
    return Coffer(config, token)


# ---- Remote handles -------------------------------------------------------------------------

# coffer_last_source's values (COFFER_SOURCE_*), as SecretRead.source names them.
SOURCES = {0: "none", 1: "store", 2: "cache", 3: "env_file", 4: "environment"}


@dataclass(frozen=True)
class SecretRead:
    """A secret read through a remote handle: its fields, its KV v2 version (0 from the env file or the
    environment), which source answered ("store", "cache", "env_file", "environment") and whether the
    store could not be reached (the answer is then a stale cache entry's or a fallback's)."""

    fields: Dict[str, Any]
    version: int
    source: str
    degraded: bool


class Remote(Coffer):
    """A handle on a remote cofferd (coffer_open with {"remote": ...}): reads through a cache with a TTL,
    retries with backoff, falls back to an env file and the environment when the store is down, and
    says so (docs/delivery.md). request(), metrics() and kv.get() work as on a local Coffer; the token
    is the handle's own unless one is given. Made by coffer.connect()."""

    def __init__(self, config: Union[str, Mapping[str, Any]]) -> None:
        if not _native.HAS_REMOTE:
            raise InvalidArgumentError(-1, f"the loaded library ({library_path()}) has no remote handles; update it")
        super().__init__(config, None)

    def read(self, path: str, mount: str = "secret", version: int = 0) -> SecretRead:
        """The KV v2 secret at `mount`/`path` through the cache and the fallback chain (store, a stale
        cache entry, the env file, the environment). Raises NotFoundError when the store says it does
        not exist, PermissionDeniedError when the token may not read it, UnavailableError when the store
        cannot be reached and no fallback has it."""
        secret = self.kv.get(path, version=version, mount=mount)
        return SecretRead(secret.data, secret.version, self.last_source, self.degraded)

    @property
    def last_source(self) -> str:
        """Which source answered the last read on this handle (from any thread)."""
        code = int(lib.coffer_last_source(self._h()))
        if code < 0:
            raise _error(code)
        return SOURCES.get(code, "unknown")

    @property
    def degraded(self) -> bool:
        """True while the store cannot be reached."""
        code = int(lib.coffer_degraded(self._h()))
        if code < 0:
            raise _error(code)
        return code == 1

    def events(self, after: int = 0) -> List[Dict[str, Any]]:
        """The handle's own events with an id above `after` (client/degraded, client/recovered), oldest
        first, as dicts {"id", "event_type", "timestamp", "data"}."""
        out = ctypes.c_void_p()
        out_len = ctypes.c_size_t(0)
        status = lib.coffer_client_events(self._h(), after, ctypes.byref(out), ctypes.byref(out_len))
        raw = _native.take_buffer(out, out_len.value)
        if status != 0:
            raise _error(status)
        events: List[Dict[str, Any]] = json.loads(raw)
        return events

    def __enter__(self) -> "Remote":
        return self

    def __repr__(self) -> str:
        return f"<coffer.Remote {'closed' if self._handle is None else 'open'}>"


def connect(
    address: str,
    token: Optional[str] = None,
    approle: Optional[Sequence[str]] = None,
    jwt: Union[None, str, Sequence[str]] = None,
    cache_ttl: Optional[float] = None,
    env_file: Optional[str] = None,
    *,
    ca_file: Optional[str] = None,
    namespace: Optional[str] = None,
    max_stale: Optional[float] = None,
    cache_bytes: Optional[int] = None,
    environment: Optional[bool] = None,
    retry: Optional[Mapping[str, Any]] = None,
    timeout: Optional[float] = None,
    **remote: Any,
) -> Remote:
    """Opens a handle on a remote cofferd at `address` ("http(s)://host:port"); use it as a context
    manager:

        with coffer.connect("http://127.0.0.1:8200", approle=(role_id, secret_id), env_file=".env") as c:
            secret = c.read("app")          # SecretRead(fields={...}, version=3, source="store", degraded=False)

    Exactly one of `token` (a token string), `approle` ((role_id, secret_id) or (role_id, secret_id,
    mount)) or `jwt` (a JWT string, or (role, jwt) or (role, jwt, mount)). `cache_ttl` is seconds
    (0: no cache), `env_file` the fallback file; further keys of the "remote" configuration
    (docs/delivery.md) may be given by name ("cache", "fallback" dicts override the shortcuts)."""
    given = [name for name, value in (("token", token), ("approle", approle), ("jwt", jwt)) if value is not None]
    if len(given) != 1:
        raise InvalidArgumentError(-1, "give exactly one of token=, approle=, jwt=")
    auth: Dict[str, Any]
    if token is not None:
        auth = {"token": token}
    elif approle is not None:
        parts = list(approle)
        if len(parts) not in (2, 3):
            raise InvalidArgumentError(-1, "approle= is (role_id, secret_id) or (role_id, secret_id, mount)")
        approle_config = {"role_id": parts[0], "secret_id": parts[1]}
        if len(parts) == 3:
            approle_config["mount"] = parts[2]
        auth = {"approle": approle_config}
    elif jwt is not None:
        if isinstance(jwt, str):
            auth = {"jwt": {"jwt": jwt}}
        else:
            parts = list(jwt)
            if len(parts) not in (2, 3):
                raise InvalidArgumentError(-1, "jwt= is a JWT, (role, jwt) or (role, jwt, mount)")
            auth = {"jwt": {"role": parts[0], "jwt": parts[1], **({"mount": parts[2]} if len(parts) == 3 else {})}}
    config: Dict[str, Any] = {"address": address, "auth": auth}
    cache: Dict[str, Any] = {}
    if cache_ttl is not None:
        cache["ttl"] = cache_ttl
    if max_stale is not None:
        cache["max_stale"] = max_stale
    if cache_bytes is not None:
        cache["max_bytes"] = cache_bytes
    fallback: Dict[str, Any] = {}
    if env_file is not None:
        fallback["env_file"] = env_file
    if environment is not None:
        fallback["environment"] = environment
    if cache:
        config["cache"] = cache
    if fallback:
        config["fallback"] = fallback
    if ca_file is not None:
        config["ca_file"] = ca_file
    if namespace is not None:
        config["namespace"] = namespace
    if retry is not None:
        config["retry"] = dict(retry)
    if timeout is not None:
        config["timeout"] = timeout
    for key, value in remote.items():
        if isinstance(value, Mapping) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return Remote({"remote": config})
