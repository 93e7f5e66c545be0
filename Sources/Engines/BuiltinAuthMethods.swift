package import CofferCore
package import CofferFramework

/// The auth methods Coffer ships, by type (`sys/auth/<path>` with `type`): "approle" (machines log
/// in with a role ID and a secret ID) and "userpass" (users and scrypt-hashed passwords). The token store
/// (`auth/token/`) is built into the core and is not listed here.
package enum BuiltinAuthMethods {
    package static var registry: EngineRegistry {
        var registry = EngineRegistry()
        registry.register("approle") { _ in AppRoleBackend() }
        registry.register("userpass") { _ in UserpassBackend() }
        return registry
    }
}
