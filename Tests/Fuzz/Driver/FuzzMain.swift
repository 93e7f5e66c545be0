import CofferFuzzHarnesses
import Glibc
import Synchronization

#if COFFER_LIBFUZZER
import CLibFuzzer
#endif

/// `CofferFuzz HARNESS [arguments]`: one program for every harness (see docs/fuzzing.md).
///
/// Built by `make fuzz` (with `-D COFFER_LIBFUZZER`, instrumented and linked with libFuzzer), the
/// arguments after the harness name are libFuzzer's: corpus directories, `-max_total_time=`, a
/// crash file to reproduce. In a normal build it replays files instead: the given files and
/// directories, or the harness's seed corpus, and exits 1 if a harness reports a broken property.
@main
struct FuzzMain {
    static func main() {
        let arguments = CommandLine.arguments
        guard arguments.count >= 2, let harness = FuzzHarness.named(arguments[1]) else {
            var usage = "usage: CofferFuzz HARNESS [files, directories or libFuzzer options]\nharnesses:\n"
            for harness in FuzzHarness.all { usage += "  \(harness.name): \(harness.summary)\n" }
            printError(usage)
            exit(2)
        }
        #if COFFER_LIBFUZZER
        selected.withLock { $0 = harness }
        // libFuzzer sees the program name and everything after the harness name.
        var cArguments: [UnsafeMutablePointer<CChar>?] = [CommandLine.unsafeArgv[0]]
        for index in 2..<Int(CommandLine.argc) { cArguments.append(CommandLine.unsafeArgv[index]) }
        cArguments.append(nil)
        var argc = CInt(cArguments.count - 1)
        let status = cArguments.withUnsafeMutableBufferPointer { buffer in
            var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = buffer.baseAddress
            return LLVMFuzzerRunDriver(&argc, &argv) { data, size in
                let input = UnsafeRawBufferPointer(start: data, count: size)
                guard let harness = selected.withLock({ $0 }) else { return 0 }
                if let problem = harness.run(input) {
                    printError("CofferFuzz \(harness.name): \(problem)\n")
                    abort()
                }
                return 0
            }
        }
        exit(status)
        #else
        var paths = Array(arguments.dropFirst(2))
        if paths.isEmpty { paths = [FuzzCorpus.directory(of: harness)] }
        var count = 0
        var failures = 0
        for path in paths {
            var info = stat()
            let files = stat(path, &info) == 0 && info.st_mode & S_IFMT == S_IFDIR ? FuzzCorpus.files(in: path) : [path]
            for file in files {
                guard let bytes = FuzzCorpus.read(file) else {
                    printError("CofferFuzz: cannot read \(file)\n")
                    exit(2)
                }
                count += 1
                if let problem = harness.run(bytes) {
                    failures += 1
                    print("\(file): \(problem)")
                }
            }
        }
        print("CofferFuzz \(harness.name): replayed \(count) inputs, \(failures) with a broken property")
        exit(failures == 0 ? 0 : 1)
        #endif
    }
}

/// Writes `text` to standard error.
func printError(_ text: String) {
    var text = text
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

#if COFFER_LIBFUZZER
/// The harness libFuzzer's callback runs (a C callback cannot capture it).
let selected = Mutex<FuzzHarness?>(nil)
#endif
