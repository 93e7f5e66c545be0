import Coffer
import HTTPTypes
import NIOPosix

/// A request a standby sends whole to its cluster's active node (docs/raft.md, "Standbys"): the
/// method, target, the headers that carry meaning to the core, and the body.
struct ForwardedRequest: Sendable {
    let method: String
    let target: String
    let headers: [(String, String)]
    let body: [UInt8]

    /// Headers the active node needs: the token, namespace, wrapping, content type, and what the client
    /// asked of consistency. Hop-by-hop headers and the client's Host stay behind.
    static let carried: [HTTPField.Name] = [
        HTTPField.Name("X-Vault-Token")!, HTTPField.Name("X-Vault-Namespace")!, HTTPField.Name("X-Vault-Wrap-TTL")!,
        HTTPField.Name("X-Vault-Request")!, HTTPField.Name("X-Vault-Index")!, .authorization, .contentType,
    ]

    init(method: String, target: String, headers: HTTPFields, body: [UInt8]) {
        self.method = method
        self.target = target
        self.headers = Self.carried.compactMap { name in headers[name].map { (name.rawName, $0) } }
        self.body = body
    }

    /// Sends it on NIO's blocking pool (the exchange blocks a thread) and returns the active node's answer.
    func send(through cluster: RaftCluster) async -> WireResponder.Answer {
        do {
            let answer = try await NIOThreadPool.singleton.runIfActive { [self] in
                cluster.forward(method: method, target: target, headers: headers, body: body)
            }
            let contentType = answer.headers.first { $0.0 == "content-type" }?.1
            let json = contentType == nil || contentType?.hasPrefix("application/json") == true
            var out: [UInt8]? = answer.body.isEmpty ? nil : answer.body
            // The active node's JSON body ends with the newline Go's encoder writes; ours adds one.
            if json, out?.last == 10 { out?.removeLast() }
            let extra = answer.headers.filter { $0.0 != "content-type" }
            return (answer.status, out, false, json ? nil : contentType, extra)
        } catch {
            return WireResponder.error(503, "the server is shutting down")
        }
    }
}
