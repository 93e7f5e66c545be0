/// The outcome of ``ACL/allowOperation(_:path:data:)``.
package struct ACLDecision: Sendable, Hashable {
    /// Why the decision came out as it did.
    package enum Reason: String, Sendable, Hashable {
        /// The ACL is root: everything is allowed.
        case root
        /// The matching rule grants the operation and the parameters pass its constraints.
        case granted
        /// No rule matches the path.
        case noMatchingRule
        /// The matching rule is `deny`.
        case explicitDeny
        /// The matching rule does not grant the operation's capability.
        case missingCapability
        /// A `required_parameters` entry is absent from the request.
        case missingRequiredParameter
        /// A parameter or value is listed in `denied_parameters` (or `denied_parameters` has `"*"`).
        case deniedParameter
        /// A parameter or value is not permitted by `allowed_parameters`.
        case parameterNotAllowed
        /// The rule has `min_wrapping_ttl` or `max_wrapping_ttl` and the response is not wrapped within them.
        case wrappingTTLOutOfBounds
    }

    package var allowed: Bool
    /// Whether the request has root privileges on the path: the matching rule has `sudo`, or the ACL is root.
    /// As in Vault this is reported even when the operation itself is not allowed.
    package var rootPrivileges: Bool
    package var reason: Reason

    package init(allowed: Bool, rootPrivileges: Bool, reason: Reason) {
        self.allowed = allowed
        self.rootPrivileges = rootPrivileges
        self.reason = reason
    }
}

/// An access control list compiled once from a token's policies, mirroring Vault's `NewACL` and `AllowOperation`.
///
/// Rules with the same pattern are merged across policies (capabilities united, `deny` overriding everything,
/// parameter constraints combined). A request path is then matched by its exact rule if there is one; otherwise by
/// the highest-priority non-exact rule (the longest `*` prefix rule and every matching `+` rule compete), and only
/// that rule's permissions apply. Checks are synchronous and do not allocate on the common path.
package final class ACL: Sendable {
    /// Whether a policy named `root` was given: every operation on every path is allowed.
    package let isRoot: Bool
    let permissions: [Permissions]
    let trie: PathTrie
    let segmentRules: [SegmentRule]

    /// Compiles `policies`. A policy named `"root"` makes the ACL root (Vault only allows it alone; here any other
    /// policies are simply irrelevant).
    package init(policies: [Policy]) {
        isRoot = policies.contains { $0.name == "root" }
        var builder = Builder()
        for policy in policies {
            for rule in policy.rules { builder.add(rule) }
        }
        permissions = builder.permissions.map { $0.compiled() }
        trie = PathTrie(exact: builder.exact, prefix: builder.prefix)
        segmentRules = builder.segmentOrder.map { pattern in
            SegmentRule(pattern: pattern, permissionIndex: builder.segment[pattern]!)
        }
    }

    /// The capabilities `sys/capabilities` reports for `path`: ``Capabilities/root`` for a root ACL, `.deny` when
    /// the matching rule denies or grants nothing (or nothing matches), else the matching rule's capabilities.
    /// Matching is done as for a `list` request, as Vault does, so a trailing `/` is also tried without it.
    package func capabilities(path: String) -> Capabilities {
        if isRoot { return .root }
        guard let index = matchingPermissions(path: path, operation: .list) else { return .deny }
        let capabilities = permissions[index].capabilities
        return capabilities.contains(.deny) || capabilities.isEmpty ? .deny : capabilities
    }

    /// The names `sys/capabilities` returns for `path`, e.g. `["create", "read"]`, `["deny"]` or `["root"]`.
    package func capabilityNames(path: String) -> [String] { capabilities(path: path).names }

    /// Decides whether `op` on `path` with request parameters `data` (and a response wrapped for `wrapTTL`
    /// seconds, 0 for none) is allowed, as Vault's `ACL.AllowOperation` does (without MFA or pagination checks,
    /// which Coffer does not support).
    package func allowOperation(
        _ op: PolicyOperation,
        path: String,
        data: [String: JSONValue]?,
        wrapTTL: Int64 = 0
    ) -> ACLDecision {
        allowOperation(op, path: path, wrapTTL: wrapTTL, lazyData: { data })
    }

    /// The same decision, building the request parameters only when the matching rule constrains them
    /// (for in-process fast paths whose parameters are raw bytes until then).
    package func allowOperation(
        _ op: PolicyOperation,
        path: String,
        wrapTTL: Int64 = 0,
        lazyData: () -> [String: JSONValue]?
    ) -> ACLDecision {
        if isRoot { return ACLDecision(allowed: true, rootPrivileges: true, reason: .root) }
        guard let index = matchingPermissions(path: path, operation: op) else {
            return ACLDecision(allowed: false, rootPrivileges: false, reason: .noMatchingRule)
        }
        let permissions = permissions[index]
        let capabilities = permissions.capabilities
        let sudo = capabilities.contains(.sudo)
        func deny(_ reason: ACLDecision.Reason) -> ACLDecision {
            ACLDecision(allowed: false, rootPrivileges: sudo, reason: reason)
        }
        if capabilities.contains(.deny) { return deny(.explicitDeny) }
        guard capabilities.contains(op.capability) else { return deny(.missingCapability) }
        if permissions.rule.minWrappingTTL != 0 || permissions.rule.maxWrappingTTL != 0 {
            let (least, most) = (permissions.rule.minWrappingTTL, permissions.rule.maxWrappingTTL)
            // Merging can leave a maximum under a minimum (each the smallest of its policies): nothing fits.
            guard wrapTTL > 0, wrapTTL >= least, most == 0 || wrapTTL <= most, most == 0 || most >= least else {
                return deny(.wrappingTTLOutOfBounds)
            }
        }

        switch op {
        case .read, .create, .update, .patch:
            break
        case .delete, .list:
            return ACLDecision(allowed: true, rootPrivileges: sudo, reason: .granted)
        }
        guard !permissions.requiredLowercased.isEmpty || !permissions.denied.isEmpty || !permissions.allowed.isEmpty
        else {
            return ACLDecision(allowed: true, rootPrivileges: sudo, reason: .granted)
        }
        let data = lazyData()
        for parameter in permissions.requiredLowercased where data?[parameter] == nil {
            return deny(.missingRequiredParameter)
        }
        guard let data, !data.isEmpty else { return ACLDecision(allowed: true, rootPrivileges: sudo, reason: .granted) }

        if !permissions.denied.isEmpty {
            if permissions.deniesAll { return deny(.deniedParameter) }
            for (key, value) in data {
                if let list = permissions.denied[Permissions.lowercased(key)], list.contains(value) {
                    return deny(.deniedParameter)
                }
            }
        }
        if permissions.allowed.isEmpty || permissions.allowsOnlyAll {
            return ACLDecision(allowed: true, rootPrivileges: sudo, reason: .granted)
        }
        for (key, value) in data {
            guard let list = permissions.allowed[Permissions.lowercased(key)] else {
                if permissions.allowsAll { continue }
                return deny(.parameterNotAllowed)
            }
            if !list.contains(value) { return deny(.parameterNotAllowed) }
        }
        return ACLDecision(allowed: true, rootPrivileges: sudo, reason: .granted)
    }

    /// The merged rules of this ACL, one per distinct pattern (prefix rules with their trailing `*`), sorted by
    /// pattern. Useful for debugging and for comparing ACLs.
    package var mergedRules: [PathRule] {
        var rules: [PathRule] = []
        for entry in permissions { rules.append(entry.rule) }
        return rules.sorted { Array($0.path.utf8).lexicographicallyPrecedes(Array($1.path.utf8)) }
    }

    // MARK: - Matching

    /// The index of the permissions that govern `path` for `operation`, following `AllowOperation`'s lookup order.
    func matchingPermissions(path: String, operation: PolicyOperation) -> Int? {
        // Native strings expose their UTF-8 bytes directly; only bridged or lazily-built ones need a copy.
        if let found = path.utf8.withContiguousStorageIfAvailable({ match($0, operation: operation) }) {
            return found
        }
        var copy = path
        return copy.withUTF8 { match($0, operation: operation) }
    }

    private func match(_ full: UnsafeBufferPointer<UInt8>, operation: PolicyOperation) -> Int? {
        // Leading slashes are not part of a policy path.
        var start = 0
        while start < full.count, full[start] == UInt8(ascii: "/") { start += 1 }
        let path = UnsafeBufferPointer(rebasing: full[start...])
        let walk = trie.walk(path)
        if let exact = walk.exactFull { return exact }
        let isList = operation == .list
        let endsWithSlash = path.last == UInt8(ascii: "/")
        if isList, endsWithSlash, let exact = walk.exactTrimmed { return exact }
        // acl.go says LIST checks non-exact rules without the trailing slash first, but OpenBao 2.7.2 observably
        // checks the full path first (`m/a/x/` with `m/*` and `m/+/x` gets `m/*`) and falls back to the trimmed
        // path only when nothing matched (`z/a/` with only `z/+` gets `z/+`). We follow the observed behaviour.
        if let found = nonExact(path, prefix: walk.prefixFull) { return found }
        if isList, endsWithSlash {
            let trimmed = UnsafeBufferPointer(rebasing: path[..<(path.count - 1)])
            return nonExact(trimmed, prefix: walk.prefixTrimmed)
        }
        return nil
    }

    /// Vault's `CheckAllowedFromNonExactPaths`: the longest prefix rule competes with every matching `+` rule.
    private func nonExact(_ path: UnsafeBufferPointer<UInt8>, prefix: PathTrie.PrefixMatch?) -> Int? {
        if segmentRules.isEmpty { return prefix?.permissionIndex }
        var best: Candidate? = prefix.map {
            Candidate(
                firstWildcard: $0.length,
                isPrefix: true,
                wildcards: 0,
                key: permissions[$0.permissionIndex].key,
                permissionIndex: $0.permissionIndex
            )
        }
        var pathSegments = 1
        for byte in path where byte == UInt8(ascii: "/") { pathSegments += 1 }
        for rule in segmentRules where rule.matches(path, segmentCount: pathSegments) {
            let candidate = Candidate(
                firstWildcard: rule.firstPlus,
                isPrefix: rule.isPrefix,
                wildcards: rule.wildcards,
                key: permissions[rule.permissionIndex].key,
                permissionIndex: rule.permissionIndex
            )
            if let current = best, !candidate.outranks(current) { continue }
            best = candidate
        }
        return best?.permissionIndex
    }
}

/// A non-exact rule that matched, ranked as in Vault's `CheckAllowedFromNonExactPaths`.
package struct Candidate {
    var firstWildcard: Int
    var isPrefix: Bool
    var wildcards: Int
    var key: [UInt8]
    var permissionIndex: Int

    /// Later first wildcard, then non-prefix, then fewer `+`, then longer, then bytewise larger.
    func outranks(_ other: Candidate) -> Bool {
        if firstWildcard != other.firstWildcard { return firstWildcard > other.firstWildcard }
        if isPrefix != other.isPrefix { return !isPrefix }
        if wildcards != other.wildcards { return wildcards < other.wildcards }
        if key.count != other.key.count { return key.count > other.key.count }
        return other.key.lexicographicallyPrecedes(key)
    }
}

// MARK: - Compilation

extension ACL {
    /// Merges rules pattern by pattern, as `NewACL` does.
    struct Builder {
        var permissions: [MergedRule] = []
        var exact: [[UInt8]: Int] = [:]
        var prefix: [[UInt8]: Int] = [:]
        var segment: [String: Int] = [:]
        var segmentOrder: [String] = []

        mutating func add(_ rule: PathRule) {
            var path = rule.path
            if path.utf8.first == UInt8(ascii: "/") { path.removeFirst() }
            let bytes = Array(path.utf8)
            let hasSegmentWildcards = path == "+" || path.contains("/+") || path.hasPrefix("+/")
            if hasSegmentWildcards {
                var key = bytes
                if key.last == UInt8(ascii: "*") { key.removeLast() }
                if let index = segment[path] {
                    permissions[index].merge(rule)
                } else {
                    segment[path] = permissions.count
                    segmentOrder.append(path)
                    permissions.append(MergedRule(rule: rule, pattern: path, key: key))
                }
            } else if bytes.last == UInt8(ascii: "*") {
                let key = Array(bytes.dropLast())
                if let index = prefix[key] {
                    permissions[index].merge(rule)
                } else {
                    prefix[key] = permissions.count
                    permissions.append(MergedRule(rule: rule, pattern: path, key: key))
                }
            } else if let index = exact[bytes] {
                permissions[index].merge(rule)
            } else {
                exact[bytes] = permissions.count
                permissions.append(MergedRule(rule: rule, pattern: path, key: bytes))
            }
        }
    }

    /// The permissions of one pattern while policies are being merged.
    struct MergedRule {
        var rule: PathRule
        /// The bytes Vault ranks candidates by: the pattern without a trailing `*`.
        var key: [UInt8]

        init(rule: PathRule, pattern: String, key: [UInt8]) {
            self.rule = rule
            self.rule.path = pattern
            self.key = key
        }

        /// Adds a later rule for the same pattern.
        mutating func merge(_ other: PathRule) {
            if rule.capabilities.contains(.deny) { return }
            if other.capabilities.contains(.deny) {
                rule.capabilities = .deny
                rule.allowedParameters = [:]
                rule.deniedParameters = [:]
                return
            }
            rule.capabilities.formUnion(other.capabilities)
            // As OpenBao merges them: the smallest non-zero bound of each kind.
            rule.minWrappingTTL = MergedRule.smallestSet(rule.minWrappingTTL, other.minWrappingTTL)
            rule.maxWrappingTTL = MergedRule.smallestSet(rule.maxWrappingTTL, other.maxWrappingTTL)
            MergedRule.merge(other.allowedParameters, into: &rule.allowedParameters)
            MergedRule.merge(other.deniedParameters, into: &rule.deniedParameters)
            for parameter in other.requiredParameters where !rule.requiredParameters.contains(parameter) {
                rule.requiredParameters.append(parameter)
            }
        }

        static func smallestSet(_ a: Int64, _ b: Int64) -> Int64 {
            a == 0 ? b : b == 0 ? a : min(a, b)
        }

        /// An empty list on either side means any value and wins; otherwise the lists are concatenated.
        static func merge(_ new: [String: [JSONValue]], into existing: inout [String: [JSONValue]]) {
            for (key, values) in new {
                if let current = existing[key] {
                    existing[key] = values.isEmpty || current.isEmpty ? [] : values + current
                } else {
                    existing[key] = values
                }
            }
        }

        func compiled() -> Permissions {
            Permissions(rule: rule, key: key)
        }
    }
}

/// The merged permissions of one pattern, with parameter constraints precompiled for fast checks.
package struct Permissions: Sendable {
    let rule: PathRule
    let key: [UInt8]
    var capabilities: Capabilities { rule.capabilities }
    let requiredLowercased: [String]
    let allowed: [String: ValueList]
    let denied: [String: ValueList]
    let allowsAll: Bool
    let allowsOnlyAll: Bool
    let deniesAll: Bool

    init(rule: PathRule, key: [UInt8]) {
        self.rule = rule
        self.key = key
        requiredLowercased = rule.requiredParameters.map { $0.lowercased() }
        allowed = rule.allowedParameters.mapValues(ValueList.init)
        denied = rule.deniedParameters.mapValues(ValueList.init)
        allowsAll = allowed["*"] != nil
        allowsOnlyAll = allowsAll && allowed.count == 1
        deniesAll = denied["*"] != nil
    }

    /// `key` lowercased as Go's `strings.ToLower` would, without allocating when it has no upper-case letters.
    static func lowercased(_ key: String) -> String {
        for byte in key.utf8 where byte >= 0x80 || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z")) {
            return key.lowercased()
        }
        return key
    }
}

/// A parameter's value list from `allowed_parameters` / `denied_parameters`, as Vault's `valueInParameterList`
/// evaluates it.
package struct ValueList: Sendable {
    enum Matcher: Sendable {
        case exact(String)
        case prefix(String)
        case suffix(String)
        case contains(String)
        case null
        case bool(Bool)
        /// Compared as Go's `reflect.DeepEqual` would compare HCL-decoded values with JSON request values.
        case array([JSONValue])
        /// Numbers and objects: Vault decodes them from HCL as Go `int`/`float64`/`[]map`, which never equal the
        /// `json.Number` / `map` values of a request.
        case never
    }

    let matchers: [Matcher]

    init(_ values: [JSONValue]) {
        matchers = values.map { value in
            switch value {
            case .string(let glob):
                let bytes = glob.utf8
                guard bytes.count >= 2 else { return .exact(glob) }
                let leading = bytes.first == UInt8(ascii: "*")
                let trailing = bytes.last == UInt8(ascii: "*")
                switch (leading, trailing) {
                case (true, true): return .contains(String(glob.dropFirst().dropLast()))
                case (true, false): return .suffix(String(glob.dropFirst()))
                case (false, true): return .prefix(String(glob.dropLast()))
                case (false, false): return .exact(glob)
                }
            case .null: return .null
            case .bool(let b): return .bool(b)
            case .array(let elements): return .array(elements)
            case .number, .object: return .never
            }
        }
    }

    /// Vault's `valueInParameterList`: an empty list admits every value.
    func contains(_ value: JSONValue) -> Bool {
        if matchers.isEmpty { return true }
        for matcher in matchers where ValueList.matches(matcher, value) { return true }
        return false
    }

    static func matches(_ matcher: Matcher, _ value: JSONValue) -> Bool {
        switch (matcher, value) {
        case (.null, .null): return true
        case (.bool(let a), .bool(let b)): return a == b
        case (.exact(let s), .string(let v)): return v.utf8.elementsEqual(s.utf8)
        case (.prefix(let s), .string(let v)): return v.hasBytePrefix(s)
        case (.suffix(let s), .string(let v)):
            let needle = s.utf8
            let haystack = v.utf8
            return haystack.count >= needle.count && haystack.suffix(needle.count).elementsEqual(needle)
        case (.contains(let s), .string(let v)): return bytesContain(v, s)
        case (.array(let a), .array(let b)): return deepEqual(.array(a), .array(b))
        default: return false
        }
    }

    static func bytesContain(_ haystack: String, _ needle: String) -> Bool {
        let n = needle.utf8
        let h = haystack.utf8
        guard let first = n.first else { return true }
        guard h.count >= n.count else { return false }
        var start = h.startIndex
        let lastStart = h.index(h.endIndex, offsetBy: -n.count)
        while start <= lastStart {
            if h[start] == first, h[start...].starts(with: n) { return true }
            h.formIndex(after: &start)
        }
        return false
    }

    /// `reflect.DeepEqual` between a value decoded from a policy and one decoded from a request.
    static func deepEqual(_ policy: JSONValue, _ request: JSONValue) -> Bool {
        switch (policy, request) {
        case (.null, .null): return true
        case (.bool(let a), .bool(let b)): return a == b
        case (.string(let a), .string(let b)): return a.utf8.elementsEqual(b.utf8)
        case (.array(let a), .array(let b)):
            return a.count == b.count && zip(a, b).allSatisfy { deepEqual($0, $1) }
        default: return false
        }
    }
}

// MARK: - Path structures

/// A byte trie holding the exact rules and the prefix rules (keyed without their `*`), flattened into arrays so a
/// lookup is one walk over the path's bytes with no allocation.
package struct PathTrie: Sendable {
    struct Node: Sendable {
        var firstEdge: Int32
        var edgeCount: Int32
        var exact: Int32
        var prefix: Int32
        /// A chain of single-edge nodes without rules below this node, taken in one comparison: its
        /// bytes are `runBytes[runStart ..< runStart + runLength]`, and it ends at node `runTarget`
        /// (the first with a rule or with other than one edge). `runLength` 0: no chain.
        var runStart: Int32 = 0
        var runLength: Int32 = 0
        var runTarget: Int32 = 0
    }

    struct PrefixMatch {
        var length: Int
        var permissionIndex: Int
    }

    struct Walk {
        var exactFull: Int?
        /// The exact rule for the path without its last byte (used when that byte is `/`).
        var exactTrimmed: Int?
        var prefixFull: PrefixMatch?
        var prefixTrimmed: PrefixMatch?
    }

    let nodes: [Node]
    let edgeBytes: [UInt8]
    let edgeTargets: [Int32]
    let runBytes: [UInt8]

    init(exact: [[UInt8]: Int], prefix: [[UInt8]: Int]) {
        // Build with dictionaries, then lay nodes out breadth-first with each node's edges contiguous and sorted.
        var children: [[UInt8: Int]] = [[:]]
        var exactValue: [Int] = [-1]
        var prefixValue: [Int] = [-1]
        func insert(_ key: [UInt8]) -> Int {
            var node = 0
            for byte in key {
                if let next = children[node][byte] {
                    node = next
                } else {
                    children.append([:])
                    exactValue.append(-1)
                    prefixValue.append(-1)
                    children[node][byte] = children.count - 1
                    node = children.count - 1
                }
            }
            return node
        }
        for (key, index) in exact { exactValue[insert(key)] = index }
        for (key, index) in prefix { prefixValue[insert(key)] = index }

        var order = [0]
        var newIndex = [Int](repeating: -1, count: children.count)
        newIndex[0] = 0
        var cursor = 0
        while cursor < order.count {
            for (_, child) in children[order[cursor]].sorted(by: { $0.key < $1.key }) {
                newIndex[child] = order.count
                order.append(child)
            }
            cursor += 1
        }
        var nodes: [Node] = []
        var edgeBytes: [UInt8] = []
        var edgeTargets: [Int32] = []
        for old in order {
            let edges = children[old].sorted { $0.key < $1.key }
            nodes.append(
                Node(
                    firstEdge: Int32(edgeBytes.count),
                    edgeCount: Int32(edges.count),
                    exact: Int32(exactValue[old]),
                    prefix: Int32(prefixValue[old])
                )
            )
            for (byte, child) in edges {
                edgeBytes.append(byte)
                edgeTargets.append(Int32(newIndex[child]))
            }
        }
        // A path crosses a rule-less chain of single-edge nodes byte by byte for nothing: each node with
        // one edge gets the chain below it, to compare in one go.
        var runBytes: [UInt8] = []
        for i in nodes.indices where nodes[i].edgeCount == 1 {
            let start = runBytes.count
            var edge = Int(nodes[i].firstEdge)
            var target = Int(edgeTargets[edge])
            runBytes.append(edgeBytes[edge])
            while nodes[target].edgeCount == 1, nodes[target].exact < 0, nodes[target].prefix < 0 {
                edge = Int(nodes[target].firstEdge)
                runBytes.append(edgeBytes[edge])
                target = Int(edgeTargets[edge])
            }
            nodes[i].runStart = Int32(start)
            nodes[i].runLength = Int32(runBytes.count - start)
            nodes[i].runTarget = Int32(target)
        }
        self.nodes = nodes
        self.edgeBytes = edgeBytes
        self.edgeTargets = edgeTargets
        self.runBytes = runBytes
    }

    func child(of node: Node, _ byte: UInt8) -> Int? {
        var low = Int(node.firstEdge)
        var high = low + Int(node.edgeCount)
        while low < high {
            let mid = (low + high) >> 1
            let b = edgeBytes[mid]
            if b == byte { return Int(edgeTargets[mid]) }
            if b < byte { low = mid + 1 } else { high = mid }
        }
        return nil
    }

    func walk(_ path: UnsafeBufferPointer<UInt8>) -> Walk {
        var result = Walk()
        var node = nodes[0]
        var depth = 0
        let count = path.count
        while true {
            if node.prefix >= 0 {
                let match = PrefixMatch(length: depth, permissionIndex: Int(node.prefix))
                result.prefixFull = match
                if depth < count { result.prefixTrimmed = match }
            }
            if depth == count - 1, node.exact >= 0 { result.exactTrimmed = Int(node.exact) }
            if depth == count {
                if node.exact >= 0 { result.exactFull = Int(node.exact) }
                return result
            }
            let run = Int(node.runLength)
            if run > 0 {
                // The nodes inside the chain hold no rules: a path that ends or differs inside it matches
                // nothing more.
                guard count - depth >= run else { return result }
                let same = runBytes.withUnsafeBufferPointer { bytes in
                    let start = Int(node.runStart)
                    var i = 0
                    while i < run, bytes[start &+ i] == path[depth &+ i] { i &+= 1 }
                    return i == run
                }
                guard same else { return result }
                node = nodes[Int(node.runTarget)]
                depth += run
                continue
            }
            guard let next = child(of: node, path[depth]) else { return result }
            node = nodes[next]
            depth += 1
        }
    }
}

/// A rule with `+` segments, pre-split so matching walks the request path's bytes without splitting it.
package struct SegmentRule: Sendable {
    /// Segments of the pattern without its trailing `*`; `nil` stands for a `+` segment.
    let segments: [[UInt8]?]
    let isPrefix: Bool
    /// Byte offset of the first `+` in the pattern.
    let firstPlus: Int
    let wildcards: Int
    let permissionIndex: Int

    init(pattern: String, permissionIndex: Int) {
        var bytes = Array(pattern.utf8)
        firstPlus = bytes.firstIndex(of: UInt8(ascii: "+")) ?? 0
        isPrefix = bytes.last == UInt8(ascii: "*")
        if isPrefix { bytes.removeLast() }
        let parts = bytes.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        segments = parts.map { $0.elementsEqual([UInt8(ascii: "+")]) ? nil : Array($0) }
        wildcards = segments.filter { $0 == nil }.count
        self.permissionIndex = permissionIndex
    }

    /// Vault's per-segment comparison: `+` matches any one segment, others must be equal, except that the last
    /// segment of a prefix pattern need only be a prefix (and any further path segments are ignored).
    func matches(_ path: UnsafeBufferPointer<UInt8>, segmentCount: Int) -> Bool {
        if segmentCount < segments.count { return false }
        if !isPrefix && segmentCount != segments.count { return false }
        var position = 0
        let last = segments.count - 1
        for (i, segment) in segments.enumerated() {
            var end = position
            while end < path.count, path[end] != UInt8(ascii: "/") { end += 1 }
            if let segment {
                let part = UnsafeBufferPointer(rebasing: path[position..<end])
                if !part.elementsEqual(segment) {
                    guard isPrefix, i == last, part.starts(with: segment) else { return false }
                }
            }
            position = end + 1
        }
        return true
    }
}
