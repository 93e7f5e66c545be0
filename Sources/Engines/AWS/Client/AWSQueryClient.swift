package import CofferCore

#if canImport(Glibc)
import Glibc
#endif

/// A failed AWS call. ``description`` is in the AWS SDK's shape (`NoSuchEntity: The user with name
/// x cannot be found. status code: 404, request id: ...`), prefixed by the service and action; it
/// never holds the secret key or the session token (they are cut out of whatever the server said).
package struct AWSError: Error, Sendable, CustomStringConvertible {
    package enum Kind: Sendable, Equatable {
        /// No answer: the endpoint is unreachable, timed out, or not a URL.
        case transport
        /// AWS answered with an `<Error>`: ``code`` and ``message`` are its `<Code>` and `<Message>`.
        case service
        /// An answer that is not what the query protocol sends (not XML, no result).
        case response
    }

    package var kind: Kind
    /// "iam", "sts".
    package var service: String
    package var action: String
    /// The HTTP status; 0 without an answer.
    package var status: Int
    /// AWS's error code (`NoSuchEntity`, `AccessDenied`, `InvalidClientTokenId`...); "" unless `.service`.
    package var code: String
    package var message: String
    package var requestID: String

    package init(
        _ kind: Kind,
        service: String,
        action: String,
        status: Int = 0,
        code: String = "",
        message: String,
        requestID: String = ""
    ) {
        self.kind = kind
        self.service = service
        self.action = action
        self.status = status
        self.code = code
        self.message = message
        self.requestID = requestID
    }

    package var description: String {
        let what = "\(service.uppercased()) \(action)"
        switch kind {
        case .transport: return "\(what): \(message)"
        case .response: return "\(what): unexpected answer (status \(status)): \(message)"
        case .service:
            var text = "\(what): \(code): \(message) status code: \(status)"
            if !requestID.isEmpty { text += ", request id: \(requestID)" }
            return text
        }
    }

    /// Whether trying again may help: no answer, a 5xx, or throttling.
    package var isRetryable: Bool {
        switch kind {
        case .transport: return true
        case .response: return status >= 500
        case .service:
            return status >= 500
                || [
                    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
                    "TooManyRequestsException", "RequestLimitExceeded", "RequestThrottled", "SlowDown",
                    "PriorRequestNotComplete", "ServiceUnavailable", "InternalFailure", "InternalError",
                ].contains(code)
        }
    }
}

/// Calls to an AWS service that speaks the query protocol (IAM, STS): a form-encoded POST of
/// `Action`, `Version` and the parameters to the endpoint, signed with SigV4 (``AWSSigV4``), over
/// ``HTTPClient`` (`https://`, or `http://` for a local stand-in such as moto). The answer is the
/// parsed XML document; an `<Error>` answer becomes an ``AWSError`` with its code and message.
///
/// ```swift
/// let iam = AWSQueryClient(endpoint: "https://iam.amazonaws.com", region: "us-east-1", service: "iam",
///                          credentials: AWSCredentials(accessKeyID: id, secretAccessKey: secret))
/// let user = try iam.call(action: "GetUser", parameters: [("UserName", "alice")])
/// let arn = user.text("GetUserResult", "User", "Arn")
/// ```
///
/// Blocking, one connection per call. Retryable failures (no answer, 5xx, throttling) are tried
/// again up to ``maxRetries`` times with a short exponential back-off.
package struct AWSQueryClient: Sendable {
    package var endpoint: String
    /// The region in the signature's scope (IAM's global endpoint signs for us-east-1).
    package var region: String
    /// The signing name: "iam", "sts".
    package var service: String
    package var credentials: AWSCredentials
    /// The API version sent with each call: IAM 2010-05-08, STS 2011-06-15 by default.
    package var version: String
    /// Further tries after a retryable failure (the AWS SDK's default, 3).
    package var maxRetries: Int = 3
    /// Timeouts, size limits and the CA for `https://`.
    package var options = HTTPClient.Options()
    /// Where signing reads the time (tests pin it).
    package var clock: any WallClock = SystemClock()

    package init(endpoint: String, region: String, service: String, credentials: AWSCredentials, version: String? = nil)
    {
        self.endpoint = endpoint
        self.region = region
        self.service = service
        self.credentials = credentials
        self.version = version ?? AWSQueryClient.defaultVersions[service] ?? ""
        options.connectTimeout = 5
        options.ioTimeout = 15
        options.deadline = 30
    }

    package static let defaultVersions = ["iam": "2010-05-08", "sts": "2011-06-15"]

    /// IAM: `endpoint` or the global `https://iam.amazonaws.com` (then signed for us-east-1).
    package static func iam(
        _ credentials: AWSCredentials,
        region: String = "us-east-1",
        endpoint: String = ""
    )
        -> AWSQueryClient
    {
        endpoint.isEmpty
            ? AWSQueryClient(
                endpoint: "https://iam.amazonaws.com",
                region: "us-east-1",
                service: "iam",
                credentials: credentials
            )
            : AWSQueryClient(endpoint: endpoint, region: region, service: "iam", credentials: credentials)
    }

    /// STS: `endpoint`, else the regional `https://sts.<region>.amazonaws.com`, else (no region)
    /// the global `https://sts.amazonaws.com` signed for us-east-1.
    package static func sts(
        _ credentials: AWSCredentials,
        region: String = "",
        endpoint: String = ""
    )
        -> AWSQueryClient
    {
        if !endpoint.isEmpty {
            return AWSQueryClient(
                endpoint: endpoint,
                region: region.isEmpty ? "us-east-1" : region,
                service: "sts",
                credentials: credentials
            )
        }
        if region.isEmpty {
            return AWSQueryClient(
                endpoint: "https://sts.amazonaws.com",
                region: "us-east-1",
                service: "sts",
                credentials: credentials
            )
        }
        return AWSQueryClient(
            endpoint: "https://sts.\(region).amazonaws.com",
            region: region,
            service: "sts",
            credentials: credentials
        )
    }

    /// Calls `action` with `parameters` (names as the API spells them, lists flattened:
    /// `("PolicyArns.member.1.arn", ...)`), and returns the answer's root element
    /// (`<GetUserResponse>`). Throws ``AWSError`` for an `<Error>` answer, no answer or a
    /// malformed one.
    @discardableResult
    package func call(action: String, parameters: [(String, String)] = []) throws(AWSError) -> AWSXML {
        var attempt = 0
        while true {
            do {
                return try callOnce(action: action, parameters: parameters)
            } catch {
                guard error.isRetryable, attempt < maxRetries else { throw error }
                // 50 ms, 100 ms, 200 ms... up to 2 s.
                usleep(UInt32(min(2_000_000, 50_000 << min(attempt, 6))))
                attempt += 1
            }
        }
    }

    func callOnce(action: String, parameters: [(String, String)]) throws(AWSError) -> AWSXML {
        let body = Array(AWSSigV4.formBody([("Action", action), ("Version", version)] + parameters).utf8)
        let headers = [("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")]
        guard
            let signed = AWSSigV4.sign(
                method: "POST",
                url: endpoint,
                host: options.hostHeader,
                headers: headers,
                body: body,
                credentials: credentials,
                region: region,
                service: service,
                now: clock.now()
            )
        else {
            throw AWSError(
                .transport,
                service: service,
                action: action,
                message: "endpoint \"\(endpoint)\" is not an http:// or https:// URL"
            )
        }
        let response: HTTPClient.Response
        do {
            response = try HTTPClient.send(
                "POST",
                endpoint,
                headers: headers + signed.headers,
                body: body,
                options: options
            )
        } catch {
            throw AWSError(.transport, service: service, action: action, message: redact(error.message))
        }
        let xml: AWSXML
        do {
            xml = try AWSXML.parse(response.body)
        } catch {
            let snippet = String(decoding: response.body.prefix(200), as: UTF8.self)
            throw AWSError(
                .response,
                service: service,
                action: action,
                status: response.status,
                message: redact("\(error.message); the answer began \(snippet.debugDescription)")
            )
        }
        if let error = xml.first("Error"),
            !(200...299).contains(response.status) || xml.name.hasSuffix("ErrorResponse")
                || xml.name == "Response"
        {
            throw AWSError(
                .service,
                service: service,
                action: action,
                status: response.status,
                code: redact(error.text("Code") ?? ""),
                message: redact(error.text("Message") ?? ""),
                requestID: xml.text("RequestId") ?? xml.text("RequestID") ?? response.header("x-amzn-requestid") ?? ""
            )
        }
        guard (200...299).contains(response.status) else {
            throw AWSError(
                .response,
                service: service,
                action: action,
                status: response.status,
                message: "no <Error> in the answer"
            )
        }
        return xml
    }

    /// `text` without the secret key or the session token.
    func redact(_ text: String) -> String {
        var out = text
        for secret in [credentials.secretAccessKey, credentials.sessionToken ?? ""] where secret.count >= 4 {
            out = out.replacing(secret, with: "[redacted]")
        }
        return out
    }
}

extension AWSXML {
    /// `ResponseMetadata/RequestId` of an answer.
    package var requestID: String { text("ResponseMetadata", "RequestId") ?? "" }
}
