// `coffer audit verify`: a file audit device's hash chain, checked offline.
import CofferAudit
import CofferCore

#if canImport(Glibc)
import Glibc
#endif

/// `coffer audit verify [--key HEX | --key-file PATH] FILE`: checks a file audit device's hash chain.
func auditVerify(_ arguments: [String]) -> Never {
    let usage = "usage: coffer audit verify [--key HEX | --key-file PATH] FILE"
    var args = arguments
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
        report +=
            "; line \(line) is incomplete (a write in progress, or cut short and not yet marked): it is not verified"
    }
    print(report)

    exit(0)
}
