package import CofferCore

/// The request fields, checked against the path's declaration before a handler runs. The getters
/// return the checked value (nil when the field was not given); asking for a field the path did not
/// declare returns the raw value's canonical form only for arbitrary-input paths.
package struct FieldData: Sendable {
    /// Everything the request carried (body or query), as given.
    package let raw: [String: JSONValue]
    /// Byte fields from an in-process caller, by name: used instead of base64 text (``Field/Kind/bytes``).
    package let rawBytes: [String: [UInt8]]
    /// Whether the caller wants byte results as bytes (``Response/rawBytes``), not base64 text.
    package let rawResults: Bool
    /// The checked values, in declaration order: a request names few fields, so finding one by
    /// comparing names costs less than hashing it.
    private var checked: [(name: String, value: FieldValue)] = []

    package init(_ raw: [String: JSONValue], rawBytes: [String: [UInt8]] = [:], rawResults: Bool = false) {
        self.raw = raw
        self.rawBytes = rawBytes
        self.rawResults = rawResults
    }

    /// Converts every declared field that is present; returns the names of undeclared ones (sorted)
    /// unless `arbitrary`. Throws for a missing required field or a value that does not fit.
    package mutating func check(against fields: [Field], arbitrary: Bool) throws(CofferError) -> [String] {
        // The fields that can do anything: those the request names and the required ones, found by
        // comparing names, then taken in declaration order so the first problem reported does not
        // depend on dictionary order.
        var ignored: [String] = []
        var named = FieldIndices()
        for key in raw.keys {
            if let index = fields.firstIndex(where: { $0.name == key }) {
                named.insert(index)
            } else if !arbitrary {
                ignored.append(key)
            }
        }
        for key in rawBytes.keys {
            if let index = fields.firstIndex(where: { $0.name == key }) { named.insert(index) }
        }
        for index in fields.indices where fields[index].required { named.insert(index) }
        checked.removeAll(keepingCapacity: true)
        checked.reserveCapacity(named.count)
        for index in named {
            let field = fields[index]
            if case .bytes = field.kind, !rawBytes.isEmpty, let bytes = rawBytes[field.name] {
                checked.append((field.name, .bytes(bytes)))
                continue
            }
            guard !raw.isEmpty, let value = raw[field.name], value != .null else {
                if field.required { throw CofferError.invalid("missing \(field.name)") }
                continue
            }
            checked.append((field.name, try field.convert(value)))
        }
        return ignored.isEmpty ? ignored : ignored.sorted()
    }

    private func lookup(_ name: String) -> FieldValue? {
        for entry in checked where entry.name == name { return entry.value }
        return nil
    }

    /// The checked value of `name`, whatever its kind (tests compare it).
    package func value(_ name: String) -> FieldValue? { lookup(name) }

    package func has(_ name: String) -> Bool { lookup(name) != nil }

    package func string(_ name: String) -> String? {
        if case .string(let v)? = lookup(name) { return v }
        return nil
    }

    package func int(_ name: String) -> Int? {
        if case .int(let v)? = lookup(name) { return v }
        return nil
    }

    /// A duration field, in seconds.
    package func seconds(_ name: String) -> Int64? {
        if case .int(let v)? = lookup(name) { return Int64(v) }
        return nil
    }

    package func bool(_ name: String) -> Bool? {
        if case .bool(let v)? = lookup(name) { return v }
        return nil
    }

    package func strings(_ name: String) -> [String]? {
        if case .strings(let v)? = lookup(name) { return v }
        return nil
    }

    package func ints(_ name: String) -> [Int]? {
        if case .ints(let v)? = lookup(name) { return v }
        return nil
    }

    package func stringMap(_ name: String) -> [String: String]? {
        if case .stringMap(let v)? = lookup(name) { return v }
        return nil
    }

    package func object(_ name: String) -> [String: JSONValue]? {
        if case .object(let v)? = lookup(name) { return v }
        return nil
    }

    package func json(_ name: String) -> JSONValue? {
        if case .json(let v)? = lookup(name) { return v }
        return nil
    }

    package func bytes(_ name: String) -> [UInt8]? {
        if case .bytes(let v)? = lookup(name) { return v }
        return nil
    }
}

/// A set of field indices in a path's declaration: bits for the first 64 (no allocation, read back in
/// order with no sort), an array beyond (no path declares that many today).
private struct FieldIndices: Sequence {
    private var low: UInt64 = 0
    private var high: [Int] = []

    var count: Int { low.nonzeroBitCount + high.count }

    mutating func insert(_ index: Int) {
        if index < 64 {
            low |= 1 << UInt64(index)
        } else if !high.contains(index) {
            high.append(index)
        }
    }

    /// The indices in ascending order.
    struct Iterator: IteratorProtocol {
        var bits: UInt64
        var high: IndexingIterator<[Int]>

        mutating func next() -> Int? {
            guard bits != 0 else { return high.next() }
            defer { bits &= bits - 1 }
            return bits.trailingZeroBitCount
        }
    }

    func makeIterator() -> Iterator {
        Iterator(bits: low, high: (high.isEmpty ? high : high.sorted()).makeIterator())
    }
}

/// Who is calling: the token the pipeline checked. Backends that keep per-token state (cubbyhole)
/// key it by `tokenHash`, never by the token.
package struct Caller: Sendable {
    /// The salted hash of the token (its storage id), "" for unauthenticated paths.
    package var tokenHash: String
    package var accessor: String
    package var policies: [String]
    package var displayName: String
    /// What the vault's own backends need of the token beyond this (its full entry); nil elsewhere.
    package var details: (any Sendable)?
    package var isRoot: Bool { policies.contains("root") }

    package init(tokenHash: String, accessor: String, policies: [String], displayName: String) {
        self.tokenHash = tokenHash
        self.accessor = accessor
        self.policies = policies
        self.displayName = displayName
    }
}

/// What the vault offers its backends beyond their own storage (Vault's system view).
package protocol SystemView: Sendable {
    /// The password policy stored as `sys/policies/password/<name>`, nil if there is none.
    func passwordPolicy(_ name: String) throws(CofferError) -> PasswordPolicy?

    /// Tells the vault's event subscribers that something happened on `mount` (issue 20): `type` as
    /// Vault names it ("kv-v2/data-write"), `metadata` what a subscriber may see (the path, a version,
    /// the operation: never a secret value), in the namespace `namespaceID` ("" for the root).
    /// Returns at once; a subscriber that is slow does not slow the caller.
    func publishEvent(
        _ type: String,
        mount: MountEntry,
        namespaceID: String,
        metadata: [String: JSONValue],
        now: Timestamp
    )
}

extension BackendRequest {
    /// Publishes an event of `type` about this request's mount (see ``SystemView/publishEvent``);
    /// nothing when there is no system view (tests that build requests by hand).
    package func publishEvent(_ type: String, metadata: [String: JSONValue]) {
        system?.publishEvent(type, mount: mount, namespaceID: namespaceID, metadata: metadata, now: now)
    }
}

/// What a backend's handler receives: the request relative to the mount, its checked fields, the
/// mount's storage and the caller.
package struct BackendRequest: Sendable {
    package var operation: Request.Operation
    /// The path under the mount ("data/app" for "secret/data/app").
    package var path: String
    package var captures = Captures()
    package var fields: FieldData
    package var storage: StorageView
    package var mount: MountEntry
    package var now: Timestamp
    /// nil on unauthenticated paths.
    package var caller: Caller?
    /// The token as presented, for the token backend's `lookup-self` and similar (never stored).
    package var token: String?
    package var requestID: String
    package var clientAddress: String
    /// The vault's system view; nil only in tests that build requests by hand.
    package var system: (any SystemView)?
    /// Seconds the caller asked the answer to be wrapped for (0: not wrapped); the core wraps it.
    package var wrapTTL: Int64 = 0
    /// The id of the namespace the mount is in ("" for the root namespace).
    package var namespaceID = ""

    package init(
        operation: Request.Operation,
        path: String,
        fields: FieldData,
        storage: StorageView,
        mount: MountEntry,
        now: Timestamp,
        caller: Caller? = nil,
        token: String? = nil,
        requestID: String = "",
        clientAddress: String = ""
    ) {
        self.operation = operation
        self.path = path
        self.fields = fields
        self.storage = storage
        self.mount = mount
        self.now = now
        self.caller = caller
        self.token = token
        self.requestID = requestID
        self.clientAddress = clientAddress
    }

    /// A captured segment of the path (declared, so always present for the matched path).
    package func capture(_ name: String) -> String { captures[name] ?? "" }

    /// The path as the client sent it ("secret/data/app"), for messages.
    package var fullPath: String { mount.path + path }

    /// Everything the request carried, as given (its declared fields are checked already).
    package var data: [String: JSONValue] { fields.raw }

    /// The answer for an operation the path does not serve (Vault's text).
    package func unsupported() -> CofferError { CofferError(.unsupportedOperation, "unsupported operation") }
}

/// What an existence check receives: the request, and storage it can only read.
package struct ExistenceRequest: Sendable {
    package var path: String
    package var captures = Captures()
    package var fields: FieldData
    package var storage: StorageReader
    package var mount: MountEntry
    package var now: Timestamp
    package var caller: Caller?

    package init(
        path: String,
        fields: FieldData,
        storage: StorageReader,
        mount: MountEntry,
        now: Timestamp,
        caller: Caller? = nil
    ) {
        self.path = path
        self.fields = fields
        self.storage = storage
        self.mount = mount
        self.now = now
        self.caller = caller
    }

    package func capture(_ name: String) -> String { captures[name] ?? "" }
}
