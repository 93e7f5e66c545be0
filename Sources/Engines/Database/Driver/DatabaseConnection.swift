package import CofferCore

/// One open connection to a database, used by one thread at a time (a ``ConnectionPool`` hands each to
/// one caller at a time). Every failure is a ``CofferError``: `unavailable` when the connection failed
/// (then ``isBroken`` is set), `internal` with the database's error text when a statement failed,
/// `invalidArgument` for a statement that cannot be sent (a NUL byte, a parameter count mismatch).
package protocol DatabaseConnection: AnyObject {
    var plugin: DatabasePlugin { get }
    /// Runs `sql`, which returns no rows (any it returns are discarded). PostgreSQL accepts several
    /// statements separated by `;` here; MySQL one.
    func execute(_ sql: String) throws(CofferError)
    /// Runs `sql` with `parameters` bound (`$1`, `$2`, ... for PostgreSQL, sent apart from the statement;
    /// `?` for MySQL, each replaced by the value quoted as a string literal) and returns its rows, each
    /// value as text (nil for SQL NULL).
    func query(_ sql: String, _ parameters: [String]) throws(CofferError) -> [[String?]]
    func begin() throws(CofferError)
    func commit() throws(CofferError)
    func rollback() throws(CofferError)
    /// Between ``begin()`` and ``commit()`` or ``rollback()``.
    var inTransaction: Bool { get }
    /// The connection failed (the server went away, the socket broke): it is of no further use.
    var isBroken: Bool { get }
    /// A cheap check, without a round trip, that an idle connection was not closed by the server (a
    /// restart, an idle timeout) since its last use.
    func isUsableWhenIdle() -> Bool
    /// `value` as a string literal in this database's syntax (for MySQL, as the server's SQL mode needs).
    func quoteLiteral(_ value: String) -> String
    /// `name` as a quoted identifier (`"name"` for PostgreSQL, `` `name` `` for MySQL).
    func quoteIdentifier(_ name: String) -> String
    /// Closes the connection (idempotent; also done when it is released).
    func close()
}

extension DatabaseConnection {
    /// ``query(_:_:)`` without parameters.
    package func query(_ sql: String) throws(CofferError) -> [[String?]] { try query(sql, []) }

    /// Runs `statements` in one transaction, in order; on the first failure rolls back (so nothing the
    /// earlier ones did stays) and throws `failed to execute query: <the database's error>` (Vault's
    /// wording). Note that MySQL commits implicitly before and after DDL such as `CREATE USER`, which
    /// no rollback undoes (Vault's MySQL plugin has the same limit).
    package func transaction(_ statements: [String]) throws(CofferError) {
        try begin()
        for statement in statements {
            do {
                try execute(statement)
            } catch {
                if !isBroken { try? rollback() }
                throw CofferError(error.code, "failed to execute query: " + error.message)
            }
        }
        do {
            try commit()
        } catch {
            if !isBroken && inTransaction { try? rollback() }
            throw CofferError(error.code, "failed to execute query: " + error.message)
        }
    }
}

/// Collapses a library's multi-line message ("...failed: FATAL:  text\n\tIs the server running...")
/// into one line with single spaces.
func oneLine(_ text: String) -> String {
    text.split(whereSeparator: { $0.isWhitespace }).joined(separator: " ")
}

/// Throws when `text` cannot be passed as a C string whole.
func checkNoNUL(_ text: String, _ what: String) throws(CofferError) {
    if text.utf8.contains(0) { throw CofferError.invalid("the \(what) contains a NUL byte") }
}
