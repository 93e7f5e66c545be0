package import CofferCore

/// A handler for one operation on one declared path: an instance method of the backend, referenced
/// unapplied (`KVv2Backend.readData`), so tables are built once per backend type and hold no
/// instance (no reference cycle between a backend and its table).
package typealias Handler<B> = @Sendable (B) -> (BackendRequest) throws(CofferError) -> Response

/// Vault's existence check for a path: does the target exist? It decides whether a write is a
/// `create` or an `update` before the ACL runs, so it gets storage it can only read.
package typealias ExistenceCheck<B> = @Sendable (B) -> (ExistenceRequest) throws(CofferError) -> Bool

/// One declared path: its pattern, its fields and a handler per operation. A class: routing hands
/// one on per request, and a copy of the struct retained each of its fields and handlers.
package final class Path<B>: Sendable {
    package let pattern: PathPattern
    package let fields: [Field]
    /// Whether fields that are not declared are passed through (KV v1 stores whatever it is given,
    /// Vault's `TakesArbitraryInput`); otherwise they are ignored with a warning naming them.
    package let arbitraryFields: Bool
    let existence: ExistenceCheck<B>?
    let read: Handler<B>?
    let list: Handler<B>?
    let create: Handler<B>?
    let update: Handler<B>?
    let patch: Handler<B>?
    let delete: Handler<B>?

    /// `write` serves both create and update (the usual case); `create` and `update` override it.
    package init(
        _ pattern: String,
        fields: [Field] = [],
        arbitraryFields: Bool = false,
        existence: ExistenceCheck<B>? = nil,
        read: Handler<B>? = nil,
        list: Handler<B>? = nil,
        write: Handler<B>? = nil,
        create: Handler<B>? = nil,
        update: Handler<B>? = nil,
        patch: Handler<B>? = nil,
        delete: Handler<B>? = nil
    ) {
        self.pattern = PathPattern(pattern)
        self.fields = fields
        self.arbitraryFields = arbitraryFields
        self.existence = existence
        self.read = read
        self.list = list
        self.create = create ?? write
        self.update = update ?? write
        self.patch = patch
        self.delete = delete
    }

    func handler(_ operation: Request.Operation) -> Handler<B>? {
        switch operation {
        case .read: read
        case .list: list
        case .create: create
        case .update: update
        case .patch: patch
        case .delete: delete
        }
    }

    /// The operations this path serves (for `sys/internal/specs`-like listings and tests).
    package var operations: [Request.Operation] { Request.Operation.allCases.filter { handler($0) != nil } }
}

/// A backend's paths, tried in declaration order (declare the more specific first); the first
/// whose pattern matches serves the request.
package struct PathTable<B>: Sendable {
    package let paths: [Path<B>]
    /// The paths' patterns, in the same order: routing walks these in code that is not generic over
    /// the backend, and retains only the path that matched.
    private let patterns: [PathPattern]

    package init(_ paths: [Path<B>]) {
        self.paths = paths
        patterns = paths.map(\.pattern)
    }

    /// Every problem with the declarations: malformed patterns, duplicate fields, more captures than
    /// ``Captures`` holds, a path without handlers. Empty for a good table; tests check every table.
    package func validate() -> [String] {
        var problems: [String] = []
        for path in paths {
            let name = "path \"\(path.pattern)\""
            if let problem = path.pattern.problem { problems.append("\(name): \(problem)") }
            if path.pattern.captureNames.count > 4 { problems.append("\(name): more than four captures") }
            if Set(path.fields.map(\.name)).count != path.fields.count {
                problems.append("\(name): a field declared twice")
            }
            if path.operations.isEmpty { problems.append("\(name): no operation") }
        }
        return problems
    }

    /// The path serving `relative`, with its captures.
    package func route(_ relative: String) -> (path: Path<B>, captures: Captures)? {
        guard let (index, captures) = PathPattern.firstMatch(in: patterns, relative) else { return nil }
        return (paths[index], captures)
    }

    /// Serves `request`: routes it, checks its fields against the declaration, runs the handler.
    /// The answers for what the table does not serve are Vault's: 404 "unsupported path" and 405
    /// "unsupported operation"; undeclared fields are ignored with Vault's warning.
    package func handle(_ backend: B, _ request: consuming BackendRequest) throws(CofferError) -> Response {
        guard let (path, captures) = route(request.path) else {
            throw CofferError(.notFound, "unsupported path")
        }
        guard let handler = path.handler(request.operation) else {
            throw CofferError(.unsupportedOperation, "unsupported operation")
        }
        request.captures = captures
        let ignored = try request.fields.check(against: path.fields, arbitrary: path.arbitraryFields)
        var response = try handler(backend)(request)
        if !ignored.isEmpty {
            response.warnings.append(
                "Endpoint ignored these unrecognized parameters: [\(ignored.joined(separator: " "))]"
            )
        }
        return response
    }

    /// The existence check of the path serving `request`, or nil when the path has none (a write
    /// is then an `update`, as in Vault).
    package func exists(_ backend: B, _ request: consuming ExistenceRequest) throws(CofferError) -> Bool? {
        guard let (path, captures) = route(request.path), let check = path.existence else { return nil }
        request.captures = captures
        _ = try request.fields.check(against: path.fields, arbitrary: path.arbitraryFields)
        return try check(backend)(request)
    }
}
