package import CofferCore

/// A refusal from the pure parts of the IAM login, with the text Vault gives.
package struct AWSAuthError: Error, Sendable, Equatable, CustomStringConvertible {
    package let message: String
    package init(_ message: String) { self.message = message }
    package var description: String { message }
}

/// An IAM principal as its ARN names it (Vault's `iamEntity`): `arn:<partition>:iam::<account>:user/<path>/<name>`,
/// `…:role/<path>/<name>`, `…:instance-profile/…`, or what STS says of a role's session,
/// `arn:<partition>:sts::<account>:assumed-role/<role>/<session>`.
package struct IAMEntity: Sendable, Equatable {
    package var partition: String
    package var account: String
    /// "user", "role", "assumed-role" or "instance-profile".
    package var type: String
    package var path: String
    package var friendlyName: String
    package var sessionInfo: String

    /// Parses `arn` with Vault's checks and messages.
    package init(arn: String) throws(AWSAuthError) {
        let parts = arn.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 6 else {
            throw AWSAuthError("unrecognized arn: contains \(parts.count) colon-separated parts, expected 6")
        }
        guard parts[0] == "arn" else { throw AWSAuthError("unrecognized arn: does not begin with \"arn:\"") }
        partition = String(parts[1])
        guard parts[2] == "iam" || parts[2] == "sts" else {
            throw AWSAuthError("unrecognized service: \(parts[2]), not one of iam or sts")
        }
        account = String(parts[4])
        let resource = parts[5].split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard resource.count >= 2 else {
            throw AWSAuthError("unrecognized arn: \"\(parts[5])\" contains fewer than 2 slash-separated parts")
        }
        type = resource[0]
        path = resource[1..<(resource.count - 1)].joined(separator: "/")
        friendlyName = resource[resource.count - 1]
        sessionInfo = ""
        switch type {
        case "assumed-role":
            guard resource.count >= 3 else {
                throw AWSAuthError("unrecognized arn: \"\(parts[5])\" contains fewer than 3 slash-separated parts")
            }
            // A session's ARN does not carry the role's path.
            path = ""
            friendlyName = resource[1]
            sessionInfo = resource[2]
        case "user", "role", "instance-profile":
            break
        default:
            throw AWSAuthError("unrecognized principal type: \"\(type)\"")
        }
    }

    /// Vault's canonical ARN: an assumed role becomes its role, and the path is dropped
    /// (`arn:aws:sts::1:assumed-role/R/S` → `arn:aws:iam::1:role/R`).
    package var canonicalARN: String {
        "arn:\(partition):iam::\(account):\(type == "assumed-role" ? "role" : type)/\(friendlyName)"
    }
}

/// Binding of a caller to a role's `bound_iam_principal_arn` list, as Vault does it.
package enum IAMBinding {
    /// Vault's `strutil.GlobbedStringsMatch`: `*` at the start, the end or both; otherwise equality.
    package static func globMatch(_ pattern: String, _ value: String) -> Bool {
        let starts = pattern.hasPrefix("*")
        let ends = pattern.hasSuffix("*")
        if pattern == "*" { return true }
        switch (starts, ends) {
        case (true, true): return value.contains(pattern.dropFirst().dropLast())
        case (true, false): return value.hasSuffix(pattern.dropFirst())
        case (false, true): return value.hasPrefix(pattern.dropLast())
        case (false, false): return pattern == value
        }
    }

    package static func hasWildcard(_ arns: [String]) -> Bool { arns.contains { $0.hasSuffix("*") } }

    /// Whether the caller passes one of Vault's three checks: its unique ID is pinned on the role;
    /// without unique-ID resolution, its canonical ARN is listed; or its full ARN (with path, from
    /// IAM, asked only when needed) matches a bound ARN ending in `*`.
    package static func allows(
        boundARNs: [String],
        boundIDs: [String],
        resolveUniqueIDs: Bool,
        uniqueID: String,
        canonicalARN: String,
        fullARN: () throws(AWSAuthError) -> String
    ) throws(AWSAuthError) -> Bool {
        if boundARNs.isEmpty { return true }
        if boundIDs.contains(uniqueID) { return true }
        if !resolveUniqueIDs && boundARNs.contains(canonicalARN) { return true }
        guard hasWildcard(boundARNs) else { return false }
        let full = try fullARN()
        return boundARNs.contains { $0.hasSuffix("*") && globMatch($0, full) }
    }
}

/// Request headers as Vault's `TypeHeader` field reads them: canonical names (Go's
/// `CanonicalMIMEHeaderKey`), each with its values, in the order given.
package struct IAMRequestHeaders: Sendable, Equatable {
    package private(set) var entries: [(name: String, values: [String])] = []
    private var size = 0
    private var count = 0

    package init() {}

    package static func == (a: IAMRequestHeaders, b: IAMRequestHeaders) -> Bool {
        a.entries.count == b.entries.count
            && zip(a.entries, b.entries).allSatisfy { $0.name == $1.name && $0.values == $1.values }
    }

    package var isEmpty: Bool { entries.isEmpty }

    /// Adds one value. Refused: a name that is not an HTTP token, a value with a line break or NUL
    /// (nothing the client sends can add a header line of its own to the request Coffer forwards),
    /// more than 100 values or 32 KiB in all.
    package mutating func add(_ name: String, _ value: String) throws(AWSAuthError) {
        let invalid = AWSAuthError("iam_request_headers holds a header name or value that HTTP does not allow")
        guard !name.isEmpty, Self.isToken(name),
            !value.utf8.contains(where: { $0 == 0x0D || $0 == 0x0A || $0 == 0x00 })
        else { throw invalid }
        size += name.utf8.count + value.utf8.count
        count += 1
        guard count <= 100, size <= 32 << 10 else {
            throw AWSAuthError("iam_request_headers is too large (at most 100 values, 32 KiB)")
        }
        let key = Self.canonical(name)
        if let index = entries.firstIndex(where: { $0.name == key }) {
            entries[index].values.append(value)
        } else {
            entries.append((key, [value]))
        }
    }

    /// The values of `name` (any case).
    package func values(_ name: String) -> [String]? {
        let key = Self.canonical(name)
        return entries.first { $0.name == key }?.values
    }

    /// Go's `textproto.CanonicalMIMEHeaderKey`: "x-vault-aws-iam-server-id" → "X-Vault-Aws-Iam-Server-Id";
    /// a name with a character outside the token set is left as it is.
    package static func canonical(_ name: String) -> String {
        let bytes = Array(name.utf8)
        guard isToken(name) else { return name }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var upper = true
        for b in bytes {
            var c = b
            if upper && c >= 0x61 && c <= 0x7A { c -= 0x20 } else if !upper && c >= 0x41 && c <= 0x5A { c += 0x20 }
            out.append(c)
            upper = c == UInt8(ascii: "-")
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func isToken(_ name: String) -> Bool {
        name.utf8.allSatisfy { b in
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A)
                || "!#$%&'*+-.^_`|~".utf8.contains(b)
        }
    }

    /// Reads `iam_request_headers` in the shapes Vault takes: a JSON object of strings or lists of
    /// strings; a string holding that object as JSON, or base64 of the JSON; a list of `name:value`.
    package init(field value: JSONValue) throws(AWSAuthError) {
        let invalid = AWSAuthError(
            "iam_request_headers must be a JSON object of header names and values, or its base64"
        )
        switch value {
        case .object(let object):
            try self.init(object: object)
        case .string(let text):
            var json: JSONValue? = nil
            if let decoded = Base64.decode(text.trimmingWhitespace()) {
                json = try? JSONValue.parse(decoded)
            }
            if json == nil { json = try? JSONValue.parse(text) }
            guard case .object(let object)? = json else { throw invalid }
            try self.init(object: object)
        case .array(let items):
            self.init()
            for item in items {
                guard case .string(let line) = item, let colon = line.firstIndex(of: ":") else { throw invalid }
                try add(
                    String(line[..<colon]).trimmingWhitespace(),
                    String(line[line.index(after: colon)...]).trimmingWhitespace()
                )
            }
        default:
            throw invalid
        }
    }

    private init(object: [String: JSONValue]) throws(AWSAuthError) {
        self.init()
        for name in object.keys.sorted() {
            switch object[name]! {
            case .string(let v):
                try add(name, v)
            case .array(let items):
                for item in items {
                    guard case .string(let v) = item else {
                        throw AWSAuthError(
                            "header \"\(name)\" in iam_request_headers must be a string or a list of strings"
                        )
                    }
                    try add(name, v)
                }
            default:
                throw AWSAuthError("header \"\(name)\" in iam_request_headers must be a string or a list of strings")
            }
        }
    }
}

/// The signed `sts:GetCallerIdentity` request a client sends to log in, checked as Vault checks it
/// before forwarding it.
package enum IAMLoginRequest {
    package static let serverIDHeader = "X-Vault-AWS-IAM-Server-ID"
    /// `X-Amz-*` headers every request may carry (Vault's `defaultAllowedSTSRequestHeaders`).
    static let defaultAllowedAmzHeaders = [
        "X-Amz-Algorithm", "X-Amz-Content-Sha256", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Security-Token",
        "X-Amz-Signature", "X-Amz-SignedHeaders", "X-Amz-User-Agent",
    ]

    /// The body must be `Action=GetCallerIdentity` and `Version=2011-06-15` (either order), nothing
    /// else: a signed request for any other action cannot be forwarded. Vault accepts any Version;
    /// Coffer only the one STS has.
    package static func validateBody(_ body: String) throws(AWSAuthError) {
        let invalid = AWSAuthError("iam request body is invalid")
        var action: [String] = []
        var version: [String] = []
        for pair in body.split(separator: "&", omittingEmptySubsequences: true) {
            if pair.contains(";") { throw invalid }
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let key = formDecode(kv[0]), let value = formDecode(kv.count > 1 ? kv[1] : "") else { throw invalid }
            switch key {
            case "Action": action.append(value)
            case "Version": version.append(value)
            default: throw invalid
            }
        }
        guard action == ["GetCallerIdentity"], version == ["2011-06-15"] else { throw invalid }
    }

    /// `application/x-www-form-urlencoded` decoding (Go's `QueryUnescape`); nil on a bad escape.
    static func formDecode(_ text: Substring) -> String? {
        var out: [UInt8] = []
        var bytes = Array(text.utf8)[...]
        while let b = bytes.popFirst() {
            switch b {
            case UInt8(ascii: "+"):
                out.append(UInt8(ascii: " "))
            case UInt8(ascii: "%"):
                guard bytes.count >= 2, let hi = hexValue(bytes.popFirst()!), let lo = hexValue(bytes.popFirst()!)
                else { return nil }
                out.append(hi << 4 | lo)
            default:
                out.append(b)
            }
        }
        return String(validating: out, as: UTF8.self)
    }

    static func hexValue(_ b: UInt8) -> UInt8? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): b - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): b - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): b - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// Vault's `validateVaultHeaderValue`: the header is present, equal to `required`, and named in
    /// the `SignedHeaders` of the `Authorization` header, so it cannot be changed without breaking
    /// the signature. Messages without the "error validating … header: " prefix.
    package static func validateServerID(_ headers: IAMRequestHeaders, required: String) throws(AWSAuthError) {
        let provided = headers.values(serverIDHeader)?.joined(separator: ",") ?? ""
        guard !provided.isEmpty else { throw AWSAuthError("missing header \"\(serverIDHeader)\"") }
        guard provided == required else { throw AWSAuthError("expected \"\(required)\" but got \"\(provided)\"") }
        guard let authorization = headers.values("Authorization") else {
            throw AWSAuthError("missing Authorization header")
        }
        let text = authorization.joined(separator: ",")
        // Vault's `.*SignedHeaders=([^,]+)`: the last occurrence, up to the next comma.
        guard let marker = text.ranges(of: "SignedHeaders=").last else {
            throw AWSAuthError("vault header wasn't signed")
        }
        let list = text[marker.upperBound...].prefix { $0 != "," }
        guard !list.isEmpty,
            list.split(separator: ";", omittingEmptySubsequences: false).contains(where: {
                $0 == serverIDHeader.lowercased()
            })
        else { throw AWSAuthError("vault header wasn't signed") }
    }

    /// Vault's `validateAllowedSTSHeaderValues`: an `X-Amz-*` header outside the default set and
    /// `allowed_sts_header_values` is refused.
    package static func validateAmzHeaders(_ headers: IAMRequestHeaders, allowed: [String]) throws(AWSAuthError) {
        for (name, _) in headers.entries {
            var h = name
            if h == "X-Amz-Signedheaders" { h = "X-Amz-SignedHeaders" }
            if h.hasPrefix("X-Amz-") && !defaultAllowedAmzHeaders.contains(h) && !allowed.contains(h) {
                throw AWSAuthError("invalid request header: \(name)")
            }
        }
    }
}

/// What STS answered to GetCallerIdentity.
package struct CallerIdentity: Sendable, Equatable {
    package var arn: String
    package var userID: String
    package var account: String

    package init(arn: String, userID: String, account: String) {
        self.arn = arn
        self.userID = userID
        self.account = account
    }

    /// Parses a `GetCallerIdentityResponse` document. Anything else — another root element, a
    /// missing result, a repeated field, a truncated or malformed document, more than 64 KiB —
    /// is refused with Vault's "error parsing STS response".
    package init(xml: [UInt8]) throws(AWSAuthError) {
        let failure = AWSAuthError("error parsing STS response")
        guard xml.count <= 64 << 10, let text = String(validating: xml, as: UTF8.self) else { throw failure }
        let trimmed = text.trimmingWhitespace()
        guard trimmed.hasPrefix("<GetCallerIdentityResponse") || trimmed.hasPrefix("<?xml") else { throw failure }
        guard let root = try? AWSXML.parse(trimmed), root.name == "GetCallerIdentityResponse",
            let result = root.child("GetCallerIdentityResult")
        else { throw failure }
        func field(_ name: String) throws(AWSAuthError) -> String {
            let found = result.children.filter { $0.name == name }
            guard found.count <= 1 else { throw failure }
            return found.first?.text ?? ""
        }
        arn = try field("Arn")
        userID = try field("UserId")
        account = try field("Account")
    }
}

extension StringProtocol {
    func trimmingWhitespace() -> String {
        var s = Substring(self)
        while s.first?.isWhitespace == true { s = s.dropFirst() }
        while s.last?.isWhitespace == true { s = s.dropLast() }
        return String(s)
    }
}
