package import CofferCore
package import CofferFramework

/// Secret IDs (generate, look up, destroy, list), login and tidy.
extension AppRoleBackend {
    /// Longest secret ID, role ID or accessor Coffer takes: longer ones are refused with a 400 when
    /// set, and cannot match anything at login.
    static let maximumIDLength = 4096

    /// The role a secret-ID path names; `missing` is OpenBao's error for an unknown role there.
    func requireRole(_ request: BackendRequest, missing: (String) -> CofferError) throws(CofferError) -> AppRole {
        let name = try Self.roleName(request)
        guard let role = try loadRole(name, request.storage) else { throw missing(name) }
        return role
    }

    static func roleMissing500(_ name: String) -> CofferError {
        CofferError(.internal, multierror("role \"\(name)\" does not exist"))
    }

    func loadEntry(_ uid: String, _ hmac: String, _ storage: StorageView) throws(CofferError) -> SecretIDEntry? {
        guard let json = try storage.getJSON(AppRoleKeys.secretID(uid, hmac)) else { return nil }
        guard let entry = SecretIDEntry(json: json) else {
            throw CofferError(.integrity, "a stored AppRole secret ID entry is malformed")
        }
        return entry
    }

    /// The writes that remove a secret ID with its accessor and its expiry index key.
    static func removal(_ uid: String, _ hmac: String, _ entry: SecretIDEntry) -> [StorageOperation] {
        var operations: [StorageOperation] = [
            .delete(key: AppRoleKeys.secretID(uid, hmac)), .delete(key: AppRoleKeys.accessor(entry.accessor)),
        ]
        if let expiration = entry.expirationTime {
            operations.append(.delete(key: AppRoleKeys.expiry(expiration, uid, hmac)))
        }
        return operations
    }

    // MARK: Generate

    func generateSecretID(_ request: BackendRequest) throws(CofferError) -> Response {
        try makeSecretID(request, custom: nil)
    }

    func customSecretID(_ request: BackendRequest) throws(CofferError) -> Response {
        _ = try requireRole(request) { CofferError(.notFound, "role \"\($0)\" does not exist") }
        guard let secretID = request.fields.string("secret_id"), !secretID.isEmpty else {
            throw CofferError.invalid("missing secret_id")
        }
        guard secretID.utf8.count <= Self.maximumIDLength else {
            throw CofferError.invalid("secret_id must be at most \(Self.maximumIDLength) bytes")
        }
        return try makeSecretID(request, custom: secretID)
    }

    /// `metadata` is a JSON object of strings given as text, as OpenBao takes it.
    static func parseMetadata(_ text: String?) throws(CofferError) -> [String: String] {
        guard let text, !text.isEmpty else { return [:] }
        let invalid = CofferError.invalid(
            "failed to parse metadata: failed to parse the input: invalid <key,value> format"
        )
        guard let parsed = try? JSONValue.parse(text, maximumDepth: 4), let object = parsed.objectValue else {
            throw invalid
        }
        var out: [String: String] = [:]
        for (key, value) in object {
            guard let text = value.stringValue else { throw invalid }
            out[key] = text
        }
        return out
    }

    /// Whether every block of `inner` lies inside one of `outer`.
    static func isSubset(_ inner: [String], of outer: [String]) -> Bool {
        let outerBlocks = outer.compactMap { CIDR($0) }
        return inner.allSatisfy { text in
            guard let block = CIDR(text) else { return false }
            return outerBlocks.contains { $0.contains(block) }
        }
    }

    func makeSecretID(_ request: BackendRequest, custom: String?) throws(CofferError) -> Response {
        let role = try requireRole(request) { CofferError(.notFound, "role \"\($0)\" does not exist") }
        guard role.bindSecretID else { throw CofferError.invalid("bind_secret_id is not set on the role") }
        let f = request.fields
        let metadata = try Self.parseMetadata(f.string("metadata"))

        let cidrList = try Self.parseCIDRs(f.strings("cidr_list") ?? [], bareAddresses: false)
        if let roleBlocks = role.secretIDBoundCIDRs, !roleBlocks.isEmpty, !cidrList.isEmpty,
            !Self.isSubset(cidrList, of: roleBlocks)
        {
            throw CofferError(
                .internal,
                multierror(
                    "failed to verify subset relationship between CIDR blocks on the role \(goQuotedList(roleBlocks)) and CIDR blocks on the secret ID \(goQuotedList(cidrList)): %!w(<nil>)"
                )
            )
        }
        let tokenBlocks = try Self.parseCIDRs(
            f.strings("token_bound_cidrs") ?? [],
            bareAddresses: false,
            what: "token CIDR blocks"
        )
        if !role.token.boundCIDRs.isEmpty, !tokenBlocks.isEmpty, !Self.isSubset(tokenBlocks, of: role.token.boundCIDRs)
        {
            throw CofferError(
                .internal,
                multierror(
                    "failed to verify subset relationship between the token CIDR blocks on the role \(goQuotedList(role.token.boundCIDRs)) and the token CIDR blocks on the secret ID \(goQuotedList(tokenBlocks)): %!w(<nil>)"
                )
            )
        }

        var numUses = role.secretIDNumUses
        if let given = f.int("num_uses") {
            guard given >= 0 else { throw CofferError.invalid("num_uses cannot be negative") }
            if role.secretIDNumUses > 0 && (given == 0 || given > role.secretIDNumUses) {
                throw CofferError.invalid("num_uses cannot be higher than the role's secret_id_num_uses")
            }
            numUses = given
        }
        var ttl = role.secretIDTTL
        if let given = f.seconds("ttl") {
            if role.secretIDTTL > 0 && (given == 0 || given > role.secretIDTTL) {
                throw CofferError.invalid("ttl cannot be longer than the role's secret_id_ttl")
            }
            ttl = given
        }

        let secretID = custom ?? Random.uuid()
        let hmac = try hmac(secretID, request.storage)
        let entry = SecretIDEntry(
            accessor: Random.uuid(),
            now: request.now,
            ttl: ttl,
            numUses: numUses,
            metadata: metadata,
            cidrList: cidrList,
            tokenBoundCIDRs: tokenBlocks
        )
        try stripe(hmac).lock.withLock { _ throws(CofferError) in
            if try request.storage.get(AppRoleKeys.secretID(role.uid, hmac)) != nil {
                throw CofferError(.internal, multierror("failed to store secret_id: SecretID is already registered"))
            }
            var operations: [StorageOperation] = [
                .put(key: AppRoleKeys.secretID(role.uid, hmac), value: entry.json.serialized()),
                .put(
                    key: AppRoleKeys.accessor(entry.accessor),
                    value: JSONValue.object(["role_uid": .string(role.uid), "secret_id_hmac": .string(hmac)])
                        .serialized()
                ),
            ]
            if let expiration = entry.expirationTime {
                operations.append(.put(key: AppRoleKeys.expiry(expiration, role.uid, hmac), value: Array("{}".utf8)))
            }
            try request.storage.batch(operations)
        }
        var response = Response(data: [
            "secret_id": .string(secretID), "secret_id_accessor": .string(entry.accessor),
            "secret_id_num_uses": .int(numUses), "secret_id_ttl": .int(ttl),
        ])
        response.wrappedAccessor = entry.accessor
        return response
    }

    // MARK: List, look up, destroy

    func listSecretIDs(_ request: BackendRequest) throws(CofferError) -> Response {
        let role = try requireRole(request) { CofferError.invalid("role \"\($0)\" does not exist") }
        var accessors: [String] = []
        for hmac in try request.storage.list(AppRoleKeys.secretIDFolder(role.uid)) {
            if let entry = try loadEntry(role.uid, hmac, request.storage) { accessors.append(entry.accessor) }
        }
        guard !accessors.isEmpty else { return .notFound }
        return Response(data: ["keys": .array(accessors.sorted().map { .string($0) })])
    }

    /// The entry of a secret ID under `role`, or nil; an expired one is deleted on sight.
    func liveEntry(_ role: AppRole, _ hmac: String, _ request: BackendRequest) throws(CofferError) -> SecretIDEntry? {
        try stripe(hmac).lock.withLock { _ throws(CofferError) -> SecretIDEntry? in
            guard let entry = try loadEntry(role.uid, hmac, request.storage) else { return nil }
            if entry.expired(at: request.now) {
                try request.storage.batch(Self.removal(role.uid, hmac, entry))
                return nil
            }
            return entry
        }
    }

    func secretIDField(_ request: BackendRequest) throws(CofferError) -> String {
        guard let secretID = request.fields.string("secret_id"), !secretID.isEmpty else {
            throw CofferError.invalid("missing secret_id")
        }
        return secretID
    }

    func lookupSecretID(_ request: BackendRequest) throws(CofferError) -> Response {
        let role = try requireRole(request, missing: Self.roleMissing500)
        let secretID = try secretIDField(request)
        guard secretID.utf8.count <= Self.maximumIDLength,
            let entry = try liveEntry(role, try hmac(secretID, request.storage), request)
        else { return .noContent }
        return Response(data: entry.lookup)
    }

    func destroySecretID(_ request: BackendRequest) throws(CofferError) -> Response {
        let role = try requireRole(request, missing: Self.roleMissing500)
        let secretID = try secretIDField(request)
        guard secretID.utf8.count <= Self.maximumIDLength else { return .noContent }
        let hmac = try hmac(secretID, request.storage)
        try stripe(hmac).lock.withLock { _ throws(CofferError) in
            if let entry = try loadEntry(role.uid, hmac, request.storage) {
                try request.storage.batch(Self.removal(role.uid, hmac, entry))
            }
        }
        return .noContent
    }

    /// The accessor index entry: the role uid and the secret ID's HMAC, or nil.
    func accessorEntry(
        _ request: BackendRequest
    ) throws(CofferError) -> (
        accessor: String, entry: (uid: String, hmac: String)?
    ) {
        guard let accessor = request.fields.string("secret_id_accessor"), !accessor.isEmpty else {
            throw CofferError.invalid("missing secret_id_accessor")
        }
        guard accessor.utf8.count <= 128, !accessor.contains("/") else {
            throw CofferError.invalid("secret_id_accessor must be an accessor (at most 128 bytes, no '/')")
        }
        guard let json = try request.storage.getJSON(AppRoleKeys.accessor(accessor)),
            let uid = json["role_uid"]?.stringValue, let hmac = json["secret_id_hmac"]?.stringValue
        else { return (accessor, nil) }
        return (accessor, (uid, hmac))
    }

    func lookupAccessor(_ request: BackendRequest) throws(CofferError) -> Response {
        let role = try requireRole(request, missing: Self.roleMissing500)
        let (accessor, found) = try accessorEntry(request)
        guard let found else {
            return Response(notFound: [
                "error": .string("failed to find accessor entry for secret_id_accessor: \"\(accessor)\"")
            ])
        }
        // An accessor of another role's secret ID: OpenBao answers 204, as for a destroyed one.
        guard found.uid == role.uid, let entry = try liveEntry(role, found.hmac, request) else { return .noContent }
        return Response(data: entry.lookup)
    }

    func destroyAccessor(_ request: BackendRequest) throws(CofferError) -> Response {
        let role = try requireRole(request, missing: Self.roleMissing500)
        let (accessor, found) = try accessorEntry(request)
        guard let found else {
            throw CofferError(
                .internal,
                multierror("failed to find accessor entry for secret_id_accessor: \"\(accessor)\"")
            )
        }
        // Another role's accessor is left alone (OpenBao would drop the index entry and leave the
        // secret ID usable without an accessor).
        guard found.uid == role.uid else { return .noContent }
        try stripe(found.hmac).lock.withLock { _ throws(CofferError) in
            if let entry = try loadEntry(role.uid, found.hmac, request.storage) {
                try request.storage.batch(Self.removal(role.uid, found.hmac, entry))
            } else {
                try request.storage.delete(AppRoleKeys.accessor(accessor))
            }
        }
        return .noContent
    }

    // MARK: Login

    static let invalidCredentials = CofferError.invalid("invalid role or secret ID")
    /// How stale `last_used_time` may be for a secret ID with unlimited uses (seconds).
    static let lastUsedResolution: Int64 = 60

    /// The client's IP address without a port or brackets, as OpenBao's CIDR messages show it.
    static func sourceAddress(_ text: String) -> String {
        if text.hasPrefix("["), let end = text.firstIndex(of: "]") {
            return String(text[text.index(after: text.startIndex)..<end])
        }
        if text.utf8.filter({ $0 == UInt8(ascii: ":") }).count == 1, let colon = text.firstIndex(of: ":") {
            return String(text[..<colon])
        }
        return text
    }

    /// The role a login's `role_id` belongs to (for role-based quotas); nil for an unknown one.
    package func loginRole(_ data: [String: JSONValue], storage: StorageView) -> String? {
        guard let roleID = data["role_id"]?.stringValue?.trimmingCharacters(), !roleID.isEmpty,
            roleID.utf8.count <= Self.maximumIDLength, let key = try? hmac(roleID, storage)
        else { return nil }
        return (try? storage.getJSON(AppRoleKeys.roleID(key)))?["name"]?.stringValue
    }

    func login(_ request: BackendRequest) throws(CofferError) -> Response {
        let roleID = request.fields.string("role_id")?.trimmingCharacters() ?? ""
        guard !roleID.isEmpty else { throw CofferError(.internal, "missing role_id") }
        guard roleID.utf8.count <= Self.maximumIDLength,
            let name = try request.storage.getJSON(AppRoleKeys.roleID(try hmac(roleID, request.storage)))?["name"]?
                .stringValue,
            let role = try loadRole(name, request.storage),
            ConstantTime.equals(Array(role.roleID.utf8), Array(roleID.utf8))
        else { throw Self.invalidCredentials }

        let address = Self.sourceAddress(request.clientAddress)
        var metadata: [String: String] = [:]
        var tokenBlocks = role.token.boundCIDRs
        if role.bindSecretID {
            let secretID = request.fields.string("secret_id")?.trimmingCharacters() ?? ""
            guard !secretID.isEmpty else { throw CofferError.invalid("missing secret_id") }
            // The role's blocks are checked before a use is spent (OpenBao spends it first).
            try Self.checkRoleCIDRs(role, address)
            guard secretID.utf8.count <= Self.maximumIDLength else { throw Self.invalidCredentials }
            let entry = try spend(role, try hmac(secretID, request.storage), address, request)
            metadata = entry.metadata
            if !entry.tokenBoundCIDRs.isEmpty { tokenBlocks = entry.tokenBoundCIDRs }
        } else {
            try Self.checkRoleCIDRs(role, address)
        }
        metadata["role_name"] = role.name
        var parameters = role.token
        parameters.boundCIDRs = tokenBlocks
        return Response(
            auth: parameters.authInfo(
                metadata: metadata,
                grant: LoginGrant(alias: role.roleID, aliasMetadata: metadata)
            )
        )
    }

    static func checkRoleCIDRs(_ role: AppRole, _ address: String) throws(CofferError) {
        if let blocks = role.secretIDBoundCIDRs, !blocks.isEmpty, !CIDR.allows(blocks, address) {
            throw CofferError.invalid(
                "source address \"\(address)\" unauthorized by CIDR restrictions on the role: %!w(<nil>)"
            )
        }
    }

    /// Checks a secret ID and spends one of its uses, holding its stripe's lock: the entry is read,
    /// checked and rewritten (or deleted at its last use) under the lock, so N uses give exactly N
    /// logins however many arrive at once. Records `last_used_time`.
    func spend(
        _ role: AppRole,
        _ hmac: String,
        _ address: String,
        _ request: BackendRequest
    ) throws(CofferError) -> SecretIDEntry {
        try stripe(hmac).lock.withLock { _ throws(CofferError) -> SecretIDEntry in
            guard var entry = try loadEntry(role.uid, hmac, request.storage) else { throw Self.invalidCredentials }
            if entry.expired(at: request.now) {
                try request.storage.batch(Self.removal(role.uid, hmac, entry))
                throw Self.invalidCredentials
            }
            if !entry.cidrList.isEmpty && !CIDR.allows(entry.cidrList, address) {
                throw CofferError.invalid(
                    "source address \"\(address)\" unauthorized by CIDR restrictions on the secret ID: %!w(<nil>)"
                )
            }
            switch entry.numUses {
            case 1:
                try request.storage.batch(Self.removal(role.uid, hmac, entry))
                entry.numUses = 0
            case let uses:
                if uses > 1 {
                    entry.numUses = uses - 1
                    entry.lastUpdatedTime = request.now
                } else if let last = entry.lastUsedTime, last.seconds(until: request.now) < Self.lastUsedResolution {
                    // Unlimited uses: `last_used_time` is kept to the minute, so a busy secret ID
                    // does not cost a durable write on every login.
                    return entry
                }
                entry.lastUsedTime = request.now
                try request.storage.putJSON(AppRoleKeys.secretID(role.uid, hmac), entry.json)
            }
            return entry
        }
    }

    // MARK: Tidy

    /// Deletes expired secret IDs by reading the expiry index up to now: the cost is what has
    /// expired, not how many secret IDs exist, and no lock is held longer than one entry's removal.
    /// Answers OpenBao's 202 (the work is done by then).
    func tidy(_ request: BackendRequest) throws(CofferError) -> Response {
        let now = request.now
        let currentBucket = AppRoleKeys.expiryBucket(now)
        for folder in try request.storage.list(AppRoleKeys.expiryFolder) {
            let bucket = folder.hasSuffix("/") ? String(folder.dropLast()) : folder
            guard bucket <= currentBucket else { continue }
            let prefix = AppRoleKeys.expiryFolder + bucket + "/"
            for name in try request.storage.list(prefix) {
                let parts = name.split(separator: ".", maxSplits: 2).map(String.init)
                guard parts.count == 3, let seconds = Int64(parts[0]) else {
                    try request.storage.delete(prefix + name)
                    continue
                }
                guard seconds <= now.seconds else { continue }
                let (uid, hmac) = (parts[1], parts[2])
                try stripe(hmac).lock.withLock { _ throws(CofferError) in
                    guard let entry = try loadEntry(uid, hmac, request.storage) else {
                        try request.storage.delete(prefix + name)
                        return
                    }
                    if entry.expired(at: now) {
                        try request.storage.batch(Self.removal(uid, hmac, entry))
                    } else if entry.expirationTime.map({ AppRoleKeys.expiry($0, uid, hmac) }) != prefix + name {
                        try request.storage.delete(prefix + name)  // left by an earlier secret ID of this value
                    }
                }
            }
        }
        return .raw(
            [
                "request_id": .string(request.requestID), "lease_id": "", "renewable": false, "lease_duration": 0,
                "data": .null, "wrap_info": .null,
                "warnings": [
                    "Tidy operation successfully started. Any information from the operation will be printed to OpenBao's server logs."
                ],
                "auth": .null,
            ],
            status: 202
        )
    }
}
