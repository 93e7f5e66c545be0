"""ctypes declarations of include/coffer.h. Every function used has argtypes and restype set.

Where the library comes from, first that applies:
1. $COFFER_LIBRARY, a path to libcoffer.so.0 (nothing else is tried when it is set);
2. the copy inside this package (coffer/libcoffer.so.0), which a wheel built by `make wheel` carries;
3. libcoffer.so.0 from the dynamic loader's search path (LD_LIBRARY_PATH, the ld.so cache, /usr/lib).
Only the first that applies is tried. `library_path` is the file that was loaded (as the dynamic
loader reports it).
"""

import ctypes
import os
from typing import List, Tuple

ABI_VERSION = 0
LIBRARY_NAME = f"libcoffer.so.{ABI_VERSION}"
BUNDLED_LIBRARY = os.path.join(os.path.dirname(os.path.abspath(__file__)), LIBRARY_NAME)


def _choose() -> Tuple[str, str, List[str]]:
    """The library to load, what it is, and what was passed over on the way. Only one is tried: a
    library that is there but does not load is an error, never silently replaced by another copy."""
    configured = os.environ.get("COFFER_LIBRARY")
    if configured:
        return configured, "$COFFER_LIBRARY", []
    if os.path.exists(BUNDLED_LIBRARY):
        return BUNDLED_LIBRARY, "the copy inside the package", []
    skipped = ["$COFFER_LIBRARY: not set", f"{BUNDLED_LIBRARY} (the copy inside the package): not there"]
    return LIBRARY_NAME, "the system library path", skipped


def _load() -> Tuple[ctypes.CDLL, str]:
    path, origin, skipped = _choose()
    try:
        lib = ctypes.CDLL(path)
    except OSError as error:
        tried = "; ".join(skipped + [f"{path} ({origin}): {error}"])
        if path == BUNDLED_LIBRARY:
            advice = "Reinstall the coffer wheel (pip install --force-reinstall)"
        else:
            advice = ("Install the wheel that carries it (make wheel), or install libcoffer (make install PREFIX=...) "
                      "and put its lib directory on LD_LIBRARY_PATH, or set COFFER_LIBRARY to the library's path")
        raise ImportError(
            f"coffer: cannot load libcoffer; tried {tried}. {advice} (libcoffer needs OpenSSL 3, Nettle and "
            "SQLite 3 on the system: libssl3, libnettle8, libsqlite3-0)"
        ) from None
    try:
        abi = lib.coffer_abi_version
    except AttributeError:
        raise ImportError(f"coffer: {path} ({origin}) is not libcoffer: it has no coffer_abi_version") from None
    abi.argtypes = []
    abi.restype = ctypes.c_int
    found = int(abi())
    if found != ABI_VERSION:
        raise ImportError(f"coffer: {path} ({origin}) has ABI version {found}, this binding needs {ABI_VERSION}")
    return lib, _file_of(lib, path)


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


def _file_of(lib: ctypes.CDLL, fallback: str) -> str:
    """The file the dynamic loader mapped for `lib` (dladdr of one of its functions): for a library
    found by name on the system path, where it was found."""
    try:
        dladdr = ctypes.CDLL(None).dladdr
    except (OSError, AttributeError):
        return fallback
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    dladdr.restype = ctypes.c_int
    info = _DlInfo()
    address = ctypes.cast(lib.coffer_abi_version, ctypes.c_void_p)
    if dladdr(address, ctypes.byref(info)) == 0 or not info.dli_fname:
        return fallback
    return os.path.abspath(os.fsdecode(info.dli_fname))


lib, library_path = _load()

c_char_pp = ctypes.POINTER(ctypes.c_void_p)  # char ** out-parameters, kept as raw pointers to free them

lib.coffer_version.argtypes = []
lib.coffer_version.restype = ctypes.c_char_p
lib.coffer_strerror.argtypes = [ctypes.c_int]
lib.coffer_strerror.restype = ctypes.c_char_p
lib.coffer_errmsg.argtypes = []
lib.coffer_errmsg.restype = ctypes.c_char_p
# Added in 0.1 after the first release of the ABI: absent from an older libcoffer.so.0.
if hasattr(lib, "coffer_retry_after"):
    lib.coffer_retry_after.argtypes = []
    lib.coffer_retry_after.restype = ctypes.c_int

lib.coffer_open.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
lib.coffer_open.restype = ctypes.c_int
lib.coffer_close.argtypes = [ctypes.c_void_p]
lib.coffer_close.restype = None

lib.coffer_request.argtypes = [
    ctypes.c_void_p,  # coffer_t *h
    ctypes.c_char_p,  # method
    ctypes.c_char_p,  # path
    ctypes.c_char_p,  # token
    ctypes.c_char_p,  # body
    ctypes.c_size_t,  # body_len
    ctypes.POINTER(ctypes.c_int),  # http_status
    c_char_pp,  # out
    ctypes.POINTER(ctypes.c_size_t),  # out_len
]
lib.coffer_request.restype = ctypes.c_int


class RequestOpts(ctypes.Structure):
    """coffer_request_opts: struct_size first, so newer fields can be added at the end."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("wrap_ttl", ctypes.c_char_p),
        ("client_address", ctypes.c_char_p),
        ("ns", ctypes.c_char_p),
    ]


lib.coffer_request_ex.argtypes = [
    ctypes.c_void_p,  # coffer_t *h
    ctypes.c_char_p,  # method
    ctypes.c_char_p,  # path
    ctypes.c_char_p,  # token
    ctypes.c_char_p,  # body
    ctypes.c_size_t,  # body_len
    ctypes.POINTER(RequestOpts),  # opts
    ctypes.POINTER(ctypes.c_int),  # http_status
    c_char_pp,  # out
    ctypes.POINTER(ctypes.c_size_t),  # out_len
]
lib.coffer_request_ex.restype = ctypes.c_int

lib.coffer_kv_get.argtypes = [
    ctypes.c_void_p,  # h
    ctypes.c_char_p,  # mount
    ctypes.c_char_p,  # path
    ctypes.c_char_p,  # token
    ctypes.c_int64,  # version
    c_char_pp,  # data_json
    ctypes.POINTER(ctypes.c_size_t),  # data_len
    ctypes.POINTER(ctypes.c_int64),  # version_out
]
lib.coffer_kv_get.restype = ctypes.c_int

lib.coffer_kv_put.argtypes = [
    ctypes.c_void_p,  # h
    ctypes.c_char_p,  # mount
    ctypes.c_char_p,  # path
    ctypes.c_char_p,  # token
    ctypes.c_char_p,  # data_json
    ctypes.c_size_t,  # data_len
    ctypes.c_int64,  # cas
    ctypes.POINTER(ctypes.c_int64),  # version_out
]
lib.coffer_kv_put.restype = ctypes.c_int

# coffer_metrics came later than the rest: a system library older than this binding may lack it, and
# Coffer.metrics() then says so instead of the import failing.
HAS_METRICS = hasattr(lib, "coffer_metrics")
if HAS_METRICS:
    lib.coffer_metrics.argtypes = [
        ctypes.c_void_p,  # h
        ctypes.c_char_p,  # format: NULL/"json" or "prometheus"
        c_char_pp,  # out
        ctypes.POINTER(ctypes.c_size_t),  # out_len
    ]
    lib.coffer_metrics.restype = ctypes.c_int

# Remote handles (coffer_open with {"remote": ...}; docs/delivery.md): absent from an older library.
HAS_REMOTE = hasattr(lib, "coffer_last_source")
if HAS_REMOTE:
    lib.coffer_last_source.argtypes = [ctypes.c_void_p]
    lib.coffer_last_source.restype = ctypes.c_int
    lib.coffer_degraded.argtypes = [ctypes.c_void_p]
    lib.coffer_degraded.restype = ctypes.c_int
    lib.coffer_client_events.argtypes = [
        ctypes.c_void_p,  # h
        ctypes.c_uint64,  # after_id
        c_char_pp,  # out_json
        ctypes.POINTER(ctypes.c_size_t),  # out_len
    ]
    lib.coffer_client_events.restype = ctypes.c_int

# Embedded replicas (coffer_open with {"storage": {"type": "raft", ...}}; docs/raft.md).
HAS_REPLICA = hasattr(lib, "coffer_replica_sync")
if HAS_REPLICA:
    lib.coffer_replica_sync.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.coffer_replica_sync.restype = ctypes.c_int

lib.coffer_transit_encrypt.argtypes = [
    ctypes.c_void_p,  # h
    ctypes.c_char_p,  # mount
    ctypes.c_char_p,  # key
    ctypes.c_char_p,  # token
    ctypes.c_char_p,  # plaintext (raw bytes, may contain NULs)
    ctypes.c_size_t,  # plaintext_len
    ctypes.c_char_p,  # context
    ctypes.c_size_t,  # context_len
    c_char_pp,  # ciphertext
    ctypes.POINTER(ctypes.c_size_t),  # ciphertext_len
]
lib.coffer_transit_encrypt.restype = ctypes.c_int

lib.coffer_transit_decrypt.argtypes = [
    ctypes.c_void_p,  # h
    ctypes.c_char_p,  # mount
    ctypes.c_char_p,  # key
    ctypes.c_char_p,  # token
    ctypes.c_char_p,  # ciphertext
    ctypes.c_size_t,  # ciphertext_len
    ctypes.c_char_p,  # context
    ctypes.c_size_t,  # context_len
    ctypes.POINTER(ctypes.c_void_p),  # plaintext
    ctypes.POINTER(ctypes.c_size_t),  # plaintext_len
]
lib.coffer_transit_decrypt.restype = ctypes.c_int

lib.coffer_free.argtypes = [ctypes.c_void_p]
lib.coffer_free.restype = None


def take_buffer(pointer: ctypes.c_void_p, length: int) -> bytes:
    """Copies a buffer the library returned and frees it."""
    if not pointer.value:
        return b""
    try:
        return ctypes.string_at(pointer.value, length)
    finally:
        lib.coffer_free(pointer)


# coffer_subscribe / coffer_unsubscribe (events, docs/events.md) came later: absent from an older library.
EVENT_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
HAS_EVENTS = hasattr(lib, "coffer_subscribe")
if HAS_EVENTS:
    lib.coffer_subscribe.argtypes = [
        ctypes.c_void_p,  # h
        ctypes.c_char_p,  # token
        ctypes.c_char_p,  # event_type_glob
        EVENT_FN,  # callback
        ctypes.c_void_p,  # ctx
        ctypes.POINTER(ctypes.c_uint64),  # id_out
    ]
    lib.coffer_subscribe.restype = ctypes.c_int
    lib.coffer_unsubscribe.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
    lib.coffer_unsubscribe.restype = ctypes.c_int
