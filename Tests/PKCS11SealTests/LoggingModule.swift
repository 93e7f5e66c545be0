import Coffer
import Foundation
import Testing

/// Tests/compat/pkcs11_test_module.c built into this HSM's directory: a PKCS#11 module in front of
/// SoftHSM that logs every C_Login with its result, and fails C_EncryptInit/C_DecryptInit with
/// CKR_DEVICE_REMOVED while `unplugged` is set.
final class LoggingModule {
    let path: String
    private let log: String
    private let unplugFile: String

    init(_ hsm: SoftHSM) throws {
        let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("compat/pkcs11_test_module.c").path
        path = hsm.directory + "/libcoffer-test-p11.so"
        log = hsm.directory + "/logins.txt"
        unplugFile = hsm.directory + "/unplugged"
        try hsm.run("cc", ["-shared", "-fPIC", source, "-o", path, "-ldl"])
        setenv("COFFER_TEST_P11_LOG", log, 1)
        setenv("COFFER_TEST_P11_UNPLUG", unplugFile, 1)
    }

    /// Every C_Login so far, as "C_Login 0x<result>".
    var logins: [String] {
        ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    var unplugged: Bool {
        get { FileManager.default.fileExists(atPath: unplugFile) }
        set {
            if newValue {
                _ = FileManager.default.createFile(atPath: unplugFile, contents: Data())
            } else {
                try? FileManager.default.removeItem(atPath: unplugFile)
            }
        }
    }
}

func expectCofferError(
    _ code: CofferError.Code,
    containing texts: [String],
    sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () throws -> Void
) {
    do {
        try body()
        Issue.record("expected a \(code) error, got success", sourceLocation: sourceLocation)
    } catch let error as CofferError {
        #expect(error.code == code, "got \(error.code): \(error.message)", sourceLocation: sourceLocation)
        for text in texts {
            #expect(error.message.contains(text), "message was: \(error.message)", sourceLocation: sourceLocation)
        }
    } catch {
        Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
    }
}
