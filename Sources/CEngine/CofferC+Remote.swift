// The C ABI on a remote handle: `coffer_open` with `{"remote": {...}}` gives a handle backed by a
// RemoteClient (docs/delivery.md) instead of a vault in this process. coffer_request, coffer_kv_get
// and coffer_metrics serve both kinds; the other functions refuse a remote handle with COFFER_EINVALID.
public import CCoffer
import Coffer

#if canImport(Glibc)
import Glibc
#endif

/// What a remote `coffer_t *` holds.
final class RemoteHandle: Sendable {
    let client: RemoteClient
    init(client: RemoteClient) { self.client = client }

    func metrics(_ format: MetricsFormat) -> String { client.metricsText(format) }
}

let remoteRefusal =
    "this function needs a local coffer handle; a remote handle (coffer_open with \"remote\") serves "
    + "coffer_request, coffer_request_ex, coffer_kv_get, coffer_metrics, coffer_last_source, coffer_degraded "
    + "and coffer_client_events"

/// `coffer_open` of `{"remote": {...}}`.
func openRemote(_ text: String, _ out: UnsafeMutablePointer<OpaquePointer?>) throws -> Int32 {
    let configuration = try RemoteConfiguration(json: Array(text.utf8))
    let client = try RemoteClient(configuration)
    guard let id = openHandles.withLock({ $0.insert(Handle(remote: RemoteHandle(client: client))) }),
        let pointer = OpaquePointer(bitPattern: id)
    else {
        client.close()
        return fail(COFFER_ENOMEM, "no address space left for a coffer handle id")
    }
    out.pointee = pointer
    return succeed()
}

/// `coffer_request` on a remote handle: the call as it is, with the handle's token unless one is
/// given; the answer's status and body as the server sent them.
func remoteRequest(
    _ remote: RemoteHandle,
    _ method: String,
    _ path: String,
    _ token: String?,
    _ body: inout [UInt8],
    _ opts: (wrapTTL: String?, clientAddress: String, namespace: String),
    _ httpStatus: UnsafeMutablePointer<Int32>,
    _ out: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>,
    _ outLength: UnsafeMutablePointer<Int>?
) -> Int32 {
    defer { body.wipe() }
    guard opts.clientAddress.isEmpty else {
        return fail(
            COFFER_EINVALID,
            "opts->client_address is not supported on a remote handle (the server sees the connection's address)"
        )
    }
    var response: RemoteResponse
    do {
        response = try remote.client.request(
            method,
            path,
            body: body,
            token: (token?.isEmpty ?? true) ? nil : token,
            namespace: opts.namespace.isEmpty ? nil : opts.namespace,
            wrapTTL: opts.wrapTTL
        )
    } catch {
        return fail(error)
    }
    defer { response.body.wipe() }
    if !response.body.isEmpty {
        guard let buffer = copyOut(response.body) else {
            return fail(COFFER_ENOMEM, "could not allocate \(response.body.count + 1) bytes for the response")
        }
        out.pointee = buffer
        outLength?.pointee = response.body.count
    }
    httpStatus.pointee = Int32(clamping: response.status)
    if let error = response.error { return fail(error) }
    return succeed()
}

/// `coffer_kv_get` on a remote handle: through the cache and the fallback chain with the handle's
/// token; with a token of the caller's, straight from the store (no cache, no fallback: the cache
/// holds what the handle's token may read).
func remoteKVGet(
    _ remote: RemoteHandle,
    _ mount: String,
    _ path: String,
    _ token: String?,
    _ version: Int64,
    _ dataJSON: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>,
    _ dataLength: UnsafeMutablePointer<Int>?,
    _ versionOut: UnsafeMutablePointer<Int64>?
) throws -> Int32 {
    guard version >= 0 else { return fail(COFFER_EINVALID, "version is \(version); use 0 for the current version") }
    let fields: [String: JSONValue]
    let found: Int?
    if let token, !token.isEmpty {
        var trimmed = Substring(mount)
        while trimmed.hasSuffix("/") { trimmed = trimmed.dropLast() }
        let full = "\(trimmed)/data/\(path)" + (version == 0 ? "" : "?version=\(version)")
        let response = try remote.client.request("GET", full, token: token)
        if response.status == 404 {
            return fail(COFFER_ENOTFOUND, "no secret at \(mount)/\(path) (never written, deleted or destroyed)")
        }
        if let error = response.error { return fail(error) }
        guard let data = response.json?["data"], let inner = data["data"]?.objectValue else {
            return fail(COFFER_EINTERNAL, "the store's answer for \(full) has no data.data object")
        }
        fields = inner
        found = data["metadata"]?["version"]?.intValue
    } else {
        let read = try remote.client.readKV(mount: mount, path: path, version: version == 0 ? nil : Int(version))
        fields = read.fields
        found = read.version
    }
    var body = JSONValue.object(fields).serialized()
    defer { body.wipe() }
    guard let buffer = copyOut(body) else {
        return fail(COFFER_ENOMEM, "could not allocate \(body.count + 1) bytes for the secret")
    }
    dataJSON.pointee = buffer
    dataLength?.pointee = body.count
    versionOut?.pointee = Int64(found ?? 0)
    return succeed()
}

@c @implementation
public func coffer_last_source(_ pointer: OpaquePointer?) -> Int32 {
    guarded("coffer_last_source") {
        let handle = try lookupAny(pointer)
        guard let remote = handle.remote else { return COFFER_SOURCE_STORE }
        switch remote.client.lastSource {
        case nil: return COFFER_SOURCE_NONE
        case .store: return COFFER_SOURCE_STORE
        case .cache: return COFFER_SOURCE_CACHE
        case .envFile: return COFFER_SOURCE_ENV_FILE
        case .environment: return COFFER_SOURCE_ENVIRONMENT
        }
    }
}

@c @implementation
public func coffer_degraded(_ pointer: OpaquePointer?) -> Int32 {
    guarded("coffer_degraded") {
        let handle = try lookupAny(pointer)
        return (handle.remote?.client.isDegraded ?? false) ? 1 : 0
    }
}

@c @implementation
public func coffer_client_events(
    _ pointer: OpaquePointer?,
    _ after: UInt64,
    _ out: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?,
    _ outLength: UnsafeMutablePointer<Int>?
) -> Int32 {
    out?.pointee = nil
    outLength?.pointee = 0
    guard let out else { return fail(COFFER_EINVALID, "out is NULL") }
    return guarded("coffer_client_events") {
        let handle = try lookupAny(pointer)
        let events = handle.remote?.client.recentEvents(after: after) ?? []
        let text = JSONValue.array(events.map(\.json)).serialized()
        guard let buffer = copyOut(text) else {
            return fail(COFFER_ENOMEM, "could not allocate \(text.count + 1) bytes for the events")
        }
        out.pointee = buffer
        outLength?.pointee = text.count
        return succeed()
    }
}
