import CofferCore
import Foundation
import Synchronization
import Testing

/// A clock tests move by hand, so expiry is tested without sleeping.
final class ManualClock: CofferCore.Clock {
    private let current = Mutex(Timestamp(seconds: 1_800_000_000))
    func now() -> Timestamp { current.withLock { $0 } }
    func advance(seconds: Int64) { current.withLock { $0 = $0.adding(seconds: seconds) } }
}

/// A fresh temporary directory, removed when the value is released.
final class TemporaryDirectory {
    let path: String
    init() {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-test-\(UUID().uuidString)")
        try! FileManager.default.createDirectory(at: base, withIntermediateDirectories: true)
        path = base.path
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    func file(_ name: String) -> String { path + "/" + name }
}

/// A no-engine registry: the core tests exercise sys/ and auth/token/ only; a trivial "echo" engine
/// stands in for a mount where routing needs one.
struct EchoBackend: Backend {
    func handle(_ request: EngineRequest) throws(CofferError) -> Response {
        switch request.operation {
        case .read:
            guard let data = try request.storage.getJSON(request.path)?.objectValue else { return .notFound }
            return Response(data: data)
        case .create, .update:
            try request.storage.putJSON(request.path, .object(request.data))
            return .noContent
        default:
            throw request.unsupported()
        }
    }
}

func testRegistry() -> EngineRegistry {
    var registry = EngineRegistry()
    registry.register("echo") { _ in EchoBackend() }
    return registry
}

/// An initialised, unsealed core over `storage` with an "echo" mount at echo/.
func makeCore(
    storage: any PhysicalBackend = InMemoryBackend(), clock: ManualClock = ManualClock(), shares: Int = 1, threshold: Int = 1
) throws -> (Core, InitResult) {
    let core = try Core(storage: storage, engines: testRegistry(), clock: clock)
    let result = try core.initialize(shares: shares, threshold: threshold)
    try core.mount(MountEntry(path: "echo/", type: "echo"))
    return (core, result)
}

extension Core {
    /// Sends a request and returns the response; throws the core's error.
    @discardableResult
    func call(_ op: Request.Operation, _ path: String, _ data: [String: JSONValue] = [:], token: String?) throws -> Response {
        try handle(Request(op, path, data: data, token: token))
    }
}

func expectError(_ code: CofferError.Code, containing text: String? = nil, _ body: () throws -> Void,
                 sourceLocation: SourceLocation = #_sourceLocation) {
    do {
        try body()
        Issue.record("expected a \(code) error, got success", sourceLocation: sourceLocation)
    } catch let error as CofferError {
        #expect(error.code == code, "got \(error.code): \(error.message)", sourceLocation: sourceLocation)
        if let text {
            #expect(error.message.contains(text), "message was: \(error.message)", sourceLocation: sourceLocation)
        }
    } catch {
        Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
    }
}

func hex(_ s: String) -> [UInt8] { Hex.decode(s)! }
