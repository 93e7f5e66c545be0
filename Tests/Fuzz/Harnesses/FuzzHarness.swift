import Glibc

/// One fuzz target: what libFuzzer (or a replay of the seed corpus) feeds one input at a time.
///
/// A harness returns nil when the code under test behaved, or a sentence saying which property
/// broke (a round trip that changed a value, an error located outside the input, an answer that is
/// not JSON). A crash (trap, stack overflow) needs no report: libFuzzer catches the signal and
/// saves the input. See docs/fuzzing.md.
public struct FuzzHarness: Sendable {
    /// The name given to `CofferFuzz` and `make fuzz` (`json`, `policy`, ...), which also names its seed
    /// corpus (Tests/Fuzz/Corpus/<name>/) and libFuzzer dictionary (Tests/Fuzz/Dictionaries/<name>.dict).
    public let name: String
    /// What the harness drives, for `CofferFuzz` without arguments and the docs.
    public let summary: String
    public let run: @Sendable (UnsafeRawBufferPointer) -> String?

    public init(name: String, summary: String, run: @escaping @Sendable (UnsafeRawBufferPointer) -> String?) {
        self.name = name
        self.summary = summary
        self.run = run
    }

    /// Every harness, in the order `make fuzz` runs them; the corpus replay test takes this list.
    public static let all: [FuzzHarness] = [.json, .policy, .serverConfig, .httpFraming, .request, .raftFrames]

    public static func named(_ name: String) -> FuzzHarness? { all.first { $0.name == name } }
}

/// The seed corpora in the repository (Tests/Fuzz/Corpus/<name>/), read with plain POSIX calls.
public enum FuzzCorpus {
    /// Tests/Fuzz, found from this source file's path (the corpus is not copied into the build).
    public static var fuzzDirectory: String {
        var path = "\(#filePath)"
        for _ in 0..<2 {
            guard let slash = path.lastIndex(of: "/") else { return "Tests/Fuzz" }
            path = String(path[..<slash])
        }
        return path
    }

    public static func directory(of harness: FuzzHarness) -> String { fuzzDirectory + "/Corpus/" + harness.name }

    /// The regular files in `directory`, sorted by name; empty if it cannot be read.
    public static func files(in directory: String) -> [String] {
        guard let dir = opendir(directory) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name.hasPrefix(".") { continue }
            let path = directory + "/" + name
            var info = stat()
            if stat(path, &info) == 0, info.st_mode & S_IFMT == S_IFREG { names.append(path) }
        }
        return names.sorted()
    }

    /// The bytes of the file at `path`, or nil if it cannot be read.
    public static func read(_ path: String) -> [UInt8]? {
        guard let file = fopen(path, "rb") else { return nil }
        defer { fclose(file) }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = buffer.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
            if count == 0 { break }
            out.append(contentsOf: buffer[0..<count])
        }
        return ferror(file) == 0 ? out : nil
    }
}

extension FuzzHarness {
    /// Runs the harness on `bytes` (for the corpus replay and tests).
    public func run(_ bytes: [UInt8]) -> String? {
        bytes.withUnsafeBytes { run($0) }
    }
}

/// Line and column bounds of a text, to check that errors point inside it.
struct TextShape {
    let lines: Int
    let longestLine: Int

    init(_ text: String) {
        var lines = 1
        var column = 0
        var longest = 0
        for scalar in text.unicodeScalars {
            if scalar == "\n" {
                lines += 1
                column = 0
            } else {
                column += 1
                longest = max(longest, column)
            }
        }
        self.lines = lines
        self.longestLine = longest
    }

    /// A 1-based location at most one past the end of a line, on a line of the text.
    func contains(line: Int, column: Int) -> Bool {
        line >= 1 && line <= lines && column >= 1 && column <= longestLine + 1
    }
}
