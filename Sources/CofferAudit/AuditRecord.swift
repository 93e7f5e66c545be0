/// What one request contributes to its audit records: the request, who made it, and, once it has
/// been handled, its response or error. A value, so that a queued record can be built on the device's
/// writer thread while the request's own thread goes on.
package import CofferCore

package struct AuditRecord: Sendable {
    package let request: Request
    package let caller: AuditCaller?
    package let time: Timestamp
    /// An error known before the request was routed (a refused token); the request record shows it too.
    package var requestError: CofferError?
    package var error: CofferError?
    package var mountType = ""
    package var response: Response?

    package init(request: Request, caller: AuditCaller?, time: Timestamp) {
        self.request = request
        self.caller = caller
        self.time = time
    }

    /// Whether handling the request can change stored state. Records of requests that cannot (read,
    /// list) may be queued by a device whose `sync` is "writes" (docs/audit.md).
    var changesState: Bool { request.operation != .read && request.operation != .list }
}

/// What an audit record says of the token behind a request.
package struct AuditCaller: Sendable {
    package var accessor: String
    package var displayName: String
    package var meta: [String: String]
    package var policies: [String]
    /// The identity entity of the caller ("" for tokens made by hand).
    package var entityID = ""
    package var tokenType = "service"
    /// Set for a break-glass token: the record gets a top-level `break_glass` marker.
    package var breakGlass: AuditBreakGlass?

    package init(accessor: String, displayName: String, meta: [String: String], policies: [String]) {
        self.accessor = accessor
        self.displayName = displayName
        self.meta = meta
        self.policies = policies
    }
}

/// The `break_glass` marker of an audit record: `{"id":…,"name":…}`, with `"event"` ("expired" or
/// "revoked") on the record written when the token ends. Names and ids only, not hashed.
package struct AuditBreakGlass: Sendable {
    package var id: String
    package var name: String
    package var event = ""

    package init(id: String, name: String) {
        self.id = id
        self.name = name
    }
}

/// Which of a record's two lines to write.
package struct AuditPhases: OptionSet, Sendable {
    package let rawValue: UInt8
    package init(rawValue: UInt8) { self.rawValue = rawValue }
    static let request = AuditPhases(rawValue: 1)
    static let response = AuditPhases(rawValue: 2)
    static let both: AuditPhases = [.request, .response]
}

/// The chain position a line is written at: the next line's `seq` is `seq + 1`, its `prev_mac` is `prev`.
package struct AuditChainState {
    var seq = 0
    var prev: [UInt8] = []
}

extension AuditDevice {
    /// Appends the lines of `record` for `phases` to `out`, in the shape of Vault's audit log:
    /// `{auth, error, prev_mac, request, response?, seq, time, type, mac}` (keys sorted but `mac`,
    /// which closes the line; AuditChain says what it covers). Advances `chain` past them.
    func appendLines(_ record: AuditRecord, _ phases: AuditPhases, chain: inout AuditChainState, to out: inout [UInt8])
    {
        let (token, accessor, auth, chainPrefix) = authParts(record)
        let request = requestBlock(record, token: token, accessor: accessor)
        var time: [UInt8] = []
        time.reserveCapacity(32)
        record.time.appendRFC3339(to: &time)
        for phase in [AuditPhases.request, .response] where phases.contains(phase) {
            let start = out.count
            out.appendLiteral(#"{"auth":"#)
            out.append(contentsOf: auth)
            if let mark = record.caller?.breakGlass {
                out.appendLiteral(#","break_glass":{"#)
                if !mark.event.isEmpty {
                    out.appendLiteral(#""event":"#)
                    JSONValue.writeString(mark.event, to: &out)
                    out.append(UInt8(ascii: ","))
                }
                out.appendLiteral(#""id":"#)
                JSONValue.writeString(mark.id, to: &out)
                out.appendLiteral(#","name":"#)
                JSONValue.writeString(mark.name, to: &out)
                out.append(UInt8(ascii: "}"))
            }
            out.appendLiteral(#","error":"#)
            JSONValue.writeString((phase == .request ? record.requestError : record.error)?.message ?? "", to: &out)
            out.appendLiteral(#","prev_mac":""#)
            out.append(contentsOf: chain.prev)
            out.appendLiteral(#"","request":"#)
            out.append(contentsOf: request)
            if phase == .response { appendResponse(record, to: &out) }
            out.appendLiteral(#","seq":"#)
            chain.seq += 1
            appendDecimal(chain.seq, to: &out)
            out.appendLiteral(#","time":""#)
            out.append(contentsOf: time)
            out.appendLiteral(phase == .request ? #"","type":"request"}"# : #"","type":"response"}"#)
            chain.prev = AuditChain.seal(lineFrom: start, of: &out, key: chainMAC, prefix: chainPrefix)
        }
    }

    /// Appends a `torn` record (see `continuation(of:key:)`): `{"error":"","prev_mac":…,"seq":…,"time":…,
    /// "torn":{"bytes":<length of the torn line>,"sha256":"<hex>"},"type":"torn","mac":…}`.
    static func appendTornRecord(
        fragment: [UInt8],
        time: Timestamp,
        chain: inout AuditChainState,
        key: HMACKey,
        to out: inout [UInt8]
    ) {
        let start = out.count
        out.appendLiteral(#"{"error":"","prev_mac":""#)
        out.append(contentsOf: chain.prev)
        out.appendLiteral(#"","seq":"#)
        chain.seq += 1
        appendDecimal(chain.seq, to: &out)
        out.appendLiteral(#","time":""#)
        time.appendRFC3339(to: &out)
        out.appendLiteral(#"","torn":{"bytes":"#)
        appendDecimal(fragment.count, to: &out)
        out.appendLiteral(#","sha256":""#)
        Digest.sha256(fragment).withUnsafeBytes { Hex.append($0, to: &out) }
        out.appendLiteral(#""},"type":"torn"}"#)
        chain.prev = AuditChain.seal(lineFrom: start, of: &out, key: key)
    }

    /// The hashed token and accessor (they appear in both blocks: hashed once) and the `auth` block;
    /// for a caller with an accessor (a service token) from the cache once made, unless `log_raw`,
    /// with the chain MAC's state after the line's opening `{"auth":<auth block>`, which every line
    /// of the caller's records starts with.
    private func authParts(
        _ record: AuditRecord
    ) -> (token: [UInt8], accessor: [UInt8], auth: [UInt8], chainPrefix: HMACPrefix?) {
        // With log_raw the "hashed" token is the token itself: not kept.
        let key = logRaw ? "" : record.caller?.accessor ?? ""
        if !key.isEmpty, let cached = authBlocks.withLock({ $0[key] }) {
            return (cached.token, cached.accessor, cached.auth, cached.chainPrefix)
        }
        var token: [UInt8] = []
        writeHashed(record.request.token, to: &token)
        var accessor: [UInt8] = []
        writeHashed(record.caller?.accessor, to: &accessor)
        let auth = authBlock(record, token: token, accessor: accessor)
        guard !key.isEmpty else { return (token, accessor, auth, nil) }
        let opening = Array(#"{"auth":"#.utf8) + auth
        let chainPrefix = opening.withUnsafeBytes { chainMAC.prefix($0) }
        authBlocks.withLock { blocks in
            if blocks.count >= AuditDevice.authBlockLimit { blocks.removeAll(keepingCapacity: true) }
            blocks[key] = AuthBlock(token: token, accessor: accessor, auth: auth, chainPrefix: chainPrefix)
        }
        return (token, accessor, auth, chainPrefix)
    }

    private func authBlock(_ record: AuditRecord, token: [UInt8], accessor: [UInt8]) -> [UInt8] {
        guard let caller = record.caller else { return [UInt8(ascii: "{"), UInt8(ascii: "}")] }
        var auth: [UInt8] = []
        auth.reserveCapacity(384)
        auth.appendLiteral(#"{"accessor":"#)
        auth.append(contentsOf: accessor)
        auth.appendLiteral(#","client_token":"#)
        auth.append(contentsOf: token)
        auth.appendLiteral(#","display_name":"#)
        JSONValue.writeString(caller.displayName, to: &auth)
        auth.appendLiteral(#","entity_id":"#)
        JSONValue.writeString(caller.entityID, to: &auth)
        auth.appendLiteral(#","metadata":"#)
        writeStrings(caller.meta, to: &auth)
        auth.appendLiteral(#","policies":"#)
        writeStrings(caller.policies, to: &auth)
        auth.appendLiteral(#","token_policies":"#)
        writeStrings(caller.policies, to: &auth)
        auth.appendLiteral(#","token_type":"#)
        JSONValue.writeString(caller.tokenType, to: &auth)
        auth.append(UInt8(ascii: "}"))
        return auth
    }

    private func requestBlock(_ record: AuditRecord, token: [UInt8], accessor: [UInt8]) -> [UInt8] {
        let request = record.request
        var block: [UInt8] = []
        block.reserveCapacity(384)
        block.appendLiteral(#"{"client_token":"#)
        block.append(contentsOf: token)
        block.appendLiteral(#","client_token_accessor":"#)
        block.append(contentsOf: accessor)
        block.appendLiteral(#","data":"#)
        let parameters = request.parameters
        if parameters.isEmpty { block.appendLiteral("null") } else { writeHashed(.object(parameters), to: &block) }
        block.appendLiteral(#","id":"#)
        JSONValue.writeString(request.id, to: &block)
        if request.namespaceID.isEmpty {
            block.appendLiteral(#","namespace":{"id":"root"},"operation":"#)
        } else {
            block.appendLiteral(#","namespace":{"id":"#)
            JSONValue.writeString(request.namespaceID, to: &block)
            block.appendLiteral(#","path":"#)
            JSONValue.writeString(request.namespace, to: &block)
            block.appendLiteral(#"},"operation":"#)
        }
        JSONValue.writeString(request.operation.rawValue, to: &block)
        block.appendLiteral(#","path":"#)
        JSONValue.writeString(request.path, to: &block)
        block.appendLiteral(#","remote_address":"#)
        JSONValue.writeString(request.clientAddress, to: &block)
        block.append(UInt8(ascii: "}"))
        return block
    }

    private func appendResponse(_ record: AuditRecord, to out: inout [UInt8]) {
        out.appendLiteral(#","response":{"#)
        if let response = record.response {
            if let a = response.auth {
                out.appendLiteral(#""auth":{"accessor":"#)
                writeHashed(a.accessor, to: &out)
                out.appendLiteral(#","client_token":"#)
                writeHashed(a.clientToken, to: &out)
                out.appendLiteral(#","entity_id":"#)
                JSONValue.writeString(a.entityID, to: &out)
                out.appendLiteral(#","lease_duration":"#)
                appendDecimal(Int(a.leaseDuration), to: &out)
                out.appendLiteral(#","metadata":"#)
                writeStrings(a.metadata, to: &out)
                out.appendLiteral(#","num_uses":"#)
                appendDecimal(a.numUses, to: &out)
                out.appendLiteral(#","policies":"#)
                writeStrings(a.policies, to: &out)
                out.appendLiteral(a.renewable ? #","renewable":true"# : #","renewable":false"#)
                out.appendLiteral(#","token_policies":"#)
                writeStrings(a.tokenPolicies, to: &out)
                out.appendLiteral(#","token_type":"#)
                JSONValue.writeString(a.tokenType, to: &out)
                out.appendLiteral("},")
            }
            if record.request.operation == .read && !logRaw {
                appendHashedBody(response, to: &out)
            } else if let body = response.raw ?? response.completeData.map({ JSONValue.object($0) }) {
                out.appendLiteral(#""data":"#)
                writeHashed(body, to: &out)
                out.append(UInt8(ascii: ","))
            }
        }
        out.appendLiteral(#""mount_type":"#)
        JSONValue.writeString(record.mountType, to: &out)
        if let response = record.response {
            out.appendLiteral(#","status":"#)
            appendDecimal(response.status, to: &out)
            if !response.warnings.isEmpty {
                out.appendLiteral(#","warnings":"#)
                writeStrings(response.warnings, to: &out)
            }
            // The wrapping token is a bearer secret: hashed like a client token.
            if let wrap = response.wrapInfo {
                out.appendLiteral(#","wrap_info":{"accessor":"#)
                writeHashed(wrap.accessor, to: &out)
                out.appendLiteral(#","creation_path":"#)
                JSONValue.writeString(wrap.creationPath, to: &out)
                out.appendLiteral(#","creation_time":"#)
                JSONValue.writeString(wrap.creationTime.rfc3339, to: &out)
                out.appendLiteral(#","token":"#)
                writeHashed(wrap.token, to: &out)
                out.appendLiteral(#","ttl":"#)
                appendDecimal(Int(wrap.ttl), to: &out)
                if let wrapped = wrap.wrappedAccessor {
                    out.appendLiteral(#","wrapped_accessor":"#)
                    writeHashed(wrapped, to: &out)
                }
                out.append(UInt8(ascii: "}"))
            }
        }
        out.append(UInt8(ascii: "}"))
    }

    /// A read's `"data":<body, hashed>,` (nothing when it has no body), copied from `hashedBodies` when
    /// a body with the same fingerprint was hashed. A verbatim member (a KV read answered in JSON) is
    /// fingerprinted by its bytes and parsed only when its body is not kept.
    private func appendHashedBody(_ response: Response, to out: inout [UInt8]) {
        var hasher = Hasher()
        hasher.combine(fingerprintKey.0)
        hasher.combine(fingerprintKey.1)
        let verbatim = response.raw == nil ? response.verbatimMember : nil
        let plain = verbatim == nil ? response.raw ?? response.data.map { JSONValue.object($0) } : nil
        if let verbatim {
            // Tag 8 starts no other fingerprint (they start with `fingerprint`'s tags 0-6), and the
            // bytes end with their length, so no other body's fingerprint is fed the same stream.
            hasher.combine(UInt8(8))
            AuditDevice.fingerprint(response.data.map { .object($0) } ?? .null, into: &hasher)
            hasher.combine(UInt8(7))
            AuditDevice.fingerprint(bytes: verbatim.name.utf8, into: &hasher)
            AuditDevice.fingerprint(bytes: verbatim.json, into: &hasher)
        } else if let plain {
            AuditDevice.fingerprint(plain, into: &hasher)
        } else {
            return
        }
        let print = hasher.finalize()
        if let hashed = hashedBodies.withLock({ $0[print] }) {
            out.append(contentsOf: hashed)
            return
        }
        guard let body = plain ?? response.completeData.map({ .object($0) }) else { return }
        let start = out.count
        out.appendLiteral(#""data":"#)
        writeHashed(body, to: &out)
        out.append(UInt8(ascii: ","))
        guard out.count - start <= AuditDevice.hashedBodyBytes else { return }
        let hashed = Array(out[start...])
        hashedBodies.withLock { bodies in
            if bodies.count >= AuditDevice.hashedBodyLimit { bodies.removeAll(keepingCapacity: true) }
            bodies[print] = hashed
        }
    }

    /// Feeds `value` to `hasher` as a record prints it: each string's UTF-8 bytes (not its Unicode
    /// equivalence class, as `Hashable` would: "é" precomposed and decomposed print different HMACs),
    /// numbers as written, an object's entries in the dictionary's own order. Two bodies that share a
    /// fingerprint (but for a 2⁻⁶⁴ chance) print the same record; the same body in another order only
    /// misses the cache. Swift's `Hasher` is SipHash under a key drawn at random per process.
    static func fingerprint(_ value: JSONValue, into hasher: inout Hasher) {
        func bytes(_ text: String, _ hasher: inout Hasher) {
            var text = text
            text.withUTF8 { fingerprint(bytes: $0, into: &hasher) }
        }
        switch value {
        case .null: hasher.combine(UInt8(0))
        case .bool(let b): hasher.combine(UInt8(b ? 1 : 2))
        case .number(let n):
            hasher.combine(UInt8(3))
            bytes(n, &hasher)
        case .string(let s):
            hasher.combine(UInt8(4))
            bytes(s, &hasher)
        case .array(let items):
            hasher.combine(UInt8(5))
            hasher.combine(items.count)
            for item in items { fingerprint(item, into: &hasher) }
        case .object(let object):
            hasher.combine(UInt8(6))
            hasher.combine(object.count)
            for (key, item) in object {
                bytes(key, &hasher)
                fingerprint(item, into: &hasher)
            }
        }
    }

    /// Feeds bytes to `hasher` as `fingerprint` feeds a string's: the bytes, then their count.
    static func fingerprint<Bytes: Collection<UInt8>>(bytes: Bytes, into hasher: inout Hasher) {
        if bytes.withContiguousStorageIfAvailable({ hasher.combine(bytes: UnsafeRawBufferPointer($0)) }) == nil {
            Array(bytes).withUnsafeBytes { hasher.combine(bytes: $0) }
        }
        hasher.combine(bytes.count)
    }

    /// A list of names, as JSON (not hashed: policies and warnings are not secrets).
    private func writeStrings(_ values: [String], to out: inout [UInt8]) {
        out.append(UInt8(ascii: "["))
        for (i, value) in values.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            JSONValue.writeString(value, to: &out)
        }
        out.append(UInt8(ascii: "]"))
    }

    /// Token metadata as JSON, or null when there is none (as Vault writes it; not hashed).
    private func writeStrings(_ values: [String: String], to out: inout [UInt8]) {
        guard !values.isEmpty else {
            out.appendLiteral("null")
            return
        }
        out.append(UInt8(ascii: "{"))
        for (i, (key, value)) in values.sorted(by: { $0.key < $1.key }).enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            JSONValue.writeString(key, to: &out)
            out.append(UInt8(ascii: ":"))
            JSONValue.writeString(value, to: &out)
        }
        out.append(UInt8(ascii: "}"))
    }
}
