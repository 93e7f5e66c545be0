// `coffer`: small operator tools that work on files, without a running vault.
//
//   coffer audit verify [--key HEX | --key-file PATH] FILE
//       Checks the hash chain of a file audit device's log and names the first record that was
//       edited, removed or reordered (exit 1). Lines a crash cut short, which the device marked when it
//       reopened the file, and an incomplete last line are reported but are not tampering (exit 0).
//       The key is the device's chain key, read (with sudo) from sys/audit-chain-key/<device>; it
//       may also come from COFFER_AUDIT_CHAIN_KEY.
import CofferAudit
import CofferCore

#if canImport(Glibc)
import Glibc
#endif

func fail(_ message: String, code: Int32 = 2) -> Never {
    let text = "coffer: \(message)\n"
    _ = text.withCString { write(2, $0, strlen($0)) }
    exit(code)
}

func readFile(_ path: String) -> [UInt8] {
    guard let fp = fopen(path, "rb") else { fail("cannot open \(path): \(String(cString: strerror(errno)))") }
    defer { fclose(fp) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = fread(&chunk, 1, chunk.count, fp)
        if n <= 0 { break }
        bytes.append(contentsOf: chunk[0..<n])
    }
    return bytes
}

let usage = "usage: coffer audit verify [--key HEX | --key-file PATH] FILE"
var args = Array(CommandLine.arguments.dropFirst())
guard args.count >= 2, args[0] == "audit", args[1] == "verify" else { fail(usage) }
args.removeFirst(2)
var keyHex = getenv("COFFER_AUDIT_CHAIN_KEY").map { String(cString: $0) }
var file: String?
while let arg = args.first {
    args.removeFirst()
    switch arg {
    case "--key":
        guard let value = args.first else { fail("--key needs a value\n\(usage)") }
        keyHex = value
        args.removeFirst()
    case "--key-file":
        guard let value = args.first else { fail("--key-file needs a path\n\(usage)") }
        keyHex = String(decoding: readFile(value), as: UTF8.self).filter { !$0.isWhitespace }
        args.removeFirst()
    default:
        guard file == nil, !arg.hasPrefix("-") else { fail(usage) }
        file = arg
    }
}
guard let file else { fail(usage) }
guard let keyHex, let key = Hex.decode(keyHex), key.count == 32 else {
    fail(
        "a 32-byte chain key in hex is required (--key, --key-file or COFFER_AUDIT_CHAIN_KEY); read it from sys/audit-chain-key/<device>"
    )
}
let verdict = AuditChain.verify(contents: readFile(file), key: SecureBytes(key))
if let problem = verdict.problem {
    print(
        "\(file): TAMPERED at line \(problem.line): \(problem.reason) (\(verdict.records) record(s) verified before it)"
    )
    exit(1)
}
var report = "\(file): OK, \(verdict.records) record(s), chain intact"
switch verdict.tornLines.count {
case 0: break
case 1:
    report += " apart from a torn record at line \(verdict.tornLines[0])"
    report +=
        " (a write cut short by a crash or a power loss; the device marked it on the next line when it reopened the file)"
default:
    report += " apart from torn records at lines \(verdict.tornLines.map(String.init).joined(separator: ", "))"
    report +=
        " (writes cut short by crashes or power losses; the device marked each on the next line when it reopened the file)"
}
if let line = verdict.incompleteLastLine {
    report += "; line \(line) is incomplete (a write in progress, or cut short and not yet marked): it is not verified"
}
print(report)
