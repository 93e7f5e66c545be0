package coffer_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/coffer/coffer/bindings/go/coffer"
)

type cloudEvent struct {
	SpecVersion string `json:"specversion"`
	Data        struct {
		EventType string `json:"event_type"`
		Event     struct {
			Metadata map[string]string `json:"metadata"`
		} `json:"event"`
	} `json:"data"`
}

func TestSubscribeSeesKVWritesInOrderWithoutValues(t *testing.T) {
	c, err := coffer.Open(`{"dev": true}`)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	events := make(chan []byte, 16)
	sub, err := c.Subscribe("kv-v2/data-write", "root", func(event []byte) { events <- append([]byte(nil), event...) })
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	for i := 0; i < 3; i++ {
		if _, err := c.KVPut("secret", "app/db", "root", []byte(`{"password": "go-secret-value"}`), coffer.NoCAS); err != nil {
			t.Fatal(err)
		}
	}
	for want := 1; want <= 3; want++ {
		select {
		case raw := <-events:
			if strings.Contains(string(raw), "go-secret-value") {
				t.Fatalf("an event holds the secret value: %s", raw)
			}
			var e cloudEvent
			if err := json.Unmarshal(raw, &e); err != nil {
				t.Fatalf("event %q: %v", raw, err)
			}
			m := e.Data.Event.Metadata
			if e.SpecVersion != "1.0" || e.Data.EventType != "kv-v2/data-write" || m["path"] != "secret/data/app/db" ||
				m["current_version"] != string(rune('0'+want)) {
				t.Fatalf("event %d: %s", want, raw)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no event %d within 10s", want)
		}
	}
	if err := sub.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := sub.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestSubscribeRefusesABadToken(t *testing.T) {
	c, err := coffer.Open(`{"dev": true}`)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Subscribe("kv*", "not-a-token", func([]byte) {})
	if !errors.Is(err, coffer.ErrPermissionDenied) {
		t.Fatalf("got %v, want permission denied", err)
	}
}
