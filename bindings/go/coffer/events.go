package coffer

/*
#include <stdlib.h>
#include <coffer.h>
extern void cofferGoEvent(char *event_json, size_t event_len, void *ctx);
// A cgo.Handle is an integer, not a Go pointer: it becomes the callback's context on the C side, so
// that no Go code converts an integer to unsafe.Pointer (which go vet rightly flags).
static void *coffer_go_context(uintptr_t handle) { return (void *)handle; }
*/
import "C"

import (
	"runtime"
	"runtime/cgo"
	"sync"
	"unsafe"
)

// Subscription is a running event subscription (coffer_subscribe; docs/events.md). Close it when
// done; Coffer.Close ends it too.
type Subscription struct {
	c      *Coffer
	id     uint64
	handle cgo.Handle
	once   sync.Once
}

// ID is the library's id of the subscription.
func (s *Subscription) ID() uint64 { return s.id }

// Subscribe calls callback with the CloudEvents JSON of every event whose type matches pattern
// ("kv*", "*", "kv-v2/data-write") that token may see (`subscribe` on
// sys/events/subscribe/<type> and `read` on the event's path). The callback runs on a goroutine
// the library's delivery thread calls into, never the writer's, in order and one at a time for
// this subscription; event is valid only during the call (copy what you keep). A callback must
// return promptly: at most 1024 events wait for it, newer ones are dropped.
func (c *Coffer) Subscribe(pattern, token string, callback func(event []byte)) (*Subscription, error) {
	h := c.handle.Load()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpattern, freePattern := cString(pattern, false)
	defer freePattern()
	ctoken, freeToken := cString(token, true)
	defer freeToken()
	handle := cgo.NewHandle(callback)
	var id C.uint64_t
	status := C.coffer_subscribe(h, ctoken, cpattern, C.coffer_event_fn(C.cofferGoEvent),
		C.coffer_go_context(C.uintptr_t(handle)), &id)
	if status != C.COFFER_OK {
		handle.Delete()
		return nil, failure(status, 0, nil)
	}
	return &Subscription{c: c, id: uint64(id), handle: handle}, nil
}

// Close unsubscribes: it returns once a callback in flight has returned (called from inside the
// callback, it returns at once). Calling it twice, or after the Coffer's Close, is harmless.
func (s *Subscription) Close() error {
	var err error
	s.once.Do(func() {
		if h := s.c.handle.Load(); h != nil {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			if status := C.coffer_unsubscribe(h, C.uint64_t(s.id)); status != C.COFFER_OK && status != C.COFFER_ENOTFOUND {
				err = failure(status, 0, nil)
			}
		}
		// No callback starts after coffer_unsubscribe (or coffer_close) returned.
		s.handle.Delete()
	})
	return err
}

//export cofferGoEvent
func cofferGoEvent(event *C.char, length C.size_t, ctx unsafe.Pointer) {
	callback, ok := cgo.Handle(uintptr(ctx)).Value().(func([]byte))
	if !ok {
		return
	}
	callback(C.GoBytes(unsafe.Pointer(event), C.int(length)))
}
