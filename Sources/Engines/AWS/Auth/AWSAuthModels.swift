import CofferCore
package import CofferFramework

/// `config/client`: the credentials and endpoints the method uses (Vault's `clientConfig`).
/// `secret_key` is stored (seal-wrapped) and never read back.
package struct AWSAuthClientConfig: Sendable, Equatable {
    package var accessKey = ""
    package var secretKey = ""
    package var endpoint = ""
    package var iamEndpoint = ""
    package var stsEndpoint = ""
    package var stsRegion = ""
    package var useSTSRegionFromClient = false
    package var iamServerIDHeaderValue = ""
    package var allowedSTSHeaderValues: [String] = []
    /// -1: the AWS SDK's default (3 retries).
    package var maxRetries = -1

    package init() {}

    static let fields: [Field] = [
        .string("access_key"), .string("secret_key"), .string("endpoint"), .string("iam_endpoint"),
        .string("sts_endpoint"), .string("sts_region"), .bool("use_sts_region_from_client"),
        .string("iam_server_id_header_value"), .strings("allowed_sts_header_values"), .int("max_retries", -1...100),
    ]

    mutating func update(from f: FieldData) throws(CofferError) {
        if let v = f.string("access_key") { accessKey = v }
        if let v = f.string("secret_key") { secretKey = v }
        if let v = f.string("endpoint") { endpoint = v }
        if let v = f.string("iam_endpoint") { iamEndpoint = try Self.checkedURL(v, "iam_endpoint") }
        if let v = f.string("sts_endpoint") { stsEndpoint = try Self.checkedURL(v, "sts_endpoint") }
        if let v = f.string("sts_region") { stsRegion = v }
        if let v = f.bool("use_sts_region_from_client") {
            guard !v else {
                throw CofferError.invalid(
                    "use_sts_region_from_client is not supported by Coffer: set sts_endpoint (and sts_region) to the regional STS endpoint"
                )
            }
            useSTSRegionFromClient = v
        }
        if let v = f.string("iam_server_id_header_value") { iamServerIDHeaderValue = v }
        if let v = f.strings("allowed_sts_header_values") {
            allowedSTSHeaderValues = v.map { IAMRequestHeaders.canonical($0.trimmingWhitespace()) }.filter {
                !$0.isEmpty
            }
        }
        if let v = f.int("max_retries") { maxRetries = v }
    }

    static func checkedURL(_ text: String, _ field: String) throws(CofferError) -> String {
        guard text.isEmpty || HTTPClient.URL(text) != nil else {
            throw CofferError.invalid("\(field) must be an http:// or https:// URL")
        }
        return text
    }

    var stored: JSONValue {
        .object([
            "access_key": .string(accessKey), "secret_key": .string(secretKey), "endpoint": .string(endpoint),
            "iam_endpoint": .string(iamEndpoint), "sts_endpoint": .string(stsEndpoint),
            "sts_region": .string(stsRegion), "use_sts_region_from_client": .bool(useSTSRegionFromClient),
            "iam_server_id_header_value": .string(iamServerIDHeaderValue),
            "allowed_sts_header_values": .array(allowedSTSHeaderValues.map { .string($0) }),
            "max_retries": .int(maxRetries),
        ])
    }

    /// What a read shows: everything but the secret key.
    var readable: [String: JSONValue] {
        var data = stored.objectValue ?? [:]
        data["secret_key"] = nil
        return data
    }

    init(json: [String: JSONValue]) {
        func s(_ k: String) -> String { json[k]?.stringValue ?? "" }
        accessKey = s("access_key")
        secretKey = s("secret_key")
        endpoint = s("endpoint")
        iamEndpoint = s("iam_endpoint")
        stsEndpoint = s("sts_endpoint")
        stsRegion = s("sts_region")
        useSTSRegionFromClient = json["use_sts_region_from_client"]?.boolValue ?? false
        iamServerIDHeaderValue = s("iam_server_id_header_value")
        allowedSTSHeaderValues = (json["allowed_sts_header_values"]?.arrayValue ?? []).compactMap(\.stringValue)
        maxRetries = json["max_retries"]?.intValue ?? -1
    }
}

/// `config/identity`: what the entity alias is (`iam_alias`) and which fields the token's
/// metadata carries (`iam_metadata`), as Vault's authmetadata handler.
package struct AWSAuthIdentityConfig: Sendable, Equatable {
    static let aliasValues = ["role_id", "unique_id", "full_arn"]
    static let defaultMetadata = ["account_id", "auth_type"]
    static let availableMetadata = [
        "canonical_arn", "client_arn", "client_user_id", "inferred_aws_region", "inferred_entity_id",
        "inferred_entity_type",
    ]

    package var iamAlias = "role_id"
    package var iamMetadata = AWSAuthIdentityConfig.defaultMetadata

    package init() {}

    static let fields: [Field] = [
        .string("iam_alias"), .strings("iam_metadata"), .string("ec2_alias"), .strings("ec2_metadata"),
    ]

    mutating func update(from f: FieldData) throws(CofferError) {
        if let v = f.string("iam_alias") {
            guard Self.aliasValues.contains(v) else {
                throw CofferError.invalid(
                    "iam_alias of \"\(v)\" not in set of allowed values: [\(Self.aliasValues.joined(separator: " "))]"
                )
            }
            iamAlias = v
        }
        if let v = f.string("ec2_alias"), v != "role_id" {
            throw CofferError.invalid("ec2_alias: Coffer's aws auth method supports only the iam auth type")
        }
        if let v = f.strings("iam_metadata") {
            var fields: [String] = []
            for name in v.map({ $0.trimmingWhitespace() }) where !name.isEmpty {
                if name == "default" {
                    fields += Self.defaultMetadata
                } else if Self.defaultMetadata.contains(name) || Self.availableMetadata.contains(name) {
                    fields.append(name)
                } else {
                    let all = (Self.defaultMetadata + Self.availableMetadata).joined(separator: " ")
                    throw CofferError.invalid(
                        "\"iam_metadata\" contains an unavailable field, please select from \"\(all)\""
                    )
                }
            }
            iamMetadata = Array(Set(fields)).sorted()
        }
    }

    var json: [String: JSONValue] {
        [
            "iam_alias": .string(iamAlias), "iam_metadata": .array(iamMetadata.map { .string($0) }),
            "ec2_alias": .string("role_id"),
            "ec2_metadata": .array(Self.defaultMetadata.map { .string($0) }),
        ]
    }

    init(json: [String: JSONValue]) {
        iamAlias = json["iam_alias"]?.stringValue ?? "role_id"
        iamMetadata = (json["iam_metadata"]?.arrayValue ?? []).compactMap(\.stringValue)
        if json["iam_metadata"] == nil { iamMetadata = Self.defaultMetadata }
    }
}

/// `role/<name>` of auth type `iam`.
package struct AWSAuthRole: Sendable, Equatable {
    package var roleID = ""
    package var boundARNs: [String] = []
    /// The unique IDs (AIDA…, AROA…) of the non-wildcard bound ARNs, looked up when the role is
    /// written with `resolve_aws_unique_ids`: a principal deleted and re-created under the same
    /// name gets a new ID and no longer matches.
    package var boundIDs: [String] = []
    package var resolveUniqueIDs = true
    package var token = TokenParameters()

    package init() {}

    /// Fields Vault accepts only for the ec2 auth type (or when inferring an EC2 instance).
    static let ec2ListFields = [
        "bound_ami_id", "bound_account_id", "bound_iam_role_arn", "bound_iam_instance_profile_arn",
        "bound_ec2_instance_id", "bound_vpc_id", "bound_subnet_id",
    ]

    static let fields: [Field] =
        [
            .string("auth_type"), .strings("bound_iam_principal_arn"), .bool("resolve_aws_unique_ids"),
            .strings("bound_region"), .string("inferred_entity_type"), .string("inferred_aws_region"),
            .string("role_tag"), .bool("disallow_reauthentication"), .bool("allow_instance_migration"),
            .strings("policies"),
        ] + ec2ListFields.map { Field.strings($0) } + TokenParameters.fields

    var json: [String: JSONValue] {
        var object = token.json
        object["role_id"] = .string(roleID)
        object["auth_type"] = .string("iam")
        object["bound_iam_principal_arn"] = .array(boundARNs.map { .string($0) })
        object["bound_iam_principal_id"] = .array(boundIDs.map { .string($0) })
        object["resolve_aws_unique_ids"] = .bool(resolveUniqueIDs)
        return object
    }

    /// A read: the stored fields plus Vault's ec2 ones, empty.
    var readable: [String: JSONValue] {
        var data = json
        for name in Self.ec2ListFields + ["bound_region"] { data[name] = .array([]) }
        data["inferred_entity_type"] = .string("")
        data["inferred_aws_region"] = .string("")
        data["disallow_reauthentication"] = .bool(false)
        data["allow_instance_migration"] = .bool(false)
        data["role_tag"] = .string("")
        data["policies"] = data["token_policies"]
        return data
    }

    init(json: [String: JSONValue]) {
        roleID = json["role_id"]?.stringValue ?? ""
        boundARNs = (json["bound_iam_principal_arn"]?.arrayValue ?? []).compactMap(\.stringValue)
        boundIDs = (json["bound_iam_principal_id"]?.arrayValue ?? []).compactMap(\.stringValue)
        resolveUniqueIDs = json["resolve_aws_unique_ids"]?.boolValue ?? true
        token = TokenParameters(json: json)
    }
}
