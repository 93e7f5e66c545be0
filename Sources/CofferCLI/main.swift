// `coffer`: the operator and delivery tools.
//
//   coffer audit verify [--key HEX | --key-file PATH] FILE
//       Checks the hash chain of a file audit device's log and names the first record that was
//       edited, removed or reordered (exit 1). Lines a crash cut short, which the device marked when it
//       reopened the file, and an incomplete last line are reported but are not tampering (exit 0).
//       The key is the device's chain key, read (with sudo) from sys/audit-chain-key/<device>; it
//       may also come from COFFER_AUDIT_CHAIN_KEY.
//
//   coffer run [options] -- COMMAND [ARGS...]
//       Resolves a template of secrets into the environment (and files) of a child process, keeps
//       them current (restart or signal on change), forwards signals, exits with the child's status.
//       docs/run-and-agent.md.
//
//   coffer agent -config=agent.hcl
//       A local caching proxy of the v1 API with auto-auth: runs `cofferd agent` (docs/run-and-agent.md).
#if canImport(Glibc)
import Glibc
#endif

let topUsage = """
    usage: coffer <command> [arguments]

    commands:
      audit verify [--key HEX | --key-file PATH] FILE   check a file audit log's hash chain
      run [options] -- COMMAND [ARGS...]               run a command with secrets in its environment
      agent -config=FILE                               a local caching proxy with auto-auth (cofferd agent)

    `coffer <command> -h` describes a command; docs/run-and-agent.md and docs/audit.md have the details.
    """

/// Prints `coffer: message` on stderr and exits (2: usage or input errors, by default).
func fail(_ message: String, code: Int32 = 2) -> Never {
    writeStderr("coffer: \(message)\n")
    exit(code)
}

func writeStderr(_ text: String) {
    var bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
        let n = bytes[offset...].withUnsafeBufferPointer { write(2, $0.baseAddress, $0.count) }
        if n <= 0 { break }
        offset += n
    }
    bytes.removeAll()
}

/// The whole file, or a clear error naming it.
func readFile(_ path: String) -> [UInt8] {
    do {
        return try readFileOrThrow(path, limit: 64 << 20)
    } catch {
        fail("\(error)")
    }
}

struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Reads at most `limit` bytes of a file (an error past it: the inputs here are small).
func readFileOrThrow(_ path: String, limit: Int) throws(CLIError) -> [UInt8] {
    guard let fp = fopen(path, "rb") else { throw CLIError("cannot open \(path): \(String(cString: strerror(errno)))") }
    defer { fclose(fp) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = fread(&chunk, 1, chunk.count, fp)
        if n <= 0 { break }
        bytes.append(contentsOf: chunk[0..<n])
        if bytes.count > limit { throw CLIError("\(path) is larger than \(limit) bytes") }
    }
    return bytes
}

var arguments = Array(CommandLine.arguments.dropFirst())
switch arguments.first {
case "audit":
    guard arguments.count >= 2, arguments[1] == "verify" else {
        fail("usage: coffer audit verify [--key HEX | --key-file PATH] FILE")
    }
    auditVerify(Array(arguments.dropFirst(2)))
case "run":
    runCommand(Array(arguments.dropFirst()))
case "agent":
    agentCommand(Array(arguments.dropFirst()))
case "-h", "--help", "-help", "help":
    print(topUsage)
    exit(0)
case nil:
    fail(topUsage)
case let other?:
    fail("unknown command \"\(other)\"\n\n\(topUsage)")
}
