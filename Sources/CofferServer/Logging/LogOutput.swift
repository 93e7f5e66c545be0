import CofferCore
public import CofferServerCore
public import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Where cofferd's logs go (standard error) and at which level, shared by every logger so that
/// SIGHUP can change the level of all of them at once.
///
/// What is logged is chosen at the call sites: methods, paths, statuses and durations; never a
/// token, a request or response body, or a key.
public final class LogOutput: Sendable {
    private let level: Atomic<Int>
    public let format: ServerConfig.LogFormat

    public init(level: Logger.Level, format: ServerConfig.LogFormat) {
        self.level = Atomic(Self.levels.firstIndex(of: level)!)
        self.format = format
    }

    private static let levels = Logger.Level.allCases

    public var logLevel: Logger.Level {
        get { Self.levels[level.load(ordering: .relaxed)] }
        set { level.store(Self.levels.firstIndex(of: newValue)!, ordering: .relaxed) }
    }

    /// A logger labelled `label` writing here.
    public func logger(_ label: String) -> Logger {
        Logger(label: label) { label in Handler(label: label, output: self) }
    }

    func write(_ event: LogEvent, label: String, metadata: Logger.Metadata) {
        var all = metadata
        if let extra = event.metadata { all.merge(extra) { $1 } }
        let time = SystemClock().now().rfc3339
        var line: String
        switch format {
        case .text:
            // Vault's layout: time, [LEVEL] padded, module, message, then key=value pairs.
            let name = Self.vaultName(event.level).uppercased()
            line = "\(time) [\(name)]\(String(repeating: " ", count: max(1, 6 - name.count)))\(label): \(event.message)"
            for (key, value) in all.sorted(by: { $0.key < $1.key }) { line += " \(key)=\(value)" }
        case .json:
            var object: [String: JSONValue] = [
                "@timestamp": .string(time), "@level": .string(Self.vaultName(event.level)), "@module": .string(label),
                "@message": .string(event.message.description),
            ]
            for (key, value) in all { object[key] = .string(value.description) }
            line = String(decoding: JSONValue.object(object).serialized(), as: UTF8.self)
        }
        line += "\n"
        // One write(2) per line, so that lines from different threads do not interleave.
        var bytes = Array(line.utf8)
        bytes.withUnsafeMutableBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let n = Glibc.write(2, buffer.baseAddress! + offset, buffer.count - offset)
                if n <= 0 { break }
                offset += n
            }
        }
    }

    static func vaultName(_ level: Logger.Level) -> String {
        switch level {
        case .trace: "trace"
        case .debug: "debug"
        case .info, .notice: "info"
        case .warning: "warn"
        case .error, .critical: "error"
        }
    }

    struct Handler: LogHandler {
        let label: String
        let output: LogOutput
        var metadata: Logger.Metadata = [:]

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        var logLevel: Logger.Level {
            get { output.logLevel }
            set { output.logLevel = newValue }
        }

        func log(event: LogEvent) {
            output.write(event, label: label, metadata: metadata)
        }
    }
}
