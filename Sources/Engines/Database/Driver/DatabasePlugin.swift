package import CofferCore

/// The database a connection speaks to, named as Vault names its plugins (`plugin_name`).
package enum DatabasePlugin: String, Sendable, Hashable, CaseIterable {
    case postgresql = "postgresql-database-plugin"
    case mysql = "mysql-database-plugin"

    /// Vault's other names for the MySQL plugin: the same driver with other default statements and
    /// username limits, which the engine applies.
    package static let mysqlAliases: Set<String> = [
        "mysql-aurora-database-plugin", "mysql-rds-database-plugin", "mysql-legacy-database-plugin",
    ]

    /// The plugin `name` (Vault's `plugin_name`) selects.
    package init(name: String) throws(CofferError) {
        if let plugin = DatabasePlugin(rawValue: name) {
            self = plugin
        } else if DatabasePlugin.mysqlAliases.contains(name) {
            self = .mysql
        } else {
            let known = (DatabasePlugin.allCases.map(\.rawValue) + DatabasePlugin.mysqlAliases.sorted())
            throw CofferError.invalid(
                "unknown database plugin \"\(name)\": Coffer has \(known.joined(separator: ", "))"
            )
        }
    }

    /// The plugin's name as Vault spells it.
    package var name: String { rawValue }
}
