package import CofferCore
package import CofferFramework

/// The engines Coffer ships, by mount type.
package enum BuiltinEngines {
    /// "kv": v1 unless `options.version` is "2" (a "kv-v2" mount is stored as "kv" with version "2");
    /// "generic": KV v1 under Vault's old name; "transit"; "database" (PostgreSQL and MySQL credentials); "pki" (a certificate authority); "aws" (IAM users and STS credentials); "cubbyhole" (mounted by the core in every
    /// vault, not by users).
    package static var registry: EngineRegistry {
        var registry = EngineRegistry()
        registry.register("kv") { entry throws(CofferError) in
            switch entry.options["version"] ?? "1" {
            case "1": KVv1Backend()
            case "2": KVv2Backend()
            case let other: throw CofferError(.invalidArgument, "unknown KV version \"\(other)\"; use \"1\" or \"2\"")
            }
        }
        // Vault's old name for KV version 1. Served by KV v1 and listed as "generic", as OpenBao does;
        // like OpenBao it has no versions.
        registry.register("generic") { entry throws(CofferError) in
            guard entry.options["version"] == nil else {
                throw CofferError(.invalidArgument, "secrets engine \"generic\" does not allow setting a version")
            }
            return KVv1Backend()
        }
        registry.register("transit") { _ in TransitBackend() }
        registry.register("cubbyhole") { _ in CubbyholeBackend() }
        registry.register("database") { _ in DatabaseBackend() }
        registry.register("pki") { _ in PKIBackend() }
        registry.register("aws") { _ in AWSBackend() }
        return registry
    }
}
