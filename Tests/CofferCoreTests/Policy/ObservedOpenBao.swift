// Decisions observed on a real OpenBao, used as ground truth by PolicyTests (against Coffer's ACL) and by
// OpenBaoDifferentialTests (against a live `bao`, to catch drift in either direction).
//
// observed on OpenBao v2.7.2 (9e0a0d3c3504a0a00b45e61355afac5e35c78379), `bao server -dev`, with
// `bao token capabilities` for capability cases and `bao write` (JSON body) on a kv v1 mount at `kv1/`
// for parameter cases.

import CofferCore

/// The policies the observed cases refer to, by name, in HCL as written to OpenBao with `bao policy write`.
/// Tokens are created with `-no-default-policy`, so only these policies apply.
public let observedPolicies: [(name: String, hcl: String)] = [
    (
        "exactglob",
        """
        path "secret/foo" { capabilities = ["read"] }
        path "secret/*" { capabilities = ["list"] }
        """
    ),
    (
        "nested",
        """
        path "secret/*" { capabilities = ["read"] }
        path "secret/data/*" { capabilities = ["create", "update"] }
        """
    ),
    (
        "plus",
        """
        path "secret/+/foo" { capabilities = ["update"] }
        path "secret/data/*" { capabilities = ["read"] }
        path "secret/*" { capabilities = ["list"] }
        """
    ),
    (
        "deny1",
        """
        path "shared/*" { capabilities = ["read", "list"] }
        """
    ),
    (
        "deny2",
        """
        path "shared/*" { capabilities = ["deny"] }
        path "shared/open" { capabilities = ["read"] }
        """
    ),
    (
        "union1",
        """
        path "kv/app" { capabilities = ["read"] }
        """
    ),
    (
        "union2",
        """
        path "kv/app" { capabilities = ["update", "sudo"] }
        """
    ),
    (
        "pluscount",
        """
        path "a/+/+/d" { capabilities = ["read"] }
        path "a/+/c/d" { capabilities = ["update"] }
        path "a/b/+/d" { capabilities = ["delete"] }
        """
    ),
    (
        "plusprefix",
        """
        path "p/+/x*" { capabilities = ["read"] }
        path "p/+/*" { capabilities = ["list"] }
        path "p/+" { capabilities = ["update"] }
        """
    ),
    (
        "listslash",
        """
        path "dir/sub" { capabilities = ["list"] }
        path "dir/sub/*" { capabilities = ["read"] }
        """
    ),
    (
        "misc",
        """
        # legacy policy mapping
        path "leg/r" { policy = "read" }
        path "leg/w" { policy = "write" }
        path "leg/s" { policy = "sudo" }
        path "leg/d" { policy = "deny" }
        path "leg/mix" {
          policy = "read"
          capabilities = ["patch"]
        }
        path "/lead/x" { capabilities = ["read"] }   // leading slash is stripped
        path "dup/x" { capabilities = ["read"] }
        path "dup/x" { capabilities = ["list"] }     /* same path twice merges */
        path "+/cfg" { capabilities = ["read"] }
        path "q/+/ab*" { capabilities = ["read"] }
        path "q/+/a*" { capabilities = ["list"] }
        """
    ),
    (
        "listorder",
        """
        path "m/+/x" { capabilities = ["update"] }
        path "m/*" { capabilities = ["read"] }
        path "y/*" { capabilities = ["read"] }
        path "y/a/*" { capabilities = ["list"] }
        path "z/+" { capabilities = ["update"] }
        """
    ),
    (
        "everything",
        """
        path "*" { capabilities = ["read"] }
        """
    ),
    (
        "params",
        """
        path "kv1/allow" {
          capabilities = ["create", "update"]
          allowed_parameters = {
            "color" = ["red", "bl*"]
            size = []
          }
        }
        path "kv1/deny" {
          capabilities = ["create", "update"]
          denied_parameters = {
            "secret" = []
            "mode" = ["*admin"]
          }
        }
        path "kv1/req" {
          capabilities = ["create", "update"]
          required_parameters = ["owner"]
        }
        path "kv1/star" {
          capabilities = ["create", "update"]
          allowed_parameters = {
            "*" = []
            "color" = ["red"]
          }
        }
        path "kv1/denyall" {
          capabilities = ["create", "update"]
          denied_parameters = { "*" = [] }
        }
        path "kv1/case" {
          capabilities = ["create", "update"]
          allowed_parameters = { "Color" = ["red"] }
        }
        path "kv1/types" {
          capabilities = ["create", "update"]
          allowed_parameters = { "n" = [5, true, "*", "ab*", ["x"]] }
        }
        """
    ),
    (
        "paramsA",
        """
        path "kv1/m" {
          capabilities = ["create", "update"]
          allowed_parameters = { "a" = ["1"] }
        }
        """
    ),
    (
        "paramsB",
        """
        path "kv1/m" {
          capabilities = ["create", "update"]
          allowed_parameters = { "a" = ["2"] }
        }
        """
    ),
    (
        "paramsC",
        """
        path "kv1/m" { capabilities = ["create", "update"] }
        """
    ),
]

/// What `sys/capabilities` returned for a token holding `policies` on `path`.
public struct ObservedCapabilities: Sendable, CustomStringConvertible {
    public let policies: [String]
    public let path: String
    public let capabilities: [String]

    public var description: String { "\(policies) \(path) -> \(capabilities)" }
}

/// Whether a write of `body` (JSON) to `path` by a token holding `policies` was allowed (2xx) or denied (403).
public struct ObservedWrite: Sendable, CustomStringConvertible {
    public let policies: [String]
    public let path: String
    public let body: String
    public let allowed: Bool

    public var description: String { "\(policies) write \(path) \(body) -> \(allowed ? "allowed" : "denied")" }
}

private func cap(_ policies: [String], _ path: String, _ capabilities: [String]) -> ObservedCapabilities {
    ObservedCapabilities(policies: policies, path: path, capabilities: capabilities)
}

private func write(_ policies: [String], _ path: String, _ body: String, _ allowed: Bool) -> ObservedWrite {
    ObservedWrite(policies: policies, path: path, body: body, allowed: allowed)
}

// observed on OpenBao v2.7.2
public let observedCapabilities: [ObservedCapabilities] = [
    // Exact beats glob; the glob covers everything else under the prefix but not the bare prefix.
    cap(["exactglob"], "secret/foo", ["read"]),
    cap(["exactglob"], "secret/foobar", ["list"]),
    cap(["exactglob"], "secret/", ["list"]),
    cap(["exactglob"], "secret", ["deny"]),
    // The longest prefix wins, with no union across patterns.
    cap(["nested"], "secret/data/x", ["create", "update"]),
    cap(["nested"], "secret/other", ["read"]),
    cap(["nested"], "secret/data", ["read"]),
    // `+` rules compete with the longest prefix by first-wildcard position, then non-prefix beats prefix.
    cap(["plus"], "secret/data/foo", ["read"]),
    cap(["plus"], "secret/meta/foo", ["update"]),
    cap(["plus"], "secret/meta/bar", ["list"]),
    // deny on either side of a merge wins; an exact rule still beats the denied glob.
    cap(["deny1", "deny2"], "shared/x", ["deny"]),
    cap(["deny1", "deny2"], "shared/open", ["read"]),
    cap(["deny1"], "shared/x", ["list", "read"]),
    // Two policies on the same path: union.
    cap(["union1", "union2"], "kv/app", ["read", "sudo", "update"]),
    // `+` tie-breaks: later first wildcard, then fewer wildcards.
    cap(["pluscount"], "a/b/c/d", ["delete"]),
    cap(["pluscount"], "a/x/c/d", ["update"]),
    cap(["pluscount"], "a/x/y/d", ["read"]),
    cap(["pluscount"], "a/x/y/z", ["deny"]),
    // Prefix `+` rules: longer wins; segment counts must fit; a trailing slash is first tried without it.
    cap(["plusprefix"], "p/a/xyz", ["read"]),
    cap(["plusprefix"], "p/a/b", ["list"]),
    cap(["plusprefix"], "p/a", ["update"]),
    cap(["plusprefix"], "p/a/", ["list"]),
    cap(["plusprefix"], "p/a/b/c", ["list"]),
    // List fallback to the path without its trailing slash (exact), before prefix rules.
    cap(["listslash"], "dir/sub/", ["list"]),
    cap(["listslash"], "dir/sub/x", ["read"]),
    cap(["listslash"], "dir/sub", ["list"]),
    // OpenBao 2.7.2 tries the full path's non-exact rules before the path without its trailing slash, whatever
    // acl.go's comment says: `m/a/x/` gets `m/*`, not `m/+/x`; `z/a/` falls back to `z/+` only as nothing else matches.
    cap(["listorder"], "m/a/x/", ["read"]),
    cap(["listorder"], "m/a/x", ["update"]),
    cap(["listorder"], "y/a/", ["list"]),
    cap(["listorder"], "y/a", ["read"]),
    cap(["listorder"], "z/a/", ["update"]),
    // Legacy `policy = ...` mapping.
    cap(["misc"], "leg/r", ["list", "read"]),
    cap(["misc"], "leg/w", ["create", "delete", "list", "read", "update"]),
    cap(["misc"], "leg/s", ["create", "delete", "list", "read", "sudo", "update"]),
    cap(["misc"], "leg/d", ["deny"]),
    cap(["misc"], "leg/mix", ["list", "patch", "read"]),
    cap(["misc"], "lead/x", ["read"]),
    cap(["misc"], "/lead/x", ["read"]),
    cap(["misc"], "dup/x", ["list", "read"]),
    cap(["misc"], "any/cfg", ["read"]),
    cap(["misc"], "any/thing/cfg", ["deny"]),
    cap(["misc"], "q/z/abc", ["read"]),
    cap(["misc"], "q/z/axe", ["list"]),
    cap(["everything"], "anything/at/all", ["read"]),
    cap(["everything"], "/", ["read"]),
]

// observed on OpenBao v2.7.2
public let observedWrites: [ObservedWrite] = [
    write(["params"], "kv1/allow", #"{"color":"red"}"#, true),
    write(["params"], "kv1/allow", #"{"color":"blue"}"#, true),
    write(["params"], "kv1/allow", #"{"color":"green"}"#, false),
    write(["params"], "kv1/allow", #"{"color":"red","size":"9"}"#, true),
    write(["params"], "kv1/allow", #"{"other":"x"}"#, false),
    write(["params"], "kv1/allow", #"{"COLOR":"red"}"#, true),
    write(["params"], "kv1/deny", #"{"a":"b"}"#, true),
    write(["params"], "kv1/deny", #"{"secret":"x"}"#, false),
    write(["params"], "kv1/deny", #"{"mode":"superadmin"}"#, false),
    write(["params"], "kv1/deny", #"{"mode":"user"}"#, true),
    write(["params"], "kv1/req", #"{"a":"b"}"#, false),
    write(["params"], "kv1/req", #"{"owner":"me"}"#, true),
    write(["params"], "kv1/req", #"{"OWNER":"me"}"#, false),
    write(["params"], "kv1/star", #"{"x":"1"}"#, true),
    write(["params"], "kv1/star", #"{"color":"blue"}"#, false),
    write(["params"], "kv1/star", #"{"color":"red"}"#, true),
    write(["params"], "kv1/denyall", #"{"a":"b"}"#, false),
    write(["params"], "kv1/case", #"{"color":"red"}"#, true),
    // Numbers in a policy never match (HCL int vs JSON number); a lone "*" matches only "*"; lists compare deeply.
    write(["params"], "kv1/types", #"{"n":5}"#, false),
    write(["params"], "kv1/types", #"{"n":"5"}"#, false),
    write(["params"], "kv1/types", #"{"n":true}"#, true),
    write(["params"], "kv1/types", #"{"n":false}"#, false),
    write(["params"], "kv1/types", #"{"n":"*"}"#, true),
    write(["params"], "kv1/types", #"{"n":"x"}"#, false),
    write(["params"], "kv1/types", #"{"n":"abc"}"#, true),
    write(["params"], "kv1/types", #"{"n":["x"]}"#, true),
    write(["params"], "kv1/types", #"{"n":null}"#, false),
    // Merged allowed_parameters: values are appended; a rule without constraints does not lift them.
    write(["paramsA", "paramsB"], "kv1/m", #"{"a":"1"}"#, true),
    write(["paramsA", "paramsB"], "kv1/m", #"{"a":"2"}"#, true),
    write(["paramsA", "paramsB"], "kv1/m", #"{"a":"3"}"#, false),
    write(["paramsA", "paramsC"], "kv1/m", #"{"a":"2"}"#, false),
    write(["paramsC", "paramsA"], "kv1/m", #"{"a":"1"}"#, true),
    write(["paramsC", "paramsA"], "kv1/m", #"{"b":"x"}"#, false),
]
