// The C ABI: include/coffer.h implemented in Swift. Each function is `@c @implementation`, so the
// compiler checks its Swift signature against the header's prototype; the header is the contract.
//
// Nothing may trap across this boundary: every pointer is checked for NULL, every C string for UTF-8,
// every size for range, and every CofferError becomes a status code and a thread-local message.
public import CCoffer
import Coffer
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

// MARK: Versions

/// The library version, in static storage for `coffer_version`. include/coffer.h's COFFER_VERSION
/// and CofferVersion.versionString say the same; bindings/c's test checks the three agree.
private let versionText: StaticString = "0.1.0"

@c @implementation
public func coffer_version() -> UnsafePointer<CChar>? {
    UnsafeRawPointer(versionText.utf8Start).assumingMemoryBound(to: CChar.self)
}

@c @implementation
public func coffer_abi_version() -> Int32 { COFFER_ABI_VERSION }

// MARK: Errors

/// `coffer_strerror`'s strings, made once from CofferError.Code's descriptions (the one table of
/// codes) and never freed. Stored as addresses because raw pointers are not Sendable.
private let statusTexts: [Int32: UInt] = {
    var table: [Int32: UInt] = [COFFER_OK: UInt(bitPattern: strdup("ok"))]
    for code in CofferError.Code.all { table[code.cStatus] = UInt(bitPattern: strdup(code.description)) }
    return table
}()
private let unknownStatus: StaticString = "unknown status"

@c @implementation
public func coffer_strerror(_ status: Int32) -> UnsafePointer<CChar>? {
    if let address = statusTexts[status], let text = UnsafePointer<CChar>(bitPattern: address) { return text }
    return UnsafeRawPointer(unknownStatus.utf8Start).assumingMemoryBound(to: CChar.self)
}

/// The thread-local last error: a malloc'ed C string per thread, freed when the thread exits.
private let lastErrorKey: pthread_key_t = {
    var key = pthread_key_t()
    pthread_key_create(&key) { free($0) }
    return key
}()
private let emptyText: StaticString = ""

@c @implementation
public func coffer_errmsg() -> UnsafePointer<CChar>? {
    if let text = pthread_getspecific(lastErrorKey) { return UnsafePointer(text.assumingMemoryBound(to: CChar.self)) }
    return UnsafeRawPointer(emptyText.utf8Start).assumingMemoryBound(to: CChar.self)
}

/// The thread-local retry time of the last rate-limit refusal, kept in the slot's pointer bits as
/// seconds + 1 (no allocation; an empty slot is -1).
private let retryAfterKey: pthread_key_t = {
    var key = pthread_key_t()
    pthread_key_create(&key, nil)
    return key
}()

@c @implementation
public func coffer_retry_after() -> Int32 {
    guard let slot = pthread_getspecific(retryAfterKey) else { return -1 }
    return Int32(clamping: Int(bitPattern: slot) - 1)
}

private func setRetryAfter(_ seconds: Int?) {
    guard let seconds else {
        if pthread_getspecific(retryAfterKey) != nil { pthread_setspecific(retryAfterKey, nil) }
        return
    }
    pthread_setspecific(retryAfterKey, UnsafeRawPointer(bitPattern: min(max(seconds, 0), Int(Int32.max)) + 1))
}

/// Records `message` as this thread's last error and returns `status`.
func fail(_ status: Int32, _ message: String, retryAfter: Int? = nil) -> Int32 {
    free(pthread_getspecific(lastErrorKey))
    pthread_setspecific(lastErrorKey, message.withCString { strdup($0) })
    setRetryAfter(retryAfter)
    return status
}

func fail(_ error: CofferError) -> Int32 {
    fail(error.code.cStatus, error.message, retryAfter: error.code == .rateLimited ? error.retryAfter : nil)
}

/// Clears this thread's last error and returns COFFER_OK.
func succeed() -> Int32 {
    pthread_getspecific(lastErrorKey)?.storeBytes(of: 0, as: UInt8.self)
    setRetryAfter(nil)
    return COFFER_OK
}

// MARK: Arguments

/// Why an argument was refused; becomes COFFER_EINVALID with this message.
struct ArgumentError: Error {
    let message: String
}

/// A required NUL-terminated UTF-8 argument.
func string(_ pointer: UnsafePointer<CChar>?, _ name: String) throws(ArgumentError) -> String {
    guard let pointer else { throw ArgumentError(message: "\(name) is NULL") }
    guard let text = String(validatingCString: pointer) else {
        throw ArgumentError(message: "\(name) is not valid UTF-8")
    }
    return text
}

/// An optional NUL-terminated UTF-8 argument (NULL gives nil).
func optionalString(_ pointer: UnsafePointer<CChar>?, _ name: String) throws(ArgumentError) -> String? {
    guard pointer != nil else { return nil }
    return try string(pointer, name)
}

/// A byte buffer argument: `count` bytes at `pointer`; NULL only with a count of 0.
func bytes(_ pointer: UnsafePointer<CChar>?, _ count: Int, _ name: String) throws(ArgumentError) -> [UInt8] {
    guard count >= 0 else { throw ArgumentError(message: "\(name)_len is larger than the address space") }
    guard count > 0 else { return [] }
    guard let pointer else { throw ArgumentError(message: "\(name) is NULL but \(name)_len is \(count)") }
    return Array(UnsafeRawBufferPointer(start: pointer, count: count))
}

/// Runs the body of an exported function: an argument error becomes COFFER_EINVALID, a CofferError
/// its own status, anything else COFFER_EINTERNAL naming `function`. Nothing is thrown across the C boundary.
func guarded(_ function: StaticString, _ body: () throws -> Int32) -> Int32 {
    do {
        return try body()
    } catch let error as ArgumentError {
        return fail(COFFER_EINVALID, error.message)
    } catch let error as CofferError {
        return fail(error)
    } catch {
        return fail(COFFER_EINTERNAL, "\(function): unexpected error")
    }
}

/// A borrowed byte buffer argument (no copy): `count` bytes at `pointer`; NULL only with a count of 0.
private func rawBuffer(
    _ pointer: UnsafeRawPointer?,
    _ count: Int,
    _ name: String
) throws(ArgumentError) -> UnsafeRawBufferPointer {
    guard count >= 0 else { throw ArgumentError(message: "\(name)_len is larger than the address space") }
    guard count > 0 else { return UnsafeRawBufferPointer(start: nil, count: 0) }
    guard let pointer else { throw ArgumentError(message: "\(name) is NULL but \(name)_len is \(count)") }
    return UnsafeRawBufferPointer(start: pointer, count: count)
}

/// Copies `bytes` into a new malloc'ed, NUL-terminated buffer for the caller to coffer_free.
func copyOut(_ bytes: [UInt8]) -> UnsafeMutablePointer<CChar>? { copyOut(bytes[...]) }

func copyOut(_ bytes: ArraySlice<UInt8>) -> UnsafeMutablePointer<CChar>? {
    guard let buffer = malloc(bytes.count + 1) else { return nil }
    bytes.withUnsafeBytes { UnsafeMutableRawBufferPointer(start: buffer, count: bytes.count).copyMemory(from: $0) }
    buffer.storeBytes(of: 0, toByteOffset: bytes.count, as: UInt8.self)
    return buffer.assumingMemoryBound(to: CChar.self)
}

// MARK: Handles

/// What a `coffer_t *` stands for. The vault is closed when the last reference goes: after
/// `coffer_close` and after every call still running on it has returned.
final class Handle: Sendable {
    /// nil only for a remote handle, which ``lookup(_:)`` never returns (CofferC+Remote.swift).
    let vault: Vault!
    let remote: RemoteHandle?
    init(vault: Vault) {
        self.vault = vault
        remote = nil
    }
    init(remote: RemoteHandle) {
        vault = nil
        self.remote = remote
    }
    deinit {
        vault?.close()
        remote?.client.close()
    }
}

/// The open handles, by id. A `coffer_t *` is an id, never an object's address: it is looked up here
/// and never dereferenced, so a closed, foreign or garbage pointer is refused with COFFER_EINVALID
/// instead of crashing, and a closed handle never reaches another vault.
///
/// Ids are addresses inside a range of address space this table reserves (PROT_NONE: nothing can
/// ever be read or written there), 16 bytes apart, handed out in turn: an id is never 0, never the
/// address of anything else (Go's runtime, which scans `*C.coffer_t` values as pointers, sees a
/// pointer outside its heap), and a closed handle's id comes back only after every other id of the
/// range has been given out (2^28 further opens with the usual 4 GiB reservation).
struct HandleTable {
    static let stride: UInt = 16
    /// The reserved range: its start (0 until the first open) and how many ids it holds.
    private var base: UInt = 0
    private var capacity: UInt = 0
    /// The offset (in ids) of the next id to give out.
    private var next: UInt = 0
    private var open: [UInt: Handle] = [:]

    /// Reserves address space for ids: 4 GiB if the system allows it, else less (a smaller range
    /// only means ids come back sooner).
    private mutating func reserve() -> Bool {
        for size in [1 << 32, 1 << 28, 1 << 20] {
            guard let range = mmap(nil, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
                range != UnsafeMutableRawPointer(bitPattern: -1)
            else { continue }
            base = UInt(bitPattern: range)
            capacity = UInt(size) / HandleTable.stride
            return true
        }
        return false
    }

    /// Files `handle` under a new id; nil when no id can be had (address space exhausted).
    mutating func insert(_ handle: Handle) -> UInt? {
        guard base != 0 || reserve() else { return nil }
        // Ids in use are skipped; there are far fewer open handles than ids.
        for _ in 0..<min(capacity, UInt(open.count) + 1) {
            let id = base + next * HandleTable.stride
            next = (next + 1) % capacity
            if open[id] == nil {
                open[id] = handle
                return id
            }
        }
        return nil
    }

    func handle(_ id: UInt) -> Handle? { open[id] }

    mutating func remove(_ id: UInt) -> Handle? { open.removeValue(forKey: id) }
}

let openHandles = Mutex(HandleTable())

private func handleID(_ pointer: OpaquePointer) -> UInt { UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(pointer))) }

/// A local handle (a remote one is refused: the function needs the vault in this process).
func lookup(_ pointer: OpaquePointer?) throws(ArgumentError) -> Handle {
    let handle = try lookupAny(pointer)
    guard handle.remote == nil else { throw ArgumentError(message: remoteRefusal) }
    return handle
}

/// A local or remote handle.
func lookupAny(_ pointer: OpaquePointer?) throws(ArgumentError) -> Handle {
    guard let pointer else { throw ArgumentError(message: "the coffer handle is NULL") }
    guard let handle = openHandles.withLock({ $0.handle(handleID(pointer)) }) else {
        throw ArgumentError(message: "the coffer handle is not open (closed already, or not from coffer_open)")
    }
    return handle
}

@c @implementation
public func coffer_open(_ config: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guard let out else { return fail(COFFER_EINVALID, "out is NULL") }
    out.pointee = nil
    return guarded("coffer_open") {
        let text = try string(config, "config_json")
        if RemoteConfiguration.isRemote(json: Array(text.utf8)) { return try openRemote(text, out) }
        let vault = try Vault.open(try VaultConfiguration(json: Array(text.utf8)))
        // (On failure the Handle, dropped, closes the vault.)
        guard let id = openHandles.withLock({ $0.insert(Handle(vault: vault)) }),
            let pointer = OpaquePointer(bitPattern: id)
        else {
            return fail(COFFER_ENOMEM, "no address space left for a coffer handle id")
        }
        out.pointee = pointer
        return succeed()
    }
}

@c @implementation
public func coffer_close(_ pointer: OpaquePointer?) {
    guard let pointer else { return }
    // Released outside the lock: the last release closes the storage.
    let handle = openHandles.withLock { $0.remove(handleID(pointer)) }
    _ = handle
}

// MARK: Requests

@c @implementation
public func coffer_request(
    _ pointer: OpaquePointer?,
    _ method: UnsafePointer<CChar>?,
    _ path: UnsafePointer<CChar>?,
    _ token: UnsafePointer<CChar>?,
    _ body: UnsafePointer<CChar>?,
    _ bodyLength: Int,
    _ httpStatus: UnsafeMutablePointer<Int32>?,
    _ out: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?,
    _ outLength: UnsafeMutablePointer<Int>?
) -> Int32 {
    request(pointer, method, path, token, body, bodyLength, nil, httpStatus, out, outLength)
}

@c @implementation
public func coffer_request_ex(
    _ pointer: OpaquePointer?,
    _ method: UnsafePointer<CChar>?,
    _ path: UnsafePointer<CChar>?,
    _ token: UnsafePointer<CChar>?,
    _ body: UnsafePointer<CChar>?,
    _ bodyLength: Int,
    _ options: UnsafePointer<coffer_request_opts>?,
    _ httpStatus: UnsafeMutablePointer<Int32>?,
    _ out: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?,
    _ outLength: UnsafeMutablePointer<Int>?
) -> Int32 {
    request(pointer, method, path, token, body, bodyLength, options, httpStatus, out, outLength)
}

/// The fields of a caller's `coffer_request_opts`, read only as far as its `struct_size` reaches.
private func requestOptions(
    _ options: UnsafePointer<coffer_request_opts>?
) throws(ArgumentError) -> (wrapTTL: String?, clientAddress: String, namespace: String) {
    guard let options else { return (nil, "", "") }
    let size = options.pointee.struct_size
    let wrapEnd = MemoryLayout<coffer_request_opts>.offset(of: \.wrap_ttl)! + MemoryLayout<UnsafePointer<CChar>?>.size
    let addressEnd =
        MemoryLayout<coffer_request_opts>.offset(of: \.client_address)! + MemoryLayout<UnsafePointer<CChar>?>.size
    guard size >= wrapEnd else {
        throw ArgumentError(message: "opts->struct_size is \(size); set it to sizeof(coffer_request_opts)")
    }
    let wrapTTL = try optionalString(options.pointee.wrap_ttl, "opts->wrap_ttl")
    let address = size >= addressEnd ? try optionalString(options.pointee.client_address, "opts->client_address") : nil
    let namespaceEnd = MemoryLayout<coffer_request_opts>.offset(of: \.ns)! + MemoryLayout<UnsafePointer<CChar>?>.size
    let namespace = size >= namespaceEnd ? try optionalString(options.pointee.ns, "opts->ns") : nil
    return (wrapTTL, address ?? "", namespace ?? "")
}

private func request(
    _ pointer: OpaquePointer?,
    _ method: UnsafePointer<CChar>?,
    _ path: UnsafePointer<CChar>?,
    _ token: UnsafePointer<CChar>?,
    _ body: UnsafePointer<CChar>?,
    _ bodyLength: Int,
    _ options: UnsafePointer<coffer_request_opts>?,
    _ httpStatus: UnsafeMutablePointer<Int32>?,
    _ out: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?,
    _ outLength: UnsafeMutablePointer<Int>?
) -> Int32 {
    httpStatus?.pointee = 0
    out?.pointee = nil
    outLength?.pointee = 0
    guard let httpStatus else { return fail(COFFER_EINVALID, "http_status is NULL") }
    guard let out else { return fail(COFFER_EINVALID, "out is NULL") }
    let handle: Handle
    let method_: String
    let path_: String
    let token_: String?
    var body_: [UInt8]
    let opts: (wrapTTL: String?, clientAddress: String, namespace: String)
    do {
        handle = try lookupAny(pointer)
        method_ = try string(method, "method")
        path_ = try string(path, "path")
        token_ = try optionalString(token, "token")
        body_ = try bytes(body, bodyLength, "body")
        opts = try requestOptions(options)
    } catch {
        return fail(COFFER_EINVALID, error.message)
    }
    if let remote = handle.remote {
        return remoteRequest(remote, method_, path_, token_, &body_, opts, httpStatus, out, outLength)
    }
    var result = handle.vault.handleWireHere(
        method: method_,
        path: path_,
        token: token_,
        body: body_,
        namespace: opts.namespace,
        clientAddress: opts.clientAddress,
        wrapTTL: opts.wrapTTL
    )
    // Both may hold secrets (unseal keys, tokens, secret values): wiped once copied.
    body_.wipe()
    defer { result.body?.wipe() }
    if let body = result.body {
        guard let buffer = copyOut(body) else {
            return fail(COFFER_ENOMEM, "could not allocate \(body.count + 1) bytes for the response")
        }
        out.pointee = buffer
        outLength?.pointee = body.count
    }
    httpStatus.pointee = Int32(clamping: result.status)
    if let error = result.error { return fail(error) }
    if result.outcome == .notFound { return fail(COFFER_ENOTFOUND, "nothing found at \(path_)") }
    return succeed()
}

// MARK: KV fast paths

@c @implementation
public func coffer_kv_get(
    _ pointer: OpaquePointer?,
    _ mount: UnsafePointer<CChar>?,
    _ path: UnsafePointer<CChar>?,
    _ token: UnsafePointer<CChar>?,
    _ version: Int64,
    _ dataJSON: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?,
    _ dataLength: UnsafeMutablePointer<Int>?,
    _ versionOut: UnsafeMutablePointer<Int64>?
) -> Int32 {
    dataJSON?.pointee = nil
    dataLength?.pointee = 0
    versionOut?.pointee = 0
    guard let dataJSON else { return fail(COFFER_EINVALID, "data_json is NULL") }
    return guarded("coffer_kv_get") {
        let handle = try lookupAny(pointer)
        let mount_ = try optionalString(mount, "mount") ?? "secret"
        let path_ = try string(path, "path")
        if let remote = handle.remote {
            return try remoteKVGet(
                remote,
                mount_,
                path_,
                try optionalString(token, "token"),
                version,
                dataJSON,
                dataLength,
                versionOut
            )
        }
        let token_ = try string(token, "token")
        guard version >= 0 else { return fail(COFFER_EINVALID, "version is \(version); use 0 for the current version") }
        guard
            var secret = try handle.vault.kv(mount: mount_, token: token_).getJSON(
                path_,
                version: version == 0 ? nil : Int(version)
            )
        else {
            let which = version == 0 ? "" : " version \(version)"
            return fail(
                COFFER_ENOTFOUND,
                "no secret at \(mount_)/\(path_)\(which) (never written, deleted or destroyed)"
            )
        }
        defer { secret.data.wipe() }  // the values' only holder by now: wiped in place
        guard let buffer = copyOut(secret.data) else {
            return fail(COFFER_ENOMEM, "could not allocate \(secret.data.count + 1) bytes for the secret")
        }
        dataJSON.pointee = buffer
        dataLength?.pointee = secret.data.count
        versionOut?.pointee = Int64(secret.version)
        return succeed()
    }
}

@c @implementation
public func coffer_kv_put(
    _ pointer: OpaquePointer?,
    _ mount: UnsafePointer<CChar>?,
    _ path: UnsafePointer<CChar>?,
    _ token: UnsafePointer<CChar>?,
    _ dataJSON: UnsafePointer<CChar>?,
    _ dataLength: Int,
    _ cas: Int64,
    _ versionOut: UnsafeMutablePointer<Int64>?
) -> Int32 {
    versionOut?.pointee = 0
    return guarded("coffer_kv_put") {
        let handle = try lookup(pointer)
        let mount_ = try optionalString(mount, "mount") ?? "secret"
        let path_ = try string(path, "path")
        let token_ = try string(token, "token")
        var input = try bytes(dataJSON, dataLength, "data_json")
        defer { input.wipe() }
        guard cas >= Int64(COFFER_KV_NO_CAS) else {
            return fail(COFFER_EINVALID, "cas is \(cas); use COFFER_KV_NO_CAS (-1) or a version (0 or more)")
        }
        let data: [String: JSONValue]
        do {
            guard case .object(let object) = try JSONValue.parse(input) else {
                return fail(COFFER_EINVALID, "data_json must be a JSON object")
            }
            data = object
        } catch {
            return fail(COFFER_EINVALID, "data_json is not valid JSON: \(error)")
        }
        let version = try handle.vault.kv(mount: mount_, token: token_).put(
            path_,
            data,
            cas: cas == Int64(COFFER_KV_NO_CAS) ? nil : Int(cas)
        )
        versionOut?.pointee = Int64(version)
        return succeed()
    }
}

@c @implementation
public func coffer_transit_encrypt(
    _ pointer: OpaquePointer?,
    _ mount: UnsafePointer<CChar>?,
    _ key: UnsafePointer<CChar>?,
    _ token: UnsafePointer<CChar>?,
    _ plaintext: UnsafeRawPointer?,
    _ plaintextLength: Int,
    _ context: UnsafeRawPointer?,
    _ contextLength: Int,
    _ ciphertext: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?,
    _ ciphertextLength: UnsafeMutablePointer<Int>?
) -> Int32 {
    ciphertext?.pointee = nil
    ciphertextLength?.pointee = 0
    guard let ciphertext else { return fail(COFFER_EINVALID, "ciphertext is NULL") }
    return guarded("coffer_transit_encrypt") {
        let handle = try lookup(pointer)
        let mount_ = try optionalString(mount, "mount") ?? "transit"
        let key_ = try string(key, "key")
        let token_ = try string(token, "token")
        let input = try rawBuffer(plaintext, plaintextLength, "plaintext")
        let context_ = try rawBuffer(context, contextLength, "context")
        var plain = Array(input)
        defer { plain.wipe() }
        let sealed = try handle.vault.transit(mount: mount_, token: token_).encrypt(
            key: key_,
            plaintext: plain,
            context: Array(context_)
        )
        guard let buffer = copyOut(sealed) else {
            return fail(COFFER_ENOMEM, "could not allocate \(sealed.count + 1) bytes for the ciphertext")
        }
        ciphertext.pointee = buffer
        ciphertextLength?.pointee = sealed.count
        return succeed()
    }
}

@c @implementation
public func coffer_transit_decrypt(
    _ pointer: OpaquePointer?,
    _ mount: UnsafePointer<CChar>?,
    _ key: UnsafePointer<CChar>?,
    _ token: UnsafePointer<CChar>?,
    _ ciphertext: UnsafePointer<CChar>?,
    _ ciphertextLength: Int,
    _ context: UnsafeRawPointer?,
    _ contextLength: Int,
    _ plaintext: UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
    _ plaintextLength: UnsafeMutablePointer<Int>?
) -> Int32 {
    plaintext?.pointee = nil
    plaintextLength?.pointee = 0
    guard let plaintext, let plaintextLength else { return fail(COFFER_EINVALID, "plaintext or plaintext_len is NULL") }
    return guarded("coffer_transit_decrypt") {
        let handle = try lookup(pointer)
        let mount_ = try optionalString(mount, "mount") ?? "transit"
        let key_ = try string(key, "key")
        let token_ = try string(token, "token")
        let input = try rawBuffer(ciphertext.map { UnsafeRawPointer($0) }, ciphertextLength, "ciphertext")
        let context_ = try rawBuffer(context, contextLength, "context")
        var opened = try handle.vault.transit(mount: mount_, token: token_).decrypt(
            key: key_,
            ciphertext: Array(input),
            context: Array(context_)
        )
        defer { opened.withUnsafeMutableBytes { $0.initializeMemory(as: UInt8.self, repeating: 0) } }
        guard let buffer = copyOut(opened) else {
            return fail(COFFER_ENOMEM, "could not allocate \(opened.count + 1) bytes for the plaintext")
        }
        plaintext.pointee = UnsafeMutableRawPointer(buffer)
        plaintextLength.pointee = opened.count
        return succeed()
    }
}

// MARK: Memory

/// glibc's `malloc_usable_size` (not in Swift's Glibc module), found once through the dynamic
/// linker, so that it is the one of whichever malloc is in use. An immutable C function pointer.
private nonisolated(unsafe) let mallocUsableSize: (@convention(c) (UnsafeMutableRawPointer?) -> Int)? = {
    guard let symbol = dlsym(nil, "malloc_usable_size") else { return nil }
    return unsafeBitCast(symbol, to: (@convention(c) (UnsafeMutableRawPointer?) -> Int).self)
}()

/// Wipes the whole allocation (what `malloc_usable_size` reports, at least what was asked for)
/// before freeing it: the buffers this library hands out hold secrets, tokens and unseal keys.
@c @implementation
public func coffer_free(_ pointer: UnsafeMutableRawPointer?) {
    guard let pointer else { return }
    if let mallocUsableSize { Wipe.bytes(pointer, count: mallocUsableSize(pointer)) }
    free(pointer)
}

// MARK: Metrics

@c @implementation
public func coffer_metrics(
    _ pointer: OpaquePointer?,
    _ format: UnsafePointer<CChar>?,
    _ out: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?,
    _ outLength: UnsafeMutablePointer<Int>?
) -> Int32 {
    out?.pointee = nil
    outLength?.pointee = 0
    guard let out else { return fail(COFFER_EINVALID, "out is NULL") }
    return guarded("coffer_metrics") {
        let handle = try lookupAny(pointer)
        let chosen: MetricsFormat
        switch try optionalString(format, "format") {
        case nil, "json": chosen = .json
        case "prometheus": chosen = .prometheus
        case let other?:
            let shown = other.utf8.count <= 64 ? other : String(other.prefix(64)) + "…"
            return fail(
                COFFER_EINVALID,
                "metrics format \"\(shown)\" unknown; use \"json\" (or NULL) or \"prometheus\""
            )
        }
        let text = Array((handle.remote?.metrics(chosen) ?? handle.vault.metrics(chosen)).utf8)
        guard let buffer = copyOut(text) else {
            return fail(COFFER_ENOMEM, "could not allocate \(text.count + 1) bytes for the metrics")
        }
        out.pointee = buffer
        outLength?.pointee = text.count
        return succeed()
    }
}

// MARK: For the other files of the C ABI (CofferC+Events.swift)

/// The vault behind `pointer`, or nil with COFFER_EINVALID's message set (in `status`).
func cofferVault(_ pointer: OpaquePointer?, status: inout Int32) -> Vault? {
    do {
        return try lookup(pointer).vault
    } catch {
        status = fail(COFFER_EINVALID, error.message)
        return nil
    }
}

/// `pointer` as a string (an argument named `name`), or nil with COFFER_EINVALID's message set.
func cofferString(_ pointer: UnsafePointer<CChar>?, _ name: String, optional: Bool, status: inout Int32) -> String?? {
    do {
        return optional ? .some(try optionalString(pointer, name)) : .some(try string(pointer, name))
    } catch {
        status = fail(COFFER_EINVALID, error.message)
        return nil
    }
}

func cofferFail(_ status: Int32, _ message: String) -> Int32 { fail(status, message) }
func cofferFail(_ error: CofferError) -> Int32 { fail(error) }
func cofferSucceed() -> Int32 { succeed() }

// MARK: Embedded replicas

@c @implementation
public func coffer_replica_sync(_ pointer: OpaquePointer?, _ timeoutMilliseconds: UInt32) -> Int32 {
    guarded("coffer_replica_sync") {
        let handle = try lookup(pointer)
        try handle.vault.waitForOwnWrites(timeout: Double(timeoutMilliseconds) / 1000)
        return succeed()
    }
}
