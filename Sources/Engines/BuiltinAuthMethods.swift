package import CofferCore
package import CofferFramework

/// The auth methods Coffer ships, by type (`sys/auth/<path>` with `type`). The token store
/// (`auth/token/`) is built into the core and is not listed here.
package enum BuiltinAuthMethods {
    package static var registry: EngineRegistry {
        let registry = EngineRegistry()
        return registry
    }
}
