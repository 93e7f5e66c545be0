public import CofferCore

/// The engines Coffer ships, by mount type.
public enum BuiltinEngines {
    /// "kv": v1 unless `options.version` is "2" (a "kv-v2" mount is stored as "kv" with version "2").
    public static var registry: EngineRegistry {
        var registry = EngineRegistry()
        registry.register("kv") { entry throws(CofferError) in
            switch entry.options["version"] ?? "1" {
            case "1": KVv1Backend()
            case "2": KVv2Backend()
            case let other: throw CofferError(.invalidArgument, "unknown KV version \"\(other)\"; use \"1\" or \"2\"")
            }
        }
        registry.register("transit") { _ in TransitBackend() }
        return registry
    }
}
