package coffer_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coffer/coffer/bindings/go/coffer"
)

// An embedded replica from Go (issue 18, docs/raft.md): a libcoffer handle joins a real cofferd node
// (storage "raft", from $COFFERD, which `make test-bindings` passes) as a learner, reads from its
// replica in process, writes through the active node, and ReplicaSync gives read-your-writes. A
// missing $COFFERD fails the test: it is not skipped.

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// call sends one request to cofferd's HTTP API and decodes the JSON answer (nil for none).
func call(t *testing.T, addr, method, path, token string, body any) (int, map[string]any) {
	t.Helper()
	var reader io.Reader
	if body != nil {
		encoded, _ := json.Marshal(body)
		reader = bytes.NewReader(encoded)
	}
	request, _ := http.NewRequest(method, addr+"/v1/"+path, reader)
	if token != "" {
		request.Header.Set("X-Vault-Token", token)
	}
	response, err := http.DefaultClient.Do(request)
	if err != nil {
		return 0, nil
	}
	defer response.Body.Close()
	var decoded map[string]any
	_ = json.NewDecoder(response.Body).Decode(&decoded)
	return response.StatusCode, decoded
}

func waitFor(t *testing.T, what string, timeout time.Duration, done func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !done() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestEmbeddedReplicaReadsItsOwnWritesAfterReplicaSync(t *testing.T) {
	cofferd := os.Getenv("COFFERD")
	if cofferd == "" {
		t.Fatal("COFFERD must name a cofferd binary (make test-bindings passes the one it built)")
	}
	dir := t.TempDir()
	port, clusterPort := freePort(t), freePort(t)
	addr := fmt.Sprintf("http://127.0.0.1:%d", port)
	config := filepath.Join(dir, "node.hcl")
	hcl := fmt.Sprintf("storage \"raft\" {\n  path = %q\n  node_id = \"server-1\"\n}\n"+
		"listener \"tcp\" { address = \"127.0.0.1:%d\" tls_disable = true }\n"+
		"api_addr = %q\ncluster_addr = \"127.0.0.1:%d\"\n", filepath.Join(dir, "data"), port, addr, clusterPort)
	if err := os.WriteFile(config, []byte(hcl), 0o600); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(dir, "cofferd.log"))
	if err != nil {
		t.Fatal(err)
	}
	server := exec.Command(cofferd, "-config="+config)
	server.Stdout, server.Stderr = logFile, logFile
	server.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = server.Process.Signal(syscall.SIGTERM)
		_, _ = server.Process.Wait()
		logFile.Close()
	}()
	waitFor(t, "cofferd to listen", 60*time.Second, func() bool {
		status, _ := call(t, addr, "GET", "sys/seal-status", "", nil)
		return status == 200
	})
	status, init := call(t, addr, "PUT", "sys/init", "", map[string]any{"secret_shares": 1, "secret_threshold": 1})
	if status != 200 {
		t.Fatalf("init: %d %v", status, init)
	}
	key, root := init["keys_base64"].([]any)[0].(string), init["root_token"].(string)
	if status, body := call(t, addr, "PUT", "sys/unseal", "", map[string]any{"key": key}); status != 200 {
		t.Fatalf("unseal: %d %v", status, body)
	}
	waitFor(t, "the node to be active", 20*time.Second, func() bool {
		_, leader := call(t, addr, "GET", "sys/leader", "", nil)
		return leader["is_self"] == true
	})
	if status, body := call(t, addr, "POST", "sys/mounts/secret", root,
		map[string]any{"type": "kv", "options": map[string]any{"version": "2"}}); status != 204 {
		t.Fatalf("mount: %d %v", status, body)
	}
	if status, body := call(t, addr, "POST", "secret/data/app", root, map[string]any{"data": map[string]any{"db": "pw-1"}}); status != 200 {
		t.Fatalf("write: %d %v", status, body)
	}

	replica, err := coffer.Open(fmt.Sprintf(`{"storage": {"type": "raft", "path": %q, "node_id": "go-replica",
		"cluster_addr": "127.0.0.1:%d", "retry_join": [%q]}}`, filepath.Join(dir, "replica"), freePort(t), addr))
	if err != nil {
		t.Fatalf("open the replica: %v", err)
	}
	defer replica.Close()
	// Shamir: the replica is given the unseal key, as any node is; it proves to the active node that it
	// holds the vault's keys, is admitted as a learner and receives the data.
	waitFor(t, "the join challenge", 20*time.Second, func() bool {
		_, body, _ := replica.Request("GET", "sys/seal-status", "", nil)
		return strings.Contains(string(body), `"t":1`)
	})
	if _, body, err := replica.Request("PUT", "sys/unseal", "", []byte(fmt.Sprintf(`{"key": %q}`, key))); err != nil {
		t.Fatalf("unseal the replica: %v %s", err, body)
	}
	waitFor(t, "the replica to unseal", 30*time.Second, func() bool {
		_, body, _ := replica.Request("GET", "sys/seal-status", "", nil)
		return strings.Contains(string(body), `"sealed":false`)
	})

	if data, version, err := replica.KVGet("secret", "app", root, 0); err != nil || string(data) != `{"db":"pw-1"}` || version != 1 {
		t.Fatalf("read from the replica: %s %d %v", data, version, err)
	}
	// A write goes to the active node; after ReplicaSync the replica has applied it.
	if version, err := replica.KVPut("secret", "app", root, []byte(`{"db":"pw-2"}`), coffer.NoCAS); err != nil || version != 2 {
		t.Fatalf("write through the replica: %d %v", version, err)
	}
	if err := replica.ReplicaSync(5 * time.Second); err != nil {
		t.Fatalf("ReplicaSync: %v", err)
	}
	if data, version, err := replica.KVGet("secret", "app", root, 0); err != nil || string(data) != `{"db":"pw-2"}` || version != 2 {
		t.Fatalf("read after ReplicaSync: %s %d %v", data, version, err)
	}
	// The replica's metrics count its own requests.
	metrics, err := replica.Metrics("prometheus")
	if err != nil || !strings.Contains(string(metrics), "vault_core_handle_request") {
		t.Fatalf("metrics: %v\n%s", err, metrics)
	}
	if _, err := replica.Metrics("xml"); !errors.Is(err, coffer.ErrInvalidArgument) {
		t.Fatalf("metrics in an unknown format: %v", err)
	}
	// On a closed handle ReplicaSync says so rather than waiting.
	replica.Close()
	if err := replica.ReplicaSync(time.Second); !errors.Is(err, coffer.ErrInvalidArgument) {
		t.Fatalf("ReplicaSync on a closed handle: %v", err)
	}
}

func TestReplicaSyncReturnsAtOnceOnAVaultThatIsNotAReplica(t *testing.T) {
	c, err := coffer.Open(`{"dev": true}`)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if err := c.ReplicaSync(10 * time.Second); err != nil || time.Since(start) > 2*time.Second {
		t.Fatalf("ReplicaSync on a dev vault: %v after %v", err, time.Since(start))
	}
}
