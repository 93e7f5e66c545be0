import CDatabaseDrivers
import CofferCore

#if canImport(Glibc)
import Glibc
#endif

/// A MySQL or MariaDB connection through libmariadb (or libmysqlclient), loaded on first use.
final class MySQLConnection: DatabaseConnection {
    private var handle: OpaquePointer?
    private let settings: DatabaseConnectionSettings
    private(set) var inTransaction = false
    private(set) var isBroken = false

    var plugin: DatabasePlugin { .mysql }

    init(dsn: MySQLDSN, settings: DatabaseConnectionSettings) throws(CofferError) {
        self.settings = settings
        if let failure = cdb_my_load() { throw CofferError(.unavailable, String(cString: failure)) }
        guard let connection = cdb_my_init() else {
            throw CofferError(.outOfMemory, "the MySQL client library could not allocate a connection")
        }
        var connectTimeout = UInt32(dsn.connectTimeoutSeconds ?? settings.connectTimeoutSeconds)
        _ = cdb_my_options(connection, Int32(CDB_MYSQL_OPT_CONNECT_TIMEOUT), &connectTimeout)
        if let seconds = dsn.readTimeoutSeconds {
            var value = UInt32(seconds)
            _ = cdb_my_options(connection, Int32(CDB_MYSQL_OPT_READ_TIMEOUT), &value)
        }
        if let seconds = dsn.writeTimeoutSeconds {
            var value = UInt32(seconds)
            _ = cdb_my_options(connection, Int32(CDB_MYSQL_OPT_WRITE_TIMEOUT), &value)
        }
        _ = cdb_my_options(connection, Int32(CDB_MYSQL_SET_CHARSET_NAME), dsn.charset)
        let host: String?
        let port: UInt32
        let socket: String?
        var protocolType: UInt32
        switch dsn.address {
        case .tcp(let h, let p):
            (host, port, socket, protocolType) = (h, UInt32(p), nil, UInt32(CDB_MYSQL_PROTOCOL_TCP))
        case .unix(let path):
            (host, port, socket, protocolType) = ("localhost", 0, path, UInt32(CDB_MYSQL_PROTOCOL_SOCKET))
        }
        _ = cdb_my_options(connection, Int32(CDB_MYSQL_OPT_PROTOCOL), &protocolType)
        let number = withOptionalCString(host) { host in
            withOptionalCString(socket) { socket in
                withOptionalCString(dsn.database.isEmpty ? nil : dsn.database) { database in
                    withWipedCString(dsn.password) { password in
                        cdb_my_connect(connection, host, dsn.user, password, database, port, socket)
                    }
                }
            }
        }
        guard number == 0 else {
            let reason = MySQLConnection.errorText(connection)
            cdb_my_close(connection)
            throw CofferError(
                .unavailable,
                settings.redact("failed to connect to \(dsn.addressDescription) as \"\(dsn.user)\": \(reason)")
            )
        }
        handle = connection
        for variable in dsn.sessionVariables {
            do {
                try execute("SET \(variable.name)=\(variable.value)")
            } catch {
                close()
                throw CofferError(
                    .invalidArgument,
                    "connection_url parameter \(variable.name) could not be set as a session variable: "
                        + error.message
                )
            }
        }
    }

    deinit { close() }

    /// The Go driver's form: `Error 1045 (28000): Access denied for user ...`.
    static func errorText(_ connection: OpaquePointer) -> String {
        let number = cdb_my_errno(connection)
        let state = String(cString: cdb_my_sqlstate(connection))
        let message = oneLine(String(cString: cdb_my_error(connection)))
        return state.isEmpty || state == "00000"
            ? "Error \(number): \(message)" : "Error \(number) (\(state)): \(message)"
    }

    /// Client errors (2000-2999: the connection to the server failed), and the server's "connection
    /// killed", "shutdown in progress" and idle-disconnect errors, leave the connection unusable.
    static func breaksConnection(_ number: UInt32) -> Bool {
        (2000..<3000).contains(number) || [1053, 1927, 4031].contains(number)
    }

    func close() {
        if let handle { cdb_my_close(handle) }
        handle = nil
        inTransaction = false
    }

    private func live() throws(CofferError) -> OpaquePointer {
        guard let handle, !isBroken else { throw CofferError(.unavailable, "the MySQL connection is closed") }
        return handle
    }

    private func failure(_ connection: OpaquePointer) -> CofferError {
        let number = cdb_my_errno(connection)
        if MySQLConnection.breaksConnection(number) {
            isBroken = true
            inTransaction = false
        }
        return CofferError(isBroken ? .unavailable : .internal, settings.redact(MySQLConnection.errorText(connection)))
    }

    /// Runs `sql`; returns its rows when it has a result set.
    private func run(_ sql: String, wantRows: Bool) throws(CofferError) -> [[String?]] {
        try checkNoNUL(sql, "statement")
        let connection = try live()
        let status = sql.withCString { cdb_my_query(connection, $0, UInt(strlen($0))) }
        guard status == 0 else { throw failure(connection) }
        guard let result = cdb_my_store_result(connection) else {
            if cdb_my_field_count(connection) != 0 { throw failure(connection) }
            return []
        }
        defer { cdb_my_free_result(result) }
        guard wantRows else { return [] }
        let columns = Int(cdb_my_num_fields(result))
        var rows: [[String?]] = []
        var lengths: UnsafeMutablePointer<UInt>? = nil
        while let row = cdb_my_fetch_row(result, &lengths) {
            var values: [String?] = []
            values.reserveCapacity(columns)
            for column in 0..<columns {
                if let value = row[column] {
                    let length = lengths.map { Int($0[column]) } ?? strlen(value)
                    values.append(
                        String(
                            decoding: UnsafeRawBufferPointer(start: value, count: length),
                            as: UTF8.self
                        )
                    )
                } else {
                    values.append(nil)
                }
            }
            rows.append(values)
        }
        if cdb_my_errno(connection) != 0 { throw failure(connection) }
        return rows
    }

    func execute(_ sql: String) throws(CofferError) {
        _ = try run(sql, wantRows: false)
    }

    func query(_ sql: String, _ parameters: [String]) throws(CofferError) -> [[String?]] {
        try run(try bind(sql, parameters), wantRows: true)
    }

    /// `sql` with each `?` outside quotes and backticks replaced by the next parameter as a literal.
    func bind(_ sql: String, _ parameters: [String]) throws(CofferError) -> String {
        if parameters.isEmpty && !sql.contains("?") { return sql }
        var out = ""
        var next = 0
        var quote: Character? = nil
        var escaped = false
        for character in sql {
            if let q = quote {
                out.append(character)
                if escaped {
                    escaped = false
                } else if character == "\\" && q != "`" {
                    escaped = true
                } else if character == q {
                    quote = nil
                }
                continue
            }
            switch character {
            case "'", "\"", "`":
                quote = character
                out.append(character)
            case "?":
                guard next < parameters.count else {
                    throw CofferError.invalid(
                        "the query has more ? placeholders than the \(parameters.count) parameters"
                    )
                }
                try checkNoNUL(parameters[next], "query parameter")
                out += quoteLiteral(parameters[next])
                next += 1
            default:
                out.append(character)
            }
        }
        guard next == parameters.count else {
            throw CofferError.invalid("the query has \(next) ? placeholders but \(parameters.count) parameters")
        }
        return out
    }

    func begin() throws(CofferError) {
        try execute("START TRANSACTION")
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
        let fd = cdb_my_socket(handle)
        // Without mysql_get_socket (libmysqlclient) there is nothing cheap to check.
        if fd >= 0 && cdb_socket_unusable(fd) != 0 {
            isBroken = true
            return false
        }
        return true
    }

    func quoteLiteral(_ value: String) -> String {
        guard let handle else { return SQLQuote.mysqlLiteral(value) }
        let bytes = Array(value.utf8)
        var buffer = [CChar](repeating: 0, count: bytes.count * 2 + 1)
        let length = bytes.withUnsafeBufferPointer { source in
            source.withMemoryRebound(to: CChar.self) {
                cdb_my_escape(handle, &buffer, $0.baseAddress, UInt(bytes.count))
            }
        }
        defer { explicit_bzero(&buffer, buffer.count) }
        // libmysqlclient refuses (returns -1) under NO_BACKSLASH_ESCAPES, where doubling quotes is right.
        if length == UInt.max { return "'" + value.replacing("'", with: "''") + "'" }
        return "'" + String(decoding: buffer[..<Int(length)].map { UInt8(bitPattern: $0) }, as: UTF8.self) + "'"
    }

    func quoteIdentifier(_ name: String) -> String { SQLQuote.mysqlIdentifier(name) }
}

func withOptionalCString<R>(_ text: String?, _ body: (UnsafePointer<CChar>?) -> R) -> R {
    guard let text else { return body(nil) }
    return text.withCString { body($0) }
}

/// `body` with a copy of `text` as a C string that is wiped afterwards (a password).
func withWipedCString<R>(_ text: String, _ body: (UnsafePointer<CChar>) -> R) -> R {
    let copy = strdup(text)!
    defer {
        explicit_bzero(copy, strlen(copy))
        free(copy)
    }
    return body(copy)
}
