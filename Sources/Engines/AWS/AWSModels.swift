package import CofferCore

/// `config/root`: the key pair Coffer calls IAM and STS with, and where. The secret key lives only
/// here, in the barrier (seal-wrapped where the seal does it): no read returns it, no error quotes it.
struct AWSRootConfig: Sendable, Equatable {
    var accessKey = ""
    var secretKey = ""
    var region = ""
    var iamEndpoint = ""
    var stsEndpoint = ""
    var stsRegion = ""
    /// -1: the AWS SDK's default (3).
    var maxRetries = -1
    var usernameTemplate = ""

    var json: JSONValue {
        [
            "access_key": .string(accessKey), "secret_key": .string(secretKey), "region": .string(region),
            "iam_endpoint": .string(iamEndpoint), "sts_endpoint": .string(stsEndpoint),
            "sts_region": .string(stsRegion), "max_retries": .int(maxRetries),
            "username_template": .string(usernameTemplate),
        ]
    }

    init() {}

    init(json: JSONValue) {
        accessKey = json["access_key"]?.stringValue ?? ""
        secretKey = json["secret_key"]?.stringValue ?? ""
        region = json["region"]?.stringValue ?? ""
        iamEndpoint = json["iam_endpoint"]?.stringValue ?? ""
        stsEndpoint = json["sts_endpoint"]?.stringValue ?? ""
        stsRegion = json["sts_region"]?.stringValue ?? ""
        maxRetries = json["max_retries"]?.intValue ?? -1
        usernameTemplate = json["username_template"]?.stringValue ?? ""
    }
}

/// `config/lease`: the TTL and maximum TTL of `iam_user` credentials' leases (0: the mount's).
struct AWSLeaseConfig: Sendable, Equatable {
    var lease: Int64
    var leaseMax: Int64

    var json: JSONValue { ["lease": .int(lease), "lease_max": .int(leaseMax)] }

    init(lease: Int64, leaseMax: Int64) {
        self.lease = lease
        self.leaseMax = leaseMax
    }

    init(json: JSONValue) {
        lease = Int64(json["lease"]?.intValue ?? 0)
        leaseMax = Int64(json["lease_max"]?.intValue ?? 0)
    }
}

/// The kinds of credentials a role hands out.
enum AWSCredentialType: String, Sendable, CaseIterable {
    /// An IAM user with its own access key, deleted when the lease ends.
    case iamUser = "iam_user"
    /// `sts:AssumeRole` of one of the role's `role_arns`.
    case assumedRole = "assumed_role"
    /// `sts:GetFederationToken` with the role's policies.
    case federationToken = "federation_token"
    /// `sts:GetSessionToken`: temporary credentials of Coffer's own IAM user.
    case sessionToken = "session_token"

    var isSTS: Bool { self != .iamUser }
}

/// A role, stored at `role/<name>` in Vault's field names.
struct AWSRole: Sendable, Equatable {
    var credentialType: AWSCredentialType = .iamUser
    var policyARNs: [String] = []
    var roleARNs: [String] = []
    /// Compacted JSON, "" for none.
    var policyDocument = ""
    var iamGroups: [String] = []
    var iamTags: [String: String] = [:]
    var sessionTags: [String: String] = [:]
    var externalID = ""
    var defaultSTSTTL: Int64 = 0
    var maxSTSTTL: Int64 = 0
    var userPath = ""
    var permissionsBoundaryARN = ""
    var mfaSerialNumber = ""

    var json: JSONValue { .object(fields(emptyAsNull: false)) }

    /// The role's fields; with `emptyAsNull`, lists and maps never set are null (as Vault's read shows
    /// its Go nil slices), else empty (the stored form).
    private func fields(emptyAsNull: Bool) -> [String: JSONValue] {
        func list(_ v: [String]) -> JSONValue { emptyAsNull && v.isEmpty ? .null : .array(v.map { .string($0) }) }
        func map(_ v: [String: String]) -> JSONValue {
            emptyAsNull && v.isEmpty ? .null : .object(v.mapValues { .string($0) })
        }
        return [
            "credential_type": .string(credentialType.rawValue), "policy_arns": list(policyARNs),
            "role_arns": list(roleARNs), "policy_document": .string(policyDocument), "iam_groups": list(iamGroups),
            "iam_tags": map(iamTags), "session_tags": map(sessionTags), "external_id": .string(externalID),
            "default_sts_ttl": .int(Int(defaultSTSTTL)), "max_sts_ttl": .int(Int(maxSTSTTL)),
            "user_path": .string(userPath), "permissions_boundary_arn": .string(permissionsBoundaryARN),
            "mfa_serial_number": .string(mfaSerialNumber),
        ]
    }

    init() {}

    init(json: JSONValue) {
        func strings(_ key: String) -> [String] { (json[key]?.arrayValue ?? []).compactMap(\.stringValue) }
        func map(_ key: String) -> [String: String] {
            guard case .object(let o)? = json[key] else { return [:] }
            return o.compactMapValues(\.stringValue)
        }
        credentialType = AWSCredentialType(rawValue: json["credential_type"]?.stringValue ?? "") ?? .iamUser
        policyARNs = strings("policy_arns")
        roleARNs = strings("role_arns")
        policyDocument = json["policy_document"]?.stringValue ?? ""
        iamGroups = strings("iam_groups")
        iamTags = map("iam_tags")
        sessionTags = map("session_tags")
        externalID = json["external_id"]?.stringValue ?? ""
        defaultSTSTTL = Int64(json["default_sts_ttl"]?.intValue ?? 0)
        maxSTSTTL = Int64(json["max_sts_ttl"]?.intValue ?? 0)
        userPath = json["user_path"]?.stringValue ?? ""
        permissionsBoundaryARN = json["permissions_boundary_arn"]?.stringValue ?? ""
        mfaSerialNumber = json["mfa_serial_number"]?.stringValue ?? ""
    }

    /// Vault's read: lists and maps never set are null, as Vault's Go nil slices are.
    var responseData: [String: JSONValue] { fields(emptyAsNull: true) }

    /// Every problem with the role, in Vault's words, plus one of Coffer's own: an `assumed_role`
    /// without `role_arns` could never issue anything.
    var problems: [String] {
        var out: [String] = []
        let sts = credentialType.isSTS
        if defaultSTSTTL != 0 && !sts {
            out.append(
                "default_sts_ttl parameter only valid for assumed_role, federation_token, and session_token credential types"
            )
        }
        if maxSTSTTL != 0 && !sts {
            out.append(
                "max_sts_ttl parameter only valid for assumed_role, federation_token, and session_token credential types"
            )
        }
        if maxSTSTTL > 0 && defaultSTSTTL > 0 && defaultSTSTTL > maxSTSTTL {
            out.append(#""default_sts_ttl" value must be less than or equal to "max_sts_ttl" value"#)
        }
        if !userPath.isEmpty {
            if credentialType != .iamUser { out.append("user_path parameter only valid for iam_user credential type") }
            if !AWSRole.validUserPath(userPath) {
                out.append(
                    #"the specified value for user_path is invalid. It must match "^\/([\x21-\x7F]{0,510}\/)?$" regexp"#
                )
            }
        }
        if !permissionsBoundaryARN.isEmpty {
            if credentialType != .iamUser {
                out.append("cannot supply permissions_boundary_arn when credential_type isn't iam_user")
            }
            if let problem = AWSRole.managedPolicyProblem(permissionsBoundaryARN) {
                out.append("invalid permissions_boundary_arn parameter: \(problem)")
            }
        }
        if (!policyDocument.isEmpty || !policyARNs.isEmpty) && credentialType == .sessionToken {
            out.append("cannot supply a policy or role when using credential_type session_token")
        }
        if !roleARNs.isEmpty && credentialType != .assumedRole {
            out.append("cannot supply role_arns when credential_type isn't assumed_role")
        }
        if roleARNs.isEmpty && credentialType == .assumedRole {
            out.append("role_arns must name at least one role to assume when credential_type is assumed_role")
        }
        if !sessionTags.isEmpty && credentialType != .assumedRole {
            out.append("cannot supply session_tags when credential_type isn't assumed_role")
        }
        if !externalID.isEmpty && credentialType != .assumedRole {
            out.append("cannot supply external_id when credential_type isn't assumed_role")
        }
        return out
    }

    /// `^\/([\x21-\x7F]{0,510}\/)?$`.
    static func validUserPath(_ path: String) -> Bool {
        let bytes = Array(path.utf8)
        if bytes == [0x2F] { return true }
        guard bytes.count >= 2, bytes.count <= 512, bytes.first == 0x2F, bytes.last == 0x2F else { return false }
        return bytes.allSatisfy { (0x21...0x7F).contains($0) }
    }

    /// Vault's check of a managed policy's ARN: `arn:partition:iam::account:policy/...`.
    static func managedPolicyProblem(_ arn: String) -> String? {
        let parts = arn.split(separator: ":", maxSplits: 5, omittingEmptySubsequences: false)
        guard parts.count == 6, parts[0] == "arn" else { return "arn: invalid prefix" }
        guard parts[2] == "iam" else { return "expected a service of iam but got \(parts[2])" }
        guard parts[5].hasPrefix("policy/") else { return "expected a resource type of policy but got \(parts[5])" }
        return nil
    }
}

/// JSON text without the white space between tokens, keys in their order (Go's `json.Compact`,
/// which Vault stores policy documents through); nil unless `text` is one valid JSON value.
func compactJSON(_ text: String) -> String? {
    guard (try? JSONValue.parse(text)) != nil else { return nil }
    var out: [UInt8] = []
    var inString = false
    var escaped = false
    for byte in text.utf8 {
        if inString {
            out.append(byte)
            if escaped {
                escaped = false
            } else if byte == UInt8(ascii: "\\") {
                escaped = true
            } else if byte == UInt8(ascii: "\"") {
                inString = false
            }
            continue
        }
        switch byte {
        case 0x20, 0x09, 0x0A, 0x0D: continue
        case UInt8(ascii: "\""): inString = true
        default: break
        }
        out.append(byte)
    }
    return String(decoding: out, as: UTF8.self)
}
