import Foundation
import Testing

/// The AWS IAM auth method's own checks: ARNs, binding, the signed request Coffer is asked to
/// forward, STS answers. The forwarding itself runs against moto in Tests/compat/test_auth_aws.py.
@Suite struct AWSAuthTests {
    // MARK: ARNs and binding

    @Test func arnsParseAsVaultParsesThem() throws {
        let user = try IAMEntity(arn: "arn:aws:iam::123456789012:user/team/dev/alice")
        #expect(user.type == "user" && user.path == "team/dev" && user.friendlyName == "alice")
        #expect(user.canonicalARN == "arn:aws:iam::123456789012:user/alice")

        let session = try IAMEntity(arn: "arn:aws:sts::123456789012:assumed-role/deployer/ci-run-7")
        #expect(
            session.type == "assumed-role" && session.friendlyName == "deployer" && session.sessionInfo == "ci-run-7"
        )
        #expect(session.canonicalARN == "arn:aws:iam::123456789012:role/deployer")
        #expect(try IAMEntity(arn: "arn:aws-cn:iam::1:role/x").canonicalARN == "arn:aws-cn:iam::1:role/x")

        let refusals: [(String, String)] = [
            ("arn:aws:iam::1", "unrecognized arn: contains 5 colon-separated parts, expected 6"),
            ("nra:aws:iam::1:user/a", "unrecognized arn: does not begin with \"arn:\""),
            ("arn:aws:ec2::1:user/a", "unrecognized service: ec2, not one of iam or sts"),
            ("arn:aws:iam::1:alice", "unrecognized arn: \"alice\" contains fewer than 2 slash-separated parts"),
            (
                "arn:aws:sts::1:assumed-role/r",
                "unrecognized arn: \"assumed-role/r\" contains fewer than 3 slash-separated parts"
            ),
            ("arn:aws:iam::1:group/admins", "unrecognized principal type: \"group\""),
        ]
        for (arn, message) in refusals {
            #expect(throws: AWSAuthError(message)) { try IAMEntity(arn: arn) }
        }
    }

    @Test func wildcardsMatchTheFullARNAndOnlyWhenNeeded() throws {
        #expect(IAMBinding.globMatch("arn:aws:iam::1:user/team/*", "arn:aws:iam::1:user/team/alice"))
        #expect(!IAMBinding.globMatch("arn:aws:iam::1:user/team/*", "arn:aws:iam::1:user/other/alice"))
        #expect(IAMBinding.globMatch("*", "anything"))
        #expect(!IAMBinding.globMatch("arn:aws:iam::1:user/alice", "arn:aws:iam::1:user/alice2"))

        var lookedUp = 0
        func allows(
            _ bound: [String],
            ids: [String] = [],
            resolve: Bool,
            full: String = "arn:aws:iam::1:user/team/alice"
        )
            throws -> Bool
        {
            try IAMBinding.allows(
                boundARNs: bound,
                boundIDs: ids,
                resolveUniqueIDs: resolve,
                uniqueID: "AIDAALICE",
                canonicalARN: "arn:aws:iam::1:user/alice"
            ) { () throws(AWSAuthError) -> String in
                lookedUp += 1
                return full
            }
        }
        // Without resolution: the canonical ARN (no path) is enough, IAM is not asked.
        #expect(try allows(["arn:aws:iam::1:user/alice"], resolve: false))
        #expect(lookedUp == 0)
        // With resolution the ARN alone is not: the unique ID pinned at role write must match.
        #expect(try !allows(["arn:aws:iam::1:user/alice"], ids: ["AIDAOTHER"], resolve: true))
        #expect(try allows(["arn:aws:iam::1:user/alice"], ids: ["AIDAALICE"], resolve: true))
        #expect(lookedUp == 0)
        // A wildcard is checked against the full ARN with its path, from IAM.
        #expect(try allows(["arn:aws:iam::1:user/team/*"], resolve: true))
        #expect(try !allows(["arn:aws:iam::1:user/ops/*"], resolve: false))
        #expect(lookedUp == 2)
        // A wildcard in the middle is not one.
        #expect(try !allows(["arn:aws:iam::1:*/alice"], resolve: false))
    }

    // MARK: The request to forward

    @Test func theBodyMustAskGetCallerIdentityAndNothingElse() throws {
        try IAMLoginRequest.validateBody("Action=GetCallerIdentity&Version=2011-06-15")
        try IAMLoginRequest.validateBody("Version=2011-06-15&Action=GetCallerIdentity")
        try IAMLoginRequest.validateBody("Action=Get%43allerIdentity&Version=2011-06-15")
        for body in [
            "Action=GetCallerIdentity&Version=2011-06-15&Extra=1", "Action=ListUsers&Version=2010-05-08",
            "Action=GetCallerIdentity&Action=GetCallerIdentity&Version=2011-06-15", "Action=GetCallerIdentity",
            "Action=GetCallerIdentity;Version=2011-06-15", "Action=GetCallerIdentity&Version=2011-06-15&%zz=1",
            "Action=AssumeRole&Version=2011-06-15&RoleArn=arn:aws:iam::1:role/admin", "",
        ] {
            #expect(throws: AWSAuthError("iam request body is invalid"), "\(body)") {
                try IAMLoginRequest.validateBody(body)
            }
        }
    }

    func headers(_ object: [String: JSONValue]) throws -> IAMRequestHeaders {
        try IAMRequestHeaders(field: .object(object))
    }

    static let signed =
        "AWS4-HMAC-SHA256 Credential=AKIA/20260101/us-east-1/sts/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-vault-aws-iam-server-id, Signature=abc"

    @Test func theServerIDHeaderMustBePresentSignedAndOurs() throws {
        let good = try headers(["X-Vault-AWS-IAM-Server-ID": ["vault.example"], "Authorization": .string(Self.signed)])
        try IAMLoginRequest.validateServerID(good, required: "vault.example")
        // Header names in any case, as Go canonicalises them.
        let lower = try headers(["x-vault-aws-iam-server-id": "vault.example", "authorization": .string(Self.signed)])
        try IAMLoginRequest.validateServerID(lower, required: "vault.example")

        #expect(throws: AWSAuthError("missing header \"X-Vault-AWS-IAM-Server-ID\"")) {
            try IAMLoginRequest.validateServerID(try headers(["Authorization": .string(Self.signed)]), required: "v")
        }
        #expect(throws: AWSAuthError("expected \"other.example\" but got \"vault.example\"")) {
            try IAMLoginRequest.validateServerID(good, required: "other.example")
        }
        #expect(throws: AWSAuthError("missing Authorization header")) {
            try IAMLoginRequest.validateServerID(try headers(["X-Vault-AWS-IAM-Server-ID": "v"]), required: "v")
        }
        let unsigned = Self.signed.replacingOccurrences(of: ";x-vault-aws-iam-server-id", with: "")
        #expect(throws: AWSAuthError("vault header wasn't signed")) {
            try IAMLoginRequest.validateServerID(
                try headers(["X-Vault-AWS-IAM-Server-ID": "v", "Authorization": .string(unsigned)]),
                required: "v"
            )
        }
        // A prefix of the name in SignedHeaders is not the name.
        let prefix = Self.signed.replacingOccurrences(of: "x-vault-aws-iam-server-id", with: "x-vault-aws-iam-server")
        #expect(throws: AWSAuthError("vault header wasn't signed")) {
            try IAMLoginRequest.validateServerID(
                try headers(["X-Vault-AWS-IAM-Server-ID": "v", "Authorization": .string(prefix)]),
                required: "v"
            )
        }
    }

    @Test func headersComeInVaultsShapes() throws {
        let object: JSONValue = ["Host": ["sts.amazonaws.com"], "x-amz-date": "20260101T000000Z"]
        let fromObject = try IAMRequestHeaders(field: object)
        #expect(fromObject.values("host") == ["sts.amazonaws.com"] && fromObject.values("X-Amz-Date") != nil)
        let text = String(decoding: object.serialized(), as: UTF8.self)
        #expect(try IAMRequestHeaders(field: .string(text)) == fromObject)
        #expect(try IAMRequestHeaders(field: .string(Base64.encode(Array(text.utf8)))) == fromObject)
        #expect(try IAMRequestHeaders(field: ["Host:sts.amazonaws.com", "X-Amz-Date: 20260101T000000Z"]) == fromObject)
        #expect(IAMRequestHeaders.canonical("x-vault-aws-iam-server-id") == "X-Vault-Aws-Iam-Server-Id")
        #expect(throws: AWSAuthError.self) { try IAMRequestHeaders(field: .string("not json")) }
        #expect(throws: AWSAuthError.self) { try IAMRequestHeaders(field: ["Host": 1]) }
        // No header line can be smuggled into the forwarded request.
        let smuggle = AWSAuthError("iam_request_headers holds a header name or value that HTTP does not allow")
        #expect(throws: smuggle) { try IAMRequestHeaders(field: ["X-A": "1\r\nX-Evil: 2"]) }
        #expect(throws: smuggle) { try IAMRequestHeaders(field: ["X-A\r\nX-Evil": "2"]) }
        #expect(throws: smuggle) { try IAMRequestHeaders(field: ["": "2"]) }
        #expect(throws: AWSAuthError("iam_request_headers is too large (at most 100 values, 32 KiB)")) {
            try IAMRequestHeaders(field: ["X-A": .array(Array(repeating: JSONValue.string("v"), count: 101))])
        }
        #expect(throws: AWSAuthError("invalid request header: X-Amz-Evil")) {
            try IAMLoginRequest.validateAmzHeaders(try headers(["X-Amz-Evil": "1"]), allowed: [])
        }
        try IAMLoginRequest.validateAmzHeaders(try headers(["X-Amz-Evil": "1"]), allowed: ["X-Amz-Evil"])
    }

    // MARK: STS answers

    static let answer = """
        <GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
          <GetCallerIdentityResult>
            <Arn>arn:aws:iam::123456789012:user/team/alice</Arn>
            <UserId>AIDAEXAMPLE</UserId>
            <Account>123456789012</Account>
          </GetCallerIdentityResult>
          <ResponseMetadata><RequestId>01234567-89ab</RequestId></ResponseMetadata>
        </GetCallerIdentityResponse>
        """

    @Test func aGetCallerIdentityAnswerParses() throws {
        let caller = try CallerIdentity(xml: Array(Self.answer.utf8))
        #expect(
            caller
                == CallerIdentity(
                    arn: "arn:aws:iam::123456789012:user/team/alice",
                    userID: "AIDAEXAMPLE",
                    account: "123456789012"
                )
        )
        let prolog = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- STS -->\n" + Self.answer
        #expect(try CallerIdentity(xml: Array(prolog.utf8)).userID == "AIDAEXAMPLE")
        let escaped = Self.answer.replacingOccurrences(of: "AIDAEXAMPLE", with: "AROA&amp;X:sess&#105;on")
        #expect(try CallerIdentity(xml: Array(escaped.utf8)).userID == "AROA&X:session")
    }

    @Test func hostileOrTruncatedAnswersAreRefused() throws {
        let refused = AWSAuthError("error parsing STS response")
        let cases: [String] = [
            String(Self.answer.prefix(Self.answer.count / 2)),  // truncated
            String(Self.answer.dropLast()),
            "",
            "<html><body>proxy error</body></html>",
            Self.answer.replacingOccurrences(of: "GetCallerIdentityResponse", with: "AssumeRoleResponse"),
            Self.answer.replacingOccurrences(of: "GetCallerIdentityResult", with: "Other"),
            // A second Arn: which one would be trusted? Neither.
            Self.answer.replacingOccurrences(
                of: "<UserId>",
                with: "<Arn>arn:aws:iam::123456789012:role/admin</Arn><UserId>"
            ),
            // A DTD (entity expansion) is never read.
            "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"aaaa\">]>" + Self.answer,
            Self.answer.replacingOccurrences(of: "<UserId>AIDAEXAMPLE</UserId>", with: "<UserId>&bogus;</UserId>"),
            Self.answer + "<trailing/>",
            String(repeating: "<a>", count: 100) + String(repeating: "</a>", count: 100),
            "<GetCallerIdentityResponse>" + String(repeating: "x", count: 70_000) + "</GetCallerIdentityResponse>",
        ]
        for text in cases {
            #expect(throws: refused, "\(text.prefix(80))") { try CallerIdentity(xml: Array(text.utf8)) }
        }
        #expect(throws: refused) { try CallerIdentity(xml: [0xFF, 0xFE, 0x3C]) }
    }

    // MARK: Through the wire form (no STS is reached: each is refused before forwarding)

    func setUp(_ h: Harness) {
        #expect(h.wire("POST", "sys/auth/aws", ["type": "aws"]).status == 204)
        #expect(
            h.wire(
                "POST",
                "auth/aws/config/client",
                [
                    "sts_endpoint": "http://127.0.0.1:9", "iam_endpoint": "http://127.0.0.1:9", "max_retries": 0,
                    "iam_server_id_header_value": "vault.example", "access_key": "AKIA1", "secret_key": "sk-1",
                ]
            ).status == 204
        )
    }

    func login(_ h: Harness, _ fields: [String: JSONValue]) -> (Int, [String]) {
        var body: [String: JSONValue] = [
            "iam_http_request_method": "POST",
            "iam_request_url": .string(Base64.encode(Array("https://sts.amazonaws.com/".utf8))),
            "iam_request_body": .string(Base64.encode(Array("Action=GetCallerIdentity&Version=2011-06-15".utf8))),
            "iam_request_headers": [
                "X-Vault-AWS-IAM-Server-ID": "vault.example", "Authorization": .string(Self.signed),
                "Host": "sts.amazonaws.com",
            ],
        ]
        for (k, v) in fields { body[k] = v }
        let answer = h.wire("POST", "auth/aws/login", .object(body), token: nil)
        return (answer.status, errors(answer.json))
    }

    @Test func loginsRefusedBeforeForwarding() throws {
        let h = try Harness()
        setUp(h)
        #expect(
            login(h, ["iam_http_request_method": "GET"]) == (
                400, ["invalid iam_http_request_method; currently only 'POST' is supported"]
            )
        )
        let extra = Base64.encode(Array("Action=GetCallerIdentity&Version=2011-06-15&RoleArn=x".utf8))
        #expect(login(h, ["iam_request_body": .string(extra)]) == (400, ["iam request body is invalid"]))
        #expect(login(h, ["iam_request_body": "%%%"]) == (400, ["failed to base64 decode iam_request_body"]))
        let query = Base64.encode(Array("https://sts.amazonaws.com/?Action=GetCallerIdentity".utf8))
        #expect(login(h, ["iam_request_url": .string(query)]) == (400, ["invalid request"]))
        #expect(
            login(h, ["iam_request_headers": ["Authorization": .string(Self.signed)]]) == (
                400, ["error validating X-Vault-AWS-IAM-Server-ID header: missing header \"X-Vault-AWS-IAM-Server-ID\""]
            )
        )
        let unsigned = Self.signed.replacingOccurrences(of: ";x-vault-aws-iam-server-id", with: "")
        #expect(
            login(
                h,
                [
                    "iam_request_headers": [
                        "X-Vault-AWS-IAM-Server-ID": "vault.example", "Authorization": .string(unsigned),
                    ]
                ]
            )
                == (400, ["error validating X-Vault-AWS-IAM-Server-ID header: vault header wasn't signed"])
        )
        #expect(
            h.wire("POST", "auth/aws/login", ["iam_http_request_method": "POST"], token: nil).status == 400
        )
        #expect(
            errors(h.wire("POST", "auth/aws/login", ["pkcs7": "MII"], token: nil).json).first?.contains("only iam")
                == true
        )
        // The secret key is never read back.
        let config = h.wire("GET", "auth/aws/config/client").json?["data"]?.objectValue ?? [:]
        #expect(config["secret_key"] == nil && config["sts_endpoint"] == "http://127.0.0.1:9")
    }

    @Test func thePathTableValidates() {
        #expect(AWSAuthBackend.paths.validate() == [])
    }

    @Test func rolesAreIAMOnly() throws {
        let h = try Harness()
        setUp(h)
        let arn: JSONValue = ["arn:aws:iam::1:user/alice"]
        #expect(
            h.wire(
                "POST",
                "auth/aws/role/a",
                ["bound_iam_principal_arn": arn, "resolve_aws_unique_ids": false, "token_policies": "p"]
            ).status == 204
        )
        let read = h.wire("GET", "auth/aws/role/A").json?["data"]
        #expect(
            read?["auth_type"] == "iam" && read?["bound_iam_principal_arn"] == arn && read?["token_policies"] == ["p"]
        )
        #expect(read?["resolve_aws_unique_ids"] == false && read?["role_id"]?.stringValue?.count == 36)
        #expect(
            errors(h.wire("POST", "auth/aws/role/b", ["auth_type": "ec2"]).json).first?.contains(
                "only the iam auth type"
            ) == true
        )
        #expect(
            errors(h.wire("POST", "auth/aws/role/b", ["resolve_aws_unique_ids": false]).json) == [
                "at least one bound parameter should be specified on the role"
            ]
        )
        // IAM cannot be reached (nothing listens at iam_endpoint): said, not guessed.
        let unresolved = errors(h.wire("POST", "auth/aws/role/c", ["bound_iam_principal_arn": arn]).json)
        #expect(
            unresolved.first?.hasPrefix("unable to resolve ARN \"arn:aws:iam::1:user/alice\" to internal ID: ") == true
        )
        #expect(h.wire("LIST", "auth/aws/role").json?["data"]?["keys"] == ["a"])
    }
}
