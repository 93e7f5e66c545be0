package coffer

/*
#include <stdlib.h>
#include <coffer.h>
*/
import "C"

import (
	"encoding/json"
	"runtime"
)

// Source is which source answered a read on a remote handle (COFFER_SOURCE_*; docs/delivery.md).
type Source int

// The sources of the fallback chain, in its order.
const (
	SourceNone        Source = C.COFFER_SOURCE_NONE
	SourceStore       Source = C.COFFER_SOURCE_STORE
	SourceCache       Source = C.COFFER_SOURCE_CACHE
	SourceEnvFile     Source = C.COFFER_SOURCE_ENV_FILE
	SourceEnvironment Source = C.COFFER_SOURCE_ENVIRONMENT
)

func (s Source) String() string {
	switch s {
	case SourceStore:
		return "store"
	case SourceCache:
		return "cache"
	case SourceEnvFile:
		return "env_file"
	case SourceEnvironment:
		return "environment"
	default:
		return "none"
	}
}

// OpenRemote opens a handle on a remote cofferd: remote is the object of {"remote": {...}}
// (address, auth, cache, retry, fallback; docs/delivery.md), marshalled to JSON. Open with the
// whole document does the same.
func OpenRemote(remote map[string]any) (*Coffer, error) {
	text, err := json.Marshal(map[string]any{"remote": remote})
	if err != nil {
		return nil, &Error{Code: C.COFFER_EINVALID, Message: "the remote configuration cannot be marshalled: " + err.Error(), RetryAfter: -1}
	}
	return Open(string(text))
}

// SecretRead is a KV v2 secret read through a remote handle: its fields, its version (0 from the env
// file or the environment), the source that answered and whether the store could not be reached.
type SecretRead struct {
	Fields   map[string]any
	Version  int64
	Source   Source
	Degraded bool
}

// Read reads mount/path through the remote handle's cache and fallback chain, with its own token.
// The source and the degraded flag are the handle's right after the read (another goroutine's read
// in between may change them).
func (c *Coffer) Read(mount, path string) (*SecretRead, error) {
	data, version, err := c.KVGet(mount, path, "", 0)
	if err != nil {
		return nil, err
	}
	var fields map[string]any
	if err := json.Unmarshal(data, &fields); err != nil {
		return nil, &Error{Code: C.COFFER_EINTERNAL, Message: "the secret is not a JSON object: " + err.Error(), RetryAfter: -1}
	}
	source, err := c.LastSource()
	if err != nil {
		return nil, err
	}
	degraded, err := c.Degraded()
	if err != nil {
		return nil, err
	}
	return &SecretRead{Fields: fields, Version: version, Source: source, Degraded: degraded}, nil
}

// LastSource is the source of the last successful read on the handle (SourceStore for a local one).
func (c *Coffer) LastSource() (Source, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	status := C.coffer_last_source(c.handle.Load())
	if status < 0 {
		return SourceNone, failure(status, 0, nil)
	}
	return Source(status), nil
}

// Degraded reports whether the remote handle's store cannot be reached now (false for a local one).
func (c *Coffer) Degraded() (bool, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	status := C.coffer_degraded(c.handle.Load())
	if status < 0 {
		return false, failure(status, 0, nil)
	}
	return status == 1, nil
}

// ClientEvent is one of the handle's own events: "client/degraded" or "client/recovered".
type ClientEvent struct {
	ID        uint64         `json:"id"`
	EventType string         `json:"event_type"`
	Timestamp string         `json:"timestamp"`
	Data      map[string]any `json:"data"`
}

// ClientEvents returns the handle's own events with an id above after, oldest first.
func (c *Coffer) ClientEvents(after uint64) ([]ClientEvent, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var out *C.char
	var outLen C.size_t
	status := C.coffer_client_events(c.handle.Load(), C.uint64_t(after), &out, &outLen)
	raw := take(out, outLen)
	if status != C.COFFER_OK {
		return nil, failure(status, 0, nil)
	}
	var events []ClientEvent
	if err := json.Unmarshal(raw, &events); err != nil {
		return nil, &Error{Code: C.COFFER_EINTERNAL, Message: "the events are not JSON: " + err.Error(), RetryAfter: -1}
	}
	return events, nil
}
