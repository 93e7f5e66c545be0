"""ctypes declarations of include/coffer.h. Every function used has argtypes and restype set."""

import ctypes
import os

ABI_VERSION = 0


def _load() -> ctypes.CDLL:
    path = os.environ.get("COFFER_LIBRARY") or f"libcoffer.so.{ABI_VERSION}"
    try:
        lib = ctypes.CDLL(path)
    except OSError as error:
        raise ImportError(
            f"coffer: cannot load {path} ({error}); install libcoffer (make install PREFIX=...) and put its lib "
            "directory on LD_LIBRARY_PATH, or set COFFER_LIBRARY to the library's path"
        ) from None
    lib.coffer_abi_version.argtypes = []
    lib.coffer_abi_version.restype = ctypes.c_int
    if lib.coffer_abi_version() != ABI_VERSION:
        raise ImportError(f"coffer: {path} has ABI version {lib.coffer_abi_version()}, this binding needs {ABI_VERSION}")
    return lib


lib = _load()

c_char_pp = ctypes.POINTER(ctypes.c_void_p)  # char ** out-parameters, kept as raw pointers to free them

lib.coffer_version.argtypes = []
lib.coffer_version.restype = ctypes.c_char_p
lib.coffer_strerror.argtypes = [ctypes.c_int]
lib.coffer_strerror.restype = ctypes.c_char_p
lib.coffer_errmsg.argtypes = []
lib.coffer_errmsg.restype = ctypes.c_char_p

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
