package import CofferCore

/// The request fields, checked against the path's declaration before a handler runs. The getters
/// return the checked value (nil when the field was not given); asking for a field the path did not
/// declare returns the raw value's canonical form only for arbitrary-input paths.
public struct FieldData: Sendable {
    /// Everything the request carried (body or query), as given.
    public let raw: [String: JSONValue]
    /// Byte fields from an in-process caller, by name: used instead of base64 text (``Field/Kind/bytes``).
    public let rawBytes: [String: [UInt8]]
    private var checked: [String: FieldValue] = [:]

    public init(_ raw: [String: JSONValue], rawBytes: [String: [UInt8]] = [:]) {
        self.raw = raw
        self.rawBytes = rawBytes
    }

    /// Converts every declared field that is present; returns the names of undeclared ones (sorted)
    /// unless `arbitrary`. Throws for a missing required field or a value that does not fit.
    mutating func check(against fields: [Field], arbitrary: Bool) throws(CofferError) -> [String] {
        for field in fields {
            if case .bytes = field.kind, let bytes = rawBytes[field.name] {
                checked[field.name] = .bytes(bytes)
                continue
            }
            guard let value = raw[field.name], value != .null else {
                if field.required { throw CofferError.invalid("missing \(field.name)") }
                continue
            }
            checked[field.name] = try field.convert(value)
        }
        guard !arbitrary else { return [] }
        var ignored: [String] = []
        for key in raw.keys where !fields.contains(where: { $0.name == key }) { ignored.append(key) }
        return ignored.sorted()
    }

    public func has(_ name: String) -> Bool { checked[name] != nil }

    public func string(_ name: String) -> String? {
        if case .string(let v)? = checked[name] { return v }
        return nil
    }

    public func int(_ name: String) -> Int? {
        if case .int(let v)? = checked[name] { return v }
        return nil
    }

    /// A duration field, in seconds.
    public func seconds(_ name: String) -> Int64? {
        if case .int(let v)? = checked[name] { return Int64(v) }
        return nil
    }

    public func bool(_ name: String) -> Bool? {
        if case .bool(let v)? = checked[name] { return v }
        return nil
    }

    public func strings(_ name: String) -> [String]? {
        if case .strings(let v)? = checked[name] { return v }
        return nil
    }

    public func ints(_ name: String) -> [Int]? {
        if case .ints(let v)? = checked[name] { return v }
        return nil
    }

    public func stringMap(_ name: String) -> [String: String]? {
        if case .stringMap(let v)? = checked[name] { return v }
        return nil
    }

    public func object(_ name: String) -> [String: JSONValue]? {
        if case .object(let v)? = checked[name] { return v }
        return nil
    }

    public func json(_ name: String) -> JSONValue? {
        if case .json(let v)? = checked[name] { return v }
        return nil
    }

    public func bytes(_ name: String) -> [UInt8]? {
        if case .bytes(let v)? = checked[name] { return v }
        return nil
    }
}

/// Who is calling: the token the pipeline checked. Backends that keep per-token state (cubbyhole)
/// key it by `tokenHash`, never by the token.
public struct Caller: Sendable {
    /// The salted hash of the token (its storage id), "" for unauthenticated paths.
    public var tokenHash: String
    public var accessor: String
    public var policies: [String]
    public var displayName: String
    public var isRoot: Bool { policies.contains("root") }

    public init(tokenHash: String, accessor: String, policies: [String], displayName: String) {
        self.tokenHash = tokenHash
        self.accessor = accessor
        self.policies = policies
        self.displayName = displayName
    }
}

/// What a backend's handler receives: the request relative to the mount, its checked fields, the
/// mount's storage and the caller.
public struct BackendRequest: Sendable {
    public var operation: Request.Operation
    /// The path under the mount ("data/app" for "secret/data/app").
    public var path: String
    public var captures = Captures()
    public var fields: FieldData
    public var storage: StorageView
    public var mount: MountEntry
    public var now: Timestamp
    /// nil on unauthenticated paths.
    public var caller: Caller?
    /// The token as presented, for the token backend's `lookup-self` and similar (never stored).
    public var token: String?
    public var requestID: String
    public var clientAddress: String

    public init(
        operation: Request.Operation, path: String, fields: FieldData, storage: StorageView, mount: MountEntry,
        now: Timestamp, caller: Caller? = nil, token: String? = nil, requestID: String = "", clientAddress: String = ""
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
    public func capture(_ name: String) -> String { captures[name] ?? "" }

    /// The path as the client sent it ("secret/data/app"), for messages.
    public var fullPath: String { mount.path + path }
}

/// What an existence check receives: the request, and storage it can only read.
public struct ExistenceRequest: Sendable {
    public var path: String
    public var captures = Captures()
    public var fields: FieldData
    public var storage: StorageReader
    public var mount: MountEntry
    public var now: Timestamp

    public init(path: String, fields: FieldData, storage: StorageReader, mount: MountEntry, now: Timestamp) {
        self.path = path
        self.fields = fields
        self.storage = storage
        self.mount = mount
        self.now = now
    }

    public func capture(_ name: String) -> String { captures[name] ?? "" }
}
