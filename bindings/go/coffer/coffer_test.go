package coffer_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/coffer/coffer/bindings/go/coffer"
)

type initResult struct {
	Keys      []string `json:"keys"`
	RootToken string   `json:"root_token"`
}

// openInitialised opens a SQLite-backed Coffer in dir, initialises it (3 shares, threshold 2) and
// seals it again.
func openInitialised(t *testing.T, path string) (*coffer.Coffer, initResult) {
	t.Helper()
	c, err := coffer.Open(fmt.Sprintf(`{"storage": {"type": "sqlite", "path": %q}}`, path))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	status, body, err := c.Request("PUT", "sys/init", "", []byte(`{"secret_shares": 3, "secret_threshold": 2}`))
	if err != nil || status != 200 {
		t.Fatalf("init: %d %v", status, err)
	}
	var result initResult
	if err := json.Unmarshal(body, &result); err != nil || len(result.Keys) != 3 || result.RootToken == "" {
		t.Fatalf("init body %q: %v", body, err)
	}
	if _, _, err := c.Request("PUT", "sys/seal", result.RootToken, nil); err != nil {
		t.Fatalf("seal: %v", err)
	}
	return c, result
}

func unseal(t *testing.T, c *coffer.Coffer, keys []string) {
	t.Helper()
	var body []byte
	for _, key := range keys {
		var err error
		if _, body, err = c.Request("PUT", "sys/unseal", "", []byte(fmt.Sprintf(`{"key": %q}`, key))); err != nil {
			t.Fatalf("unseal: %v", err)
		}
	}
	if !strings.Contains(string(body), `"sealed":false`) {
		t.Fatalf("still sealed: %s", body)
	}
}

func TestVersions(t *testing.T) {
	if coffer.Version() != "0.1.0" || coffer.ABIVersion() != 0 {
		t.Fatalf("version %s, ABI %d", coffer.Version(), coffer.ABIVersion())
	}
}

func TestSQLiteLifecycleSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "coffer.db")
	c, init := openInitialised(t, path)
	token := init.RootToken

	_, _, err := c.KVGet("secret", "app/db", token, 0)
	if !errors.Is(err, coffer.ErrSealed) {
		t.Fatalf("sealed read: %v", err)
	}
	var cerr *coffer.Error
	if !errors.As(err, &cerr) || cerr.Code != -2 || cerr.Message != "Vault is sealed" {
		t.Fatalf("error value: %#v", err)
	}
	unseal(t, c, init.Keys[:2])
	if _, _, err := c.Request("POST", "sys/mounts/secret", token, []byte(`{"type":"kv","options":{"version":"2"}}`)); err != nil {
		t.Fatalf("mount: %v", err)
	}
	if v, err := c.KVPut("secret", "app/db", token, []byte(`{"password":"s3cret"}`), coffer.NoCAS); err != nil || v != 1 {
		t.Fatalf("put: %d %v", v, err)
	}
	if v, err := c.KVPut("", "app/db", token, []byte(`{"password":"two"}`), 1); err != nil || v != 2 {
		t.Fatalf("put with cas: %d %v", v, err)
	}
	c.Close()
	c.Close()
	if _, _, err := c.KVGet("secret", "app/db", token, 0); !errors.Is(err, coffer.ErrInvalidArgument) {
		t.Fatalf("use after close: %v", err)
	}

	again, err := coffer.Open(fmt.Sprintf(`{"storage": {"type": "sqlite", "path": %q}}`, path))
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	unseal(t, again, init.Keys[1:])
	data, version, err := again.KVGet("secret", "app/db", token, 0)
	if err != nil || version != 2 || string(data) != `{"password":"two"}` {
		t.Fatalf("reopened read: %s %d %v", data, version, err)
	}
	data, version, err = again.KVGet("secret", "app/db", token, 1)
	if err != nil || version != 1 || string(data) != `{"password":"s3cret"}` {
		t.Fatalf("version 1: %s %d %v", data, version, err)
	}
}

func TestErrorsCarryTheStatusCode(t *testing.T) {
	c, err := coffer.Open(`{"dev": true}`)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	_, _, err = c.KVGet("secret", "nothing/here", "root", 0)
	if !errors.Is(err, coffer.ErrNotFound) || !strings.Contains(err.Error(), "secret/nothing/here") {
		t.Fatalf("missing: %v", err)
	}
	status, body, err := c.Request("GET", "secret/data/a", "not-a-token", nil)
	var cerr *coffer.Error
	if !errors.As(err, &cerr) || cerr.Code != -3 || status != 403 || cerr.HTTPStatus != 403 ||
		string(body) != `{"errors":["permission denied"]}` {
		t.Fatalf("denied: %d %s %v", status, body, err)
	}
	if _, err := c.KVPut("secret", "x", "root", []byte(`{"v":1}`), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.KVPut("secret", "x", "root", []byte(`{"v":2}`), 0); !errors.Is(err, coffer.ErrConflict) {
		t.Fatalf("cas: %v", err)
	}
	if _, err := c.KVPut("secret", "x", "root", []byte(`[1]`), coffer.NoCAS); !errors.Is(err, coffer.ErrInvalidArgument) {
		t.Fatalf("non-object: %v", err)
	}
	if status, _, err := c.Request("BREW", "secret/data/x", "root", nil); !errors.Is(err, coffer.ErrUnsupportedOperation) || status != 405 {
		t.Fatalf("method: %d %v", status, err)
	}
	status, body, err = c.Request("GET", "secret/data/x", "root", nil)
	if err != nil || status != 200 || !strings.Contains(string(body), `"data":{"data":{"v":1}`) {
		t.Fatalf("wire read: %d %s %v", status, body, err)
	}
	if status, body, err := c.Request("DELETE", "secret/data/x", "root", nil); err != nil || status != 204 || body != nil {
		t.Fatalf("delete: %d %s %v", status, body, err)
	}
}

func TestRateLimitedCallsSayWhenToRetry(t *testing.T) {
	c, err := coffer.Open(`{"dev": true}`)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.KVPut("secret", "q", "root", []byte(`{"v":1}`), coffer.NoCAS); err != nil {
		t.Fatal(err)
	}
	quota := []byte(`{"rate": 1, "interval": "1m", "path": "secret/"}`)
	if status, _, err := c.Request("PUT", "sys/quotas/rate-limit/kv", "root", quota); err != nil || status != 204 {
		t.Fatalf("quota: %d %v", status, err)
	}
	if _, _, err := c.KVGet("secret", "q", "root", 0); err != nil {
		t.Fatal(err)
	}
	status, body, err := c.Request("GET", "secret/data/q", "root", nil)
	var cerr *coffer.Error
	if !errors.As(err, &cerr) || !errors.Is(err, coffer.ErrRateLimited) || status != 429 ||
		cerr.RetryAfter < 58 || cerr.RetryAfter > 59 ||
		string(body) != `{"errors":["request path \"secret/data/q\": rate limit quota exceeded"]}` {
		t.Fatalf("refused: %d %s %v", status, body, err)
	}
	if _, _, err := c.KVGet("secret", "nothing", "root", 0); !errors.As(err, &cerr) || cerr.RetryAfter < 58 {
		t.Fatalf("fast path: %v", err)
	}
	if _, _, err := c.Request("GET", "sys/mounts", "not-a-token", nil); !errors.As(err, &cerr) || cerr.RetryAfter != -1 {
		t.Fatalf("not a refusal: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := coffer.Open(`{"storage": {"type": "sqlite", "paht": "x.db"}}`); !errors.Is(err, coffer.ErrInvalidArgument) ||
		!strings.Contains(err.Error(), "'storage.paht'") {
		t.Fatalf("unknown key: %v", err)
	}
	if _, err := coffer.Open(fmt.Sprintf(`{"storage": {"type": "sqlite", "path": %q}}`, filepath.Join(dir, "no", "dir.db"))); !errors.Is(err, coffer.ErrIO) {
		t.Fatalf("missing directory: %v", err)
	}
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a database ", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := coffer.Open(fmt.Sprintf(`{"storage": {"type": "sqlite", "path": %q}}`, garbage)); !errors.Is(err, coffer.ErrCorruptDatabase) {
		t.Fatalf("foreign file: %v", err)
	}
}

func TestGoroutinesShareOneCoffer(t *testing.T) {
	c, err := coffer.Open(`{"dev": true}`)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var wg sync.WaitGroup
	failures := make(chan string, 64*32)
	for g := 0; g < 32; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			path := fmt.Sprintf("g/%d", g)
			for round := int64(1); round <= 25; round++ {
				want := fmt.Sprintf(`{"g":%d,"round":%d}`, g, round)
				if v, err := c.KVPut("secret", path, "root", []byte(want), round-1); err != nil || v != round {
					failures <- fmt.Sprintf("put %s round %d: %v", path, round, err)
				}
				if data, v, err := c.KVGet("secret", path, "root", 0); err != nil || v != round || string(data) != want {
					failures <- fmt.Sprintf("get %s round %d: %s %v", path, round, data, err)
				}
				// The message belongs to this failure even with 32 goroutines failing and succeeding.
				if _, _, err := c.KVGet("secret", "missing/"+path, "root", 0); err == nil || !strings.Contains(err.Error(), "missing/"+path) {
					failures <- fmt.Sprintf("missing %s: %v", path, err)
				}
			}
		}(g)
	}
	wg.Wait()
	close(failures)
	for f := range failures {
		t.Error(f)
	}
}

func TestTransitFastPathRoundTripsRawBytes(t *testing.T) {
	c, err := coffer.Open(`{"dev": true}`)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer c.Close()
	if status, _, err := c.Request("POST", "sys/mounts/transit", "root", []byte(`{"type": "transit"}`)); err != nil || status != 204 {
		t.Fatalf("mount transit: %d %v", status, err)
	}
	secret := []byte("card\x00number\xff 4111")
	ciphertext, err := c.TransitEncrypt("", "payments", "root", secret, nil)
	if err != nil || !strings.HasPrefix(ciphertext, "vault:v1:") {
		t.Fatalf("encrypt: %q %v", ciphertext, err)
	}
	plain, err := c.TransitDecrypt("", "payments", "root", ciphertext, nil)
	if err != nil || string(plain) != string(secret) {
		t.Fatalf("decrypt: %q %v", plain, err)
	}
	if _, err := c.TransitDecrypt("", "payments", "root", ciphertext[:len(ciphertext)-4]+"AAAA", nil); !errors.Is(err, coffer.ErrInvalidArgument) {
		t.Fatalf("tampered ciphertext: want ErrInvalidArgument, got %v", err)
	}
	if _, err := c.TransitEncrypt("", "payments", "not-a-token", secret, nil); !errors.Is(err, coffer.ErrPermissionDenied) {
		t.Fatalf("bad token: want ErrPermissionDenied, got %v", err)
	}
}

func TestWrappedAnswers(t *testing.T) {
	c, err := coffer.Open(`{"dev": true}`)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.KVPut("secret", "app", "root", []byte(`{"k":"v"}`), coffer.NoCAS); err != nil {
		t.Fatal(err)
	}
	_, body, err := c.RequestWithOptions("GET", "secret/data/app", "root", nil, &coffer.RequestOptions{WrapTTL: "30s"})
	var wrapped struct {
		WrapInfo struct {
			Token string `json:"token"`
			TTL   int    `json:"ttl"`
		} `json:"wrap_info"`
	}
	if err != nil || json.Unmarshal(body, &wrapped) != nil || wrapped.WrapInfo.TTL != 30 || wrapped.WrapInfo.Token == "" {
		t.Fatalf("wrap: %s %v", body, err)
	}
	unwrap := []byte(fmt.Sprintf(`{"token":%q}`, wrapped.WrapInfo.Token))
	if _, body, err := c.Request("PUT", "sys/wrapping/unwrap", "root", unwrap); err != nil || !strings.Contains(string(body), `"k":"v"`) {
		t.Fatalf("unwrap: %s %v", body, err)
	}
	if status, _, err := c.Request("PUT", "sys/wrapping/unwrap", "root", unwrap); !errors.Is(err, coffer.ErrInvalidArgument) || status != 400 {
		t.Fatalf("second unwrap: %d %v", status, err)
	}
}
