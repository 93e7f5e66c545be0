import Foundation
import Testing

/// A trivial engine for a mount where routing needs one: it stores and returns request data.
final class EchoBackend: TableBackend {
    static let paths = PathTable<EchoBackend>([
        Path("{path+}", arbitraryFields: true, read: EchoBackend.read, write: EchoBackend.write)
    ])

    func read(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let data = try request.storage.getJSON(request.path)?.objectValue else { return .notFound }
        return Response(data: data)
    }

    func write(_ request: BackendRequest) throws(CofferError) -> Response {
        try request.storage.putJSON(request.path, .object(request.data))
        return .noContent
    }
}

/// The core tests exercise sys/ and auth/token/ with an "echo" engine standing in for a mount.
func testRegistry() -> EngineRegistry {
    var registry = EngineRegistry()
    registry.register("echo") { _ in EchoBackend() }
    registry.register("cubbyhole") { _ in CubbyholeBackend() }
    return registry
}

/// An initialised, unsealed core over `storage` with an "echo" mount at echo/.
func makeCore(
    storage: any PhysicalBackend = InMemoryBackend(),
    clock: ManualClock = ManualClock(),
    shares: Int = 1,
    threshold: Int = 1,
    authMethods: EngineRegistry = EngineRegistry()
) throws -> (Core, InitResult) {
    let core = try Core(storage: storage, engines: testRegistry(), authMethods: authMethods, clock: clock)
    let result = try core.initialize(shares: shares, threshold: threshold)
    try core.mount(MountEntry(path: "echo/", type: "echo"))
    return (core, result)
}

extension Core {
    /// Sends a request and returns the response; throws the core's error.
    @discardableResult
    func call(
        _ op: Request.Operation,
        _ path: String,
        _ data: [String: JSONValue] = [:],
        token: String?
    ) throws -> Response {
        try handle(Request(op, path, data: data, token: token))
    }
}

func expectError(
    _ code: CofferError.Code,
    containing text: String? = nil,
    _ body: () throws -> Void,
    sourceLocation: SourceLocation = #_sourceLocation
) {
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
