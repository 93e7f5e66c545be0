// Package coffer is the Go binding of Coffer, an embeddable secrets engine: a thin cgo layer over
// libcoffer's C ABI (include/coffer.h), found with pkg-config (`pkg-config --cflags --libs coffer`), or,
// built with -tags coffer_nopkgconfig, with the flags in CGO_CFLAGS and CGO_LDFLAGS (see README.md).
//
//	c, err := coffer.Open(`{"storage": {"type": "sqlite", "path": "coffer.db"}}`)
//	defer c.Close()
//	status, body, err := c.Request("PUT", "sys/unseal", "", []byte(`{"key": "..."}`))
//	version, err := c.KVPut("secret", "app/db", token, []byte(`{"password": "s3cret"}`), coffer.NoCAS)
//	data, version, err := c.KVGet("secret", "app/db", token, 0)
//
// A *Coffer may be used from any number of goroutines at once. Failures are *Error values carrying
// the C status code; compare them with errors.Is against ErrSealed, ErrPermissionDenied, ...
// C never keeps a Go pointer: arguments are copied or only read during the call.
package coffer

/*
#include <stdlib.h>
#include <coffer.h>
*/
import "C"

import (
	"fmt"
	"math"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"
)

// NoCAS writes without a check-and-set (COFFER_KV_NO_CAS).
const NoCAS int64 = C.COFFER_KV_NO_CAS

// Version is the version of the loaded libcoffer, e.g. "0.1.0".
func Version() string { return C.GoString(C.coffer_version()) }

// ABIVersion is the ABI version of the loaded libcoffer (the N of libcoffer.so.N).
func ABIVersion() int { return int(C.coffer_abi_version()) }

// Error is a failed call: Code is the C status (COFFER_E*, negative), HTTPStatus the status the HTTP
// server would answer (0 when the call failed before reaching the engine), Body the HTTP error
// response ({"errors": [...]}) when there is one. RetryAfter, for ErrRateLimited, is the whole
// seconds to wait before retrying (HTTP's Retry-After; coffer_retry_after()), or -1 when the quota
// names no time (and for every other error).
type Error struct {
	Code       int
	HTTPStatus int
	Message    string
	Body       []byte
	RetryAfter int
}

func (e *Error) Error() string {
	return fmt.Sprintf("coffer: %s (%s)", e.Message, C.GoString(C.coffer_strerror(C.int(e.Code))))
}

// Is reports whether target is an *Error with the same code, so errors.Is(err, coffer.ErrSealed) works.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Sentinels for errors.Is, one for each status code of include/coffer.h.
var (
	ErrInvalidArgument      = &Error{Code: C.COFFER_EINVALID, Message: "invalid argument"}
	ErrSealed               = &Error{Code: C.COFFER_ESEALED, Message: "sealed"}
	ErrPermissionDenied     = &Error{Code: C.COFFER_EPERM, Message: "permission denied"}
	ErrNotFound             = &Error{Code: C.COFFER_ENOTFOUND, Message: "not found"}
	ErrConflict             = &Error{Code: C.COFFER_ECONFLICT, Message: "conflict"}
	ErrUnavailable          = &Error{Code: C.COFFER_EUNAVAILABLE, Message: "unavailable"}
	ErrIO                   = &Error{Code: C.COFFER_EIO, Message: "I/O error"}
	ErrOutOfMemory          = &Error{Code: C.COFFER_ENOMEM, Message: "out of memory"}
	ErrInternal             = &Error{Code: C.COFFER_EINTERNAL, Message: "internal error"}
	ErrUnsupportedOperation = &Error{Code: C.COFFER_EUNSUPPORTED, Message: "unsupported operation"}
	ErrIntegrity            = &Error{Code: C.COFFER_EINTEGRITY, Message: "integrity check failed"}
	ErrNotInitialized       = &Error{Code: C.COFFER_ENOTINIT, Message: "not initialized"}
	ErrAlreadyInitialized   = &Error{Code: C.COFFER_EALREADYINIT, Message: "already initialized"}
	ErrRateLimited          = &Error{Code: C.COFFER_ERATELIMIT, Message: "rate limited"}
	ErrCorruptDatabase      = &Error{Code: C.COFFER_ECORRUPT, Message: "corrupt database"}
	ErrAuditFailed          = &Error{Code: C.COFFER_EAUDIT, Message: "audit failed"}
)

// failure builds the *Error of a status. Callers hold the OS thread locked since the failing call:
// coffer_errmsg is per thread, and an unlocked goroutine may move to another thread between calls.
func failure(status C.int, httpStatus int, body []byte) error {
	retryAfter := -1
	if status == C.COFFER_ERATELIMIT {
		retryAfter = int(C.coffer_retry_after())
	}
	return &Error{Code: int(status), HTTPStatus: httpStatus, Message: C.GoString(C.coffer_errmsg()), Body: body,
		RetryAfter: retryAfter}
}

// cString returns a C copy of s (NULL for "" when optional) and the function that frees it.
func cString(s string, optional bool) (*C.char, func()) {
	if optional && s == "" {
		return nil, func() {}
	}
	p := C.CString(s)
	return p, func() { C.free(unsafe.Pointer(p)) }
}

// bytesArg points C at b's bytes for the duration of a call (allowed by cgo: no Go pointers inside).
func bytesArg(b []byte) (*C.char, C.size_t) {
	if len(b) == 0 {
		return nil, 0
	}
	return (*C.char)(unsafe.Pointer(&b[0])), C.size_t(len(b))
}

// take copies a buffer the library returned and frees it.
func take(p *C.char, n C.size_t) []byte {
	if p == nil {
		return nil
	}
	defer C.coffer_free(unsafe.Pointer(p))
	return C.GoBytes(unsafe.Pointer(p), C.int(n))
}

// Coffer is an open coffer_t handle. Close it when done; a finalizer closes it if you forget.
type Coffer struct {
	handle atomic.Pointer[C.coffer_t]
}

// Open opens the Coffer that the JSON configuration describes, e.g.
// {"storage": {"type": "sqlite", "path": "coffer.db"}} or {"dev": true}. See docs/c-abi.md.
func Open(config string) (*Coffer, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cconfig, free := cString(config, false)
	defer free()
	var h *C.coffer_t
	if status := C.coffer_open(cconfig, &h); status != C.COFFER_OK {
		return nil, failure(status, 0, nil)
	}
	c := &Coffer{}
	c.handle.Store(h)
	runtime.SetFinalizer(c, (*Coffer).Close)
	return c, nil
}

// Close seals and closes. Calling it twice is harmless; later calls return ErrInvalidArgument.
func (c *Coffer) Close() error {
	if h := c.handle.Swap(nil); h != nil {
		C.coffer_close(h)
		runtime.SetFinalizer(c, nil)
	}
	return nil
}

// Request performs any operation of the Vault/OpenBao HTTP API with the same JSON in and out:
// method GET, PUT, POST, PATCH, DELETE or LIST; path without /v1/ ("secret/data/app",
// "sys/unseal"); token "" for none; body the JSON request (nil for none). It returns the HTTP status
// and body (nil for 204). When the operation fails, err is an *Error whose HTTPStatus and Body hold
// the HTTP error response, also returned as status and body.
func (c *Coffer) Request(method, path, token string, body []byte) (int, []byte, error) {
	return c.RequestWithOptions(method, path, token, body, nil)
}

// RequestOptions are per-request settings (coffer_request_opts).
type RequestOptions struct {
	// WrapTTL wraps the answer, as HTTP's X-Vault-Wrap-TTL ("60s"); "" for no wrapping.
	WrapTTL string
	// ClientAddress is the address the call acts for: CIDR-bound tokens are checked against it.
	ClientAddress string
}

// RequestWithOptions is Request with RequestOptions (nil: none).
func (c *Coffer) RequestWithOptions(method, path, token string, body []byte, options *RequestOptions) (int, []byte, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmethod, free1 := cString(method, false)
	defer free1()
	cpath, free2 := cString(path, false)
	defer free2()
	ctoken, free3 := cString(token, true)
	defer free3()
	cbody, n := bytesArg(body)
	var httpStatus C.int
	var out *C.char
	var outLen C.size_t
	var status C.int
	if options == nil {
		status = C.coffer_request(c.handle.Load(), cmethod, cpath, ctoken, cbody, n, &httpStatus, &out, &outLen)
	} else {
		cwrap, free4 := cString(options.WrapTTL, true)
		defer free4()
		caddress, free5 := cString(options.ClientAddress, true)
		defer free5()
		opts := C.coffer_request_opts{struct_size: C.size_t(unsafe.Sizeof(C.coffer_request_opts{})), wrap_ttl: cwrap, client_address: caddress}
		status = C.coffer_request_ex(c.handle.Load(), cmethod, cpath, ctoken, cbody, n, &opts, &httpStatus, &out, &outLen)
	}
	runtime.KeepAlive(body)
	result := take(out, outLen)
	if status != C.COFFER_OK {
		return int(httpStatus), result, failure(status, int(httpStatus), result)
	}
	return int(httpStatus), result, nil
}

// KVGet reads a KV v2 secret's data (a JSON object) and its version; version 0 reads the current
// one. A missing, deleted or destroyed secret is ErrNotFound.
func (c *Coffer) KVGet(mount, path, token string, version int64) ([]byte, int64, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmount, free1 := cString(mount, true)
	defer free1()
	cpath, free2 := cString(path, false)
	defer free2()
	ctoken, free3 := cString(token, false)
	defer free3()
	var data *C.char
	var dataLen C.size_t
	var versionOut C.int64_t
	status := C.coffer_kv_get(c.handle.Load(), cmount, cpath, ctoken, C.int64_t(version), &data, &dataLen, &versionOut)
	result := take(data, dataLen)
	if status != C.COFFER_OK {
		return nil, 0, failure(status, 0, nil)
	}
	return result, int64(versionOut), nil
}

// KVPut writes a new version of a KV v2 secret from its data (a JSON object) and returns the new
// version. With cas >= 0 the write happens only if the current version is cas (0: only if it does
// not exist), else ErrConflict; NoCAS writes unconditionally.
func (c *Coffer) KVPut(mount, path, token string, data []byte, cas int64) (int64, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmount, free1 := cString(mount, true)
	defer free1()
	cpath, free2 := cString(path, false)
	defer free2()
	ctoken, free3 := cString(token, false)
	defer free3()
	cdata, n := bytesArg(data)
	var versionOut C.int64_t
	status := C.coffer_kv_put(c.handle.Load(), cmount, cpath, ctoken, cdata, n, C.int64_t(cas), &versionOut)
	runtime.KeepAlive(data)
	if status != C.COFFER_OK {
		return 0, failure(status, 0, nil)
	}
	return int64(versionOut), nil
}

// TransitEncrypt encrypts raw bytes with the transit key `key` (mount "" means "transit") and returns
// the ciphertext as Vault writes it ("vault:v1:..."). context is the derivation context for a derived
// key, nil otherwise.
func (c *Coffer) TransitEncrypt(mount, key, token string, plaintext, context []byte) (string, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmount, free1 := cString(mount, true)
	defer free1()
	ckey, free2 := cString(key, false)
	defer free2()
	ctoken, free3 := cString(token, false)
	defer free3()
	cplain, n := bytesArg(plaintext)
	cctx, m := bytesArg(context)
	var out *C.char
	var outLen C.size_t
	status := C.coffer_transit_encrypt(c.handle.Load(), cmount, ckey, ctoken, unsafe.Pointer(cplain), n, unsafe.Pointer(cctx), m, &out, &outLen)
	runtime.KeepAlive(plaintext)
	runtime.KeepAlive(context)
	result := take(out, outLen)
	if status != C.COFFER_OK {
		return "", failure(status, 0, nil)
	}
	return string(result), nil
}

// TransitDecrypt decrypts a "vault:vN:..." ciphertext made with the transit key `key` and returns the
// plaintext bytes. A tampered ciphertext or one from another key is ErrInvalidArgument.
func (c *Coffer) TransitDecrypt(mount, key, token, ciphertext string, context []byte) ([]byte, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmount, free1 := cString(mount, true)
	defer free1()
	ckey, free2 := cString(key, false)
	defer free2()
	ctoken, free3 := cString(token, false)
	defer free3()
	ctext, free4 := cString(ciphertext, false)
	defer free4()
	cctx, m := bytesArg(context)
	var out unsafe.Pointer
	var outLen C.size_t
	status := C.coffer_transit_decrypt(c.handle.Load(), cmount, ckey, ctoken, ctext, C.size_t(len(ciphertext)), unsafe.Pointer(cctx), m, &out, &outLen)
	runtime.KeepAlive(context)
	result := take((*C.char)(out), outLen)
	if status != C.COFFER_OK {
		return nil, failure(status, 0, nil)
	}
	return result, nil
}

// ReplicaSync, on an embedded replica (a handle opened with raft storage that joined a cluster), waits
// until the replica has applied every write this process sent through it to the cluster's active
// node, so that a read after it sees them (read your writes). It returns at once on a vault that is
// not a replica, and ErrUnavailable when timeout passes first (coffer_replica_sync).
func (c *Coffer) ReplicaSync(timeout time.Duration) error {
	milliseconds := timeout.Milliseconds()
	if milliseconds < 0 {
		milliseconds = 0
	} else if milliseconds > math.MaxUint32 {
		milliseconds = math.MaxUint32
	}
	if status := C.coffer_replica_sync(c.handle.Load(), C.uint32_t(milliseconds)); status != C.COFFER_OK {
		return failure(status, 0, nil)
	}
	return nil
}

// Metrics returns the vault's counters, gauges and latency summaries (coffer_metrics, docs/metrics.md):
// format "json" is OpenBao's sys/metrics JSON, "prometheus" the Prometheus text exposition. It needs no
// token and holds names, numbers and mount paths, never a secret or a token. Another format is
// ErrInvalidArgument.
func (c *Coffer) Metrics(format string) ([]byte, error) {
	cformat, free := cString(format, false)
	defer free()
	var out *C.char
	var outLen C.size_t
	status := C.coffer_metrics(c.handle.Load(), cformat, &out, &outLen)
	result := take(out, outLen)
	if status != C.COFFER_OK {
		return nil, failure(status, 0, nil)
	}
	return result, nil
}
