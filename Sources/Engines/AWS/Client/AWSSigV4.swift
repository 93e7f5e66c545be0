package import CofferCore

/// AWS credentials: an access key pair, and the session token of temporary (STS) credentials.
/// `description` shows the access key ID only: the secret and the token never reach a log or an error.
package struct AWSCredentials: Sendable, Equatable, CustomStringConvertible {
    package var accessKeyID: String
    package var secretAccessKey: String
    /// The `X-Amz-Security-Token` of temporary credentials; nil or "" for long-term keys.
    package var sessionToken: String?

    package init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }

    package var description: String { "AWSCredentials(\(accessKeyID))" }
}

/// AWS Signature Version 4 (`AWS4-HMAC-SHA256`) for requests with the whole body in hand, as
/// botocore's `SigV4Auth` computes it: the canonical request (method, URI-encoded path, sorted and
/// encoded query, the signed headers lower-cased, trimmed and sorted, the body's SHA-256), the
/// string to sign over the scope `date/region/service/aws4_request`, and the key derived from
/// `"AWS4" + secret` through the date, region, service and `aws4_request`.
///
/// Signed headers: `host` (as ``HTTPClient`` sends it), `x-amz-date`, `x-amz-security-token` for
/// session credentials, and every header passed in (e.g. `content-type`).
/// Tests/EnginesTests/AWSTests.swift checks it against vectors botocore computed
/// (Tests/compat/aws_sigv4_vectors.py), and the moto compat tests have moto verify it on every call.
package enum AWSSigV4 {
    /// What signing produced: the headers to add to the request, and the intermediate texts (for tests).
    package struct Signed: Sendable {
        /// `X-Amz-Date`, `X-Amz-Security-Token` (session credentials) and `Authorization`.
        package var headers: [(String, String)]
        package var canonicalRequest: String
        package var stringToSign: String
        package var signature: String
        package var authorization: String
    }

    /// Signs a request for `url` (the full URL, query included, as it will be sent).
    /// `headers` are the request's own headers (not `Host`, which is derived from the URL unless `host`
    /// gives the one the request will carry).
    package static func sign(
        method: String,
        url: String,
        host: String? = nil,
        headers: [(String, String)] = [],
        body: [UInt8] = [],
        credentials: AWSCredentials,
        region: String,
        service: String,
        now: Timestamp
    ) -> Signed? {
        guard let parsed = HTTPClient.URL(url) else { return nil }
        let amzDate = amzDate(now)
        let day = String(amzDate.prefix(8))
        var signing: [(String, String)] = headers.map { ($0.0.lowercased(), $0.1) }
        signing.removeAll { ["authorization", "x-amz-date", "x-amz-security-token", "host"].contains($0.0) }
        var added: [(String, String)] = [("X-Amz-Date", amzDate)]
        signing.append(("host", host ?? parsed.hostHeader))
        signing.append(("x-amz-date", amzDate))
        if let token = credentials.sessionToken, !token.isEmpty {
            signing.append(("x-amz-security-token", token))
            added.append(("X-Amz-Security-Token", token))
        }
        // Header values: trimmed, inner runs of spaces collapsed; repeated names joined by ",".
        var byName: [String: [String]] = [:]
        for (name, value) in signing {
            let trimmed = value.split(whereSeparator: { $0 == " " || $0 == "\t" }).joined(separator: " ")
            byName[name, default: []].append(trimmed)
        }
        let names = byName.keys.sorted()
        let canonicalHeaders = names.map { "\($0):\(byName[$0]!.joined(separator: ","))\n" }.joined()
        let signedHeaders = names.joined(separator: ";")

        let (path, query) = splitTarget(parsed.target)
        let canonicalRequest = [
            method.uppercased(), canonicalPath(path), canonicalQuery(query), canonicalHeaders, signedHeaders,
            hex(Digest.sha256(body)),
        ].joined(separator: "\n")
        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let stringToSign = [
            "AWS4-HMAC-SHA256", amzDate, scope, hex(Digest.sha256(Array(canonicalRequest.utf8))),
        ].joined(separator: "\n")
        let key = signingKey(secret: credentials.secretAccessKey, day: day, region: region, service: service)
        let signature = hex(Digest.hmacSHA256(key: key, data: Array(stringToSign.utf8)))
        let authorization =
            "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyID)/\(scope), SignedHeaders=\(signedHeaders), Signature=\(signature)"
        added.append(("Authorization", authorization))
        return Signed(
            headers: added,
            canonicalRequest: canonicalRequest,
            stringToSign: stringToSign,
            signature: signature,
            authorization: authorization
        )
    }

    /// `kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, day), region), service), "aws4_request")`.
    package static func signingKey(secret: String, day: String, region: String, service: String) -> [UInt8] {
        var key = Digest.hmacSHA256(key: Array(("AWS4" + secret).utf8), data: Array(day.utf8))
        for part in [region, service, "aws4_request"] { key = Digest.hmacSHA256(key: key, data: Array(part.utf8)) }
        return key
    }

    /// `20261201T104500Z`: the `X-Amz-Date` form of `time` (UTC, whole seconds).
    package static func amzDate(_ time: Timestamp) -> String {
        let text = Timestamp(seconds: time.nanoseconds >= 0 ? time.seconds : time.seconds - 1).rfc3339
        return String(text.prefix(19).filter { $0 != "-" && $0 != ":" }) + "Z"
    }

    /// AWS's URI encoding: everything but `A-Z a-z 0-9 - _ . ~` as `%XX` (upper-case hex), space as `%20`.
    package static func uriEncode(_ text: String) -> String { HTTPClient.percentEncode(text, form: false) }

    /// The query protocol's body: `Action`, `Version` and the parameters, each name and value URI-encoded.
    package static func formBody(_ pairs: [(String, String)]) -> String {
        pairs.map { "\(uriEncode($0.0))=\(uriEncode($0.1))" }.joined(separator: "&")
    }

    static func splitTarget(_ target: String) -> (path: String, query: String) {
        guard let mark = target.firstIndex(of: "?") else { return (target, "") }
        return (String(target[..<mark]), String(target[target.index(after: mark)...]))
    }

    /// The path as sent, normalized (`.`/`..` segments, repeated `/`) and then encoded once more
    /// except for `/` and `~`: the canonical URI of every service but S3 (botocore does the same).
    static func canonicalPath(_ path: String) -> String {
        var segments: [Substring] = []
        for segment in path.split(separator: "/", omittingEmptySubsequences: true) {
            if segment == "." { continue }
            if segment == ".." {
                _ = segments.popLast()
                continue
            }
            segments.append(segment)
        }
        var normalized = "/" + segments.joined(separator: "/")
        if path.hasSuffix("/") && normalized != "/" { normalized += "/" }
        return normalized.split(separator: "/", omittingEmptySubsequences: false).map {
            uriEncode(String($0))
        }.joined(separator: "/")
    }

    /// The query as sent (already encoded), its `name=value` pairs sorted by name, then value.
    static func canonicalQuery(_ query: String) -> String {
        guard !query.isEmpty else { return "" }
        let pairs = query.split(separator: "&", omittingEmptySubsequences: false).map { pair -> (String, String) in
            guard let eq = pair.firstIndex(of: "=") else { return (String(pair), "") }
            return (String(pair[..<eq]), String(pair[pair.index(after: eq)...]))
        }
        return pairs.sorted {
            $0.0 != $1.0
                ? Array($0.0.utf8).lexicographicallyPrecedes(Array($1.0.utf8))
                : Array($0.1.utf8).lexicographicallyPrecedes(Array($1.1.utf8))
        }.map { "\($0.0)=\($0.1)" }.joined(separator: "&")
    }

    /// Lower-case hex, as signatures and payload hashes are written.
    package static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
