package import CofferAudit
package import CofferCore
package import CofferFramework

#if canImport(Glibc)
import Glibc
#endif

/// A mounted backend with its storage view. A class: every request carries its mount, and a copy
/// is one reference count, not one per string and reference inside.
package final class RoutedMount: Sendable {
    package let kind: MountKind
    /// The full path the mount serves, with its trailing slash: "secret/", "auth/approle/".
    package let prefix: String
    package let entry: MountEntry
    package let backend: any Backend
    /// The backend's special paths, asked once: they do not change, and asking on every request
    /// copies the backend's existential (a retain of the backend every core's requests share).
    package let specialPaths: SpecialPaths
    package let storage: StorageView
    /// `vault.route.<operation>.<mount>` (Metrics/), resolved here so that a request looks nothing up.
    package let meters: RouteMeters
    /// The namespace the mount is in: its id and path ("" and "" for root).
    package let namespaceID: String
    package let namespacePath: String

    init(
        kind: MountKind,
        routePrefix: String = "",
        entry: MountEntry,
        backend: any Backend,
        storage: StorageView,
        namespace: Namespace
    ) {
        self.kind = kind
        self.prefix = routePrefix + entry.path
        self.entry = entry
        self.backend = backend
        self.specialPaths = backend.specialPaths
        self.storage = storage
        self.namespaceID = namespace.isRoot ? "" : namespace.id
        self.namespacePath = namespace.path
        self.meters = storage.barrier.meters.routes(for: namespace.path + routePrefix + entry.path)
    }

    /// A copy for one CPU's route table (``Namespace/servingRoutes``), with a storage prefix of its own.
    init(copying other: RoutedMount) {
        kind = other.kind
        prefix = other.prefix
        entry = other.entry
        backend = other.backend
        specialPaths = other.specialPaths
        storage = other.storage.unshared()
        meters = other.meters
        namespaceID = other.namespaceID
        namespacePath = other.namespacePath
    }
}

/// An immutable snapshot of the mount tables; a change builds a new one. Lookups take no lock
/// beyond reading the current snapshot reference. Unchecked: its raw prefix buffers are written in
/// `init` only.
package final class RouteTable: @unchecked Sendable {
    /// Mount points that secrets engines may not take.
    static let reserved = ["sys/", "auth/", "cubbyhole/", "identity/"]

    package let mounts: [RoutedMount]  // longest prefix first
    /// The mounts' prefixes, in the same order, as byte ranges of one allocation the table owns:
    /// matched without copying a mount or retaining an array per candidate. Every reference count
    /// a request moves on the vault's shared objects is a cache line the other cores then fetch.
    private let prefixes: UnsafeMutableBufferPointer<(start: UnsafePointer<UInt8>, count: Int)>
    private let prefixBytes: UnsafeMutableRawBufferPointer

    init(_ mounts: [RoutedMount]) {
        self.mounts = mounts.sorted { $0.prefix.utf8.count > $1.prefix.utf8.count }
        prefixBytes = .allocate(byteCount: max(1, self.mounts.reduce(0) { $0 + $1.prefix.utf8.count }), alignment: 1)
        prefixes = .allocate(capacity: self.mounts.count)
        var offset = 0
        for (index, mount) in self.mounts.enumerated() {
            let count = mount.prefix.utf8.count
            let bytes = UnsafeMutableRawBufferPointer(rebasing: prefixBytes[offset..<offset + count])
            bytes.copyBytes(from: mount.prefix.utf8)
            let start = prefixBytes.baseAddress!.advanced(by: offset).assumingMemoryBound(to: UInt8.self)
            prefixes.initializeElement(at: index, to: (UnsafePointer(start), count))
            offset += count
        }
    }

    /// The same table over copies of its mounts.
    func copy() -> RouteTable { RouteTable(mounts.map(RoutedMount.init(copying:))) }

    deinit {
        prefixes.deallocate()
        prefixBytes.deallocate()
    }

    /// The mount serving `path`, and the path relative to it.
    package func route(_ path: String) -> (RoutedMount, String)? {
        var path = path
        // Byte-wise, not Unicode-equivalence, comparison: routing must match what storage sees.
        let found: (index: Int, relativeStart: Int)? = path.withUTF8 { bytes in
            for index in prefixes.indices {
                let (prefix, count) = prefixes[index]
                if bytes.count >= count, count == 0 || memcmp(bytes.baseAddress!, prefix, count) == 0 {
                    return (index, count)
                }
                // "secret" (no trailing slash) addresses the mount itself.
                if bytes.count + 1 == count, bytes.isEmpty || memcmp(bytes.baseAddress!, prefix, bytes.count) == 0 {
                    return (index, bytes.count)
                }
            }
            return nil
        }
        guard let found else { return nil }
        return (mounts[found.index], String(decoding: path.utf8.dropFirst(found.relativeStart), as: UTF8.self))
    }

    /// The mount whose storage holds `key` (for invalidation), and the key relative to it.
    func owner(ofStorageKey key: String) -> (RoutedMount, String)? {
        for mount in mounts where key.hasBytePrefix(mount.storage.prefix) {
            return (mount, String(decoding: key.utf8.dropFirst(mount.storage.prefix.utf8.count), as: UTF8.self))
        }
        return nil
    }
}

/// Path hygiene for every request, before anything routes on it.
package enum PathRules {
    /// The longest request path accepted, in bytes.
    package static let maximumLength = 4096

    /// Strips leading slashes and rejects what could confuse routing or storage: empty segments,
    /// `.` and `..`, control characters and overlong paths.
    package static func normalize(_ raw: String) throws(CofferError) -> String {
        // One pass over the UTF-8 bytes, with no allocation: this runs on every request. Control
        // characters are single bytes in UTF-8 (bytes of multi-byte sequences are >= 0x80), so a
        // byte check finds exactly the scalars below U+0020 and U+007F.
        var raw = raw
        let (leading, verdict) = raw.withUTF8 { scan($0) }
        let path = { String(decoding: raw.utf8.dropFirst(leading), as: UTF8.self) }
        switch verdict {
        case .ok: return leading == 0 ? raw : path()
        case .tooLong(let count):
            throw CofferError.invalid("path is \(count) bytes long; the limit is \(maximumLength)")
        case .empty: throw CofferError.invalid("empty path")
        case .control(let byte):
            throw CofferError.invalid(
                "path contains a control character (U+\(String(byte, radix: 16, uppercase: true)))"
            )
        case .emptySegment: throw CofferError.invalid("path '\(path())' has an empty segment ('//')")
        case .dotSegment(let dots):
            throw CofferError.invalid(
                "path '\(path())' has a '\(String(repeating: ".", count: dots))' segment; relative segments are not allowed"
            )
        }
    }

    private enum Verdict {
        case ok, empty, emptySegment
        case tooLong(Int)
        case control(UInt8)
        case dotSegment(Int)
    }

    /// The leading slashes to strip, and what is wrong with the rest, if anything: segments none empty
    /// except a trailing one, none "." or "..". A control character anywhere is named before a segment
    /// problem. One pass over the bytes.
    private static func scan(_ bytes: UnsafeBufferPointer<UInt8>) -> (leading: Int, Verdict) {
        guard let base = bytes.baseAddress else { return (0, .empty) }
        let end = bytes.count
        var leading = 0
        while leading < end && base[leading] == UInt8(ascii: "/") { leading &+= 1 }
        let count = end &- leading
        guard count <= maximumLength else { return (leading, .tooLong(count)) }
        guard count > 0 else { return (leading, .empty) }
        var segmentProblem: Verdict?
        var length = 0
        var onlyDots = true
        var i = leading
        while i < end {
            let byte = base[i]
            i &+= 1
            if byte < 0x20 || byte == 0x7F { return (leading, .control(byte)) }
            if byte == UInt8(ascii: "/") {
                if segmentProblem == nil {
                    if length == 0 {
                        segmentProblem = .emptySegment
                    } else if onlyDots && length <= 2 {
                        segmentProblem = .dotSegment(length)
                    }
                }
                length = 0
                onlyDots = true
            } else {
                length &+= 1
                if byte != UInt8(ascii: ".") { onlyDots = false }
            }
        }
        if let segmentProblem { return (leading, segmentProblem) }
        if onlyDots && (length == 1 || length == 2) { return (leading, .dotSegment(length)) }
        return (leading, .ok)
    }
}
