#if canImport(Glibc)
import Glibc
#endif

/// The names in the directory at `path` ("." and ".." among them), or nil when it cannot be opened.
/// Each name is read up to its NUL with `strlen`: a `dirent`'s name field is 256 bytes, and past the NUL
/// they are whatever the buffer held before. A scan over a copy of the whole field (vectorised by the
/// compiler) branched on those bytes, which valgrind reported from a Raft node's thread.
package func directoryEntries(_ path: String) -> [String]? {
    guard let dir = opendir(path) else { return nil }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
        names.append(
            withUnsafeMutablePointer(to: &entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
        )
    }
    return names
}
