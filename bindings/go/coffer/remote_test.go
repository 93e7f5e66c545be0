package coffer_test

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer/coffer/bindings/go/coffer"
)

// A port with nothing listening: every store call is refused at once.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestRemoteFallsBackToTheEnvFileThenTheEnvironment(t *testing.T) {
	env := filepath.Join(t.TempDir(), ".env")
	if err := os.WriteFile(env, []byte("# fallback\nGOAPP_PASSWORD=from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GOOTHER_TOKEN", "from-environment")
	c, err := coffer.OpenRemote(map[string]any{
		"address":  "http://" + closedPort(t),
		"auth":     map[string]any{"token": "t"},
		"retry":    map[string]any{"attempts": 2, "initial_backoff": "1ms", "max_backoff": "2ms"},
		"cache":    map[string]any{"events": false},
		"fallback": map[string]any{"env_file": env},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if source, _ := c.LastSource(); source != coffer.SourceNone {
		t.Fatalf("last source before a read: %v", source)
	}
	read, err := c.Read("secret", "goapp")
	if err != nil {
		t.Fatal(err)
	}
	if read.Source != coffer.SourceEnvFile || !read.Degraded || read.Fields["password"] != "from-file" || read.Version != 0 {
		t.Fatalf("env file read: %+v", read)
	}
	read, err = c.Read("secret", "goother")
	if err != nil {
		t.Fatal(err)
	}
	if read.Source != coffer.SourceEnvironment || read.Fields["token"] != "from-environment" {
		t.Fatalf("environment read: %+v", read)
	}
	if _, err := c.Read("secret", "nowhere"); !errors.Is(err, coffer.ErrUnavailable) || !strings.Contains(err.Error(), "NOWHERE_*") {
		t.Fatalf("no fallback: %v", err)
	}
	events, err := c.ClientEvents(0)
	if err != nil || len(events) != 1 || events[0].EventType != "client/degraded" {
		t.Fatalf("events: %+v %v", events, err)
	}
	if _, err := c.KVPut("secret", "goapp", "", []byte(`{}`), coffer.NoCAS); !errors.Is(err, coffer.ErrInvalidArgument) {
		t.Fatalf("a local-only call on a remote handle: %v", err)
	}
}

func TestRemoteConfigurationErrorsNameTheKey(t *testing.T) {
	_, err := coffer.OpenRemote(map[string]any{"address": "http://127.0.0.1:1", "auth": map[string]any{"token": "t"},
		"cache": map[string]any{"tll": 1}})
	if !errors.Is(err, coffer.ErrInvalidArgument) || !strings.Contains(err.Error(), "'remote.cache.tll'") {
		t.Fatalf("unknown key: %v", err)
	}
	local, err := coffer.Open(`{"dev": true}`)
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	if degraded, err := local.Degraded(); err != nil || degraded {
		t.Fatalf("a local handle is never degraded: %v %v", degraded, err)
	}
}
