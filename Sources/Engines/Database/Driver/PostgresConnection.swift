import CDatabaseDrivers
import CofferCore

#if canImport(Glibc)
import Glibc
#endif

/// A PostgreSQL connection through libpq (loaded on first use).
final class PostgresConnection: DatabaseConnection {
    private var handle: OpaquePointer?
    private let settings: DatabaseConnectionSettings
    private(set) var inTransaction = false
    private(set) var isBroken = false

    var plugin: DatabasePlugin { .postgresql }

    init(keywords: [String], values: [String], settings: DatabaseConnectionSettings) throws(CofferError) {
        self.settings = settings
        if let failure = cdb_pg_load() { throw CofferError(.unavailable, String(cString: failure)) }
        let connection = withCStringArray(keywords) { keywordPointers in
            withCStringArray(values) { valuePointers in cdb_pg_connect(keywordPointers, valuePointers) }
        }
        guard let connection else { throw CofferError(.outOfMemory, "libpq could not allocate a connection") }
        guard cdb_pg_status(connection) == Int32(CDB_PG_CONNECTION_OK) else {
            let host = String(cString: cdb_pg_host(connection))
            let port = String(cString: cdb_pg_port(connection))
            let user = String(cString: cdb_pg_user(connection))
            let reason = PostgresConnection.connectionReason(String(cString: cdb_pg_error_message(connection)))
            cdb_pg_finish(connection)
            // libpq knows no host when it could not parse the connection string: then the URL is at fault.
            guard !host.isEmpty else {
                throw CofferError.invalid(settings.redact("connection_url is not valid for libpq: \(reason)"))
            }
            let place = host.hasPrefix("/") ? "\(host)/.s.PGSQL.\(port)" : "\(host):\(port)"
            throw CofferError(
                .unavailable,
                settings.redact("failed to connect to \(place) as \"\(user)\": \(reason)")
            )
        }
        handle = connection
    }

    deinit { close() }

    /// libpq's message without its "connection to server at "h", port p failed: " prefix (the caller
    /// says where), on one line.
    static func connectionReason(_ message: String) -> String {
        var text = oneLine(message)
        if text.hasPrefix("connection to server "), let range = text.firstRange(of: " failed: ") {
            text = String(text[range.upperBound...])
        }
        return text.isEmpty ? "unknown error" : text
    }

    func close() {
        if let handle { cdb_pg_finish(handle) }
        handle = nil
        inTransaction = false
    }

    private func live() throws(CofferError) -> OpaquePointer {
        guard let handle, !isBroken else {
            throw CofferError(.unavailable, "the PostgreSQL connection is closed")
        }
        return handle
    }

    /// Runs `sql` (with `parameters` when given) and returns the result, which the caller clears.
    private func run(_ sql: String, _ parameters: [String]?) throws(CofferError) -> OpaquePointer {
        try checkNoNUL(sql, "statement")
        for parameter in parameters ?? [] { try checkNoNUL(parameter, "query parameter") }
        let connection = try live()
        let result: OpaquePointer?
        if let parameters {
            result = withCStringArray(parameters) { pointers in
                cdb_pg_exec_params(connection, sql, Int32(parameters.count), pointers)
            }
        } else {
            result = cdb_pg_exec(connection, sql)
        }
        let status = result.map { cdb_pg_result_status($0) } ?? Int32(CDB_PGRES_FATAL_ERROR)
        if status == Int32(CDB_PGRES_COMMAND_OK) || status == Int32(CDB_PGRES_TUPLES_OK)
            || status == Int32(CDB_PGRES_EMPTY_QUERY)
        {
            return result!
        }
        let error = failure(result, connection)
        if let result { cdb_pg_clear(result) }
        throw error
    }

    /// The error of a failed statement: pgx's form (`ERROR: message (SQLSTATE code)`) when the server
    /// answered, else libpq's message and the connection marked broken.
    private func failure(_ result: OpaquePointer?, _ connection: OpaquePointer) -> CofferError {
        if let result, let primary = cdb_pg_result_error_field(result, Int32(CDB_PG_DIAG_MESSAGE_PRIMARY)) {
            let severity =
                (cdb_pg_result_error_field(result, Int32(CDB_PG_DIAG_SEVERITY_NONLOCALIZED))
                ?? cdb_pg_result_error_field(result, Int32(CDB_PG_DIAG_SEVERITY))).map { String(cString: $0) }
                ?? "ERROR"
            let code = cdb_pg_result_error_field(result, Int32(CDB_PG_DIAG_SQLSTATE)).map { String(cString: $0) }
            var text = "\(severity): \(String(cString: primary))"
            if let code { text += " (SQLSTATE \(code))" }
            if cdb_pg_status(connection) != Int32(CDB_PG_CONNECTION_OK) { markBroken() }
            return CofferError(isBroken ? .unavailable : .internal, settings.redact(text))
        }
        let message = result.map { String(cString: cdb_pg_result_error_message($0)) } ?? ""
        let text = oneLine(message.isEmpty ? String(cString: cdb_pg_error_message(connection)) : message)
        if cdb_pg_status(connection) != Int32(CDB_PG_CONNECTION_OK) || result == nil { markBroken() }
        return CofferError(
            isBroken ? .unavailable : .internal,
            settings.redact(text.isEmpty ? "the PostgreSQL connection failed" : text)
        )
    }

    private func markBroken() {
        isBroken = true
        inTransaction = false
    }

    func execute(_ sql: String) throws(CofferError) {
        cdb_pg_clear(try run(sql, nil))
    }

    func query(_ sql: String, _ parameters: [String]) throws(CofferError) -> [[String?]] {
        let result = try run(sql, parameters)
        defer { cdb_pg_clear(result) }
        let rows = cdb_pg_ntuples(result)
        let columns = cdb_pg_nfields(result)
        var out: [[String?]] = []
        out.reserveCapacity(Int(rows))
        for row in 0..<rows {
            var values: [String?] = []
            values.reserveCapacity(Int(columns))
            for column in 0..<columns {
                if cdb_pg_getisnull(result, row, column) != 0 {
                    values.append(nil)
                } else {
                    values.append(String(cString: cdb_pg_getvalue(result, row, column)))
                }
            }
            out.append(values)
        }
        return out
    }

    func begin() throws(CofferError) {
        try execute("BEGIN")
        inTransaction = true
    }

    func commit() throws(CofferError) {
        defer { inTransaction = false }
        try execute("COMMIT")
    }

    func rollback() throws(CofferError) {
        defer { inTransaction = false }
        try execute("ROLLBACK")
    }

    func isUsableWhenIdle() -> Bool {
        guard let handle, !isBroken else { return false }
        let fd = cdb_pg_socket(handle)
        if fd < 0 || cdb_socket_unusable(fd) != 0 {
            markBroken()
            return false
        }
        return true
    }

    func quoteLiteral(_ value: String) -> String { SQLQuote.postgresLiteral(value) }
    func quoteIdentifier(_ name: String) -> String { SQLQuote.postgresIdentifier(name) }
}

/// Calls `body` with a NULL-terminated array of C strings for `strings` (valid only inside `body`;
/// wiped afterwards, since one may be a password).
func withCStringArray<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    pointers.append(nil)
    defer {
        for pointer in pointers {
            if let pointer { explicit_bzero(pointer, strlen(pointer)) }
            free(pointer)
        }
    }
    return pointers.withUnsafeBufferPointer { buffer in
        buffer.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: buffer.count) { body($0) }
    }
}
