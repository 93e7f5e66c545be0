package import CofferCore
package import CofferFramework

/// The auth methods Coffer ships, by type (`sys/auth/<path>` with `type`): "approle" (machines log
/// in with a role ID and a secret ID) and "userpass" (users and scrypt-hashed passwords). The token store
/// (`auth/token/`) is built into the core and is not listed here.
///
/// "jwt" and "oidc": one backend under two names, as OpenBao has it (JWT login and the OIDC
/// authorization-code flow); "kubernetes": service-account tokens checked by TokenReview or
/// local keys; "aws": AWS IAM principals, by a signed sts:GetCallerIdentity Coffer forwards to STS;
/// "ldap": directory users and groups over Coffer's own LDAPv3 client.
package enum BuiltinAuthMethods {
    package static var registry: EngineRegistry {
        var registry = EngineRegistry()
        registry.register("approle") { _ in AppRoleBackend() }
        registry.register("userpass") { _ in UserpassBackend() }
        registry.register("jwt") { _ in JWTBackend() }
        registry.register("oidc") { _ in JWTBackend() }
        registry.register("kubernetes") { _ in KubernetesBackend() }
        registry.register("aws") { _ in AWSAuthBackend(lookup: AWSIAMLookup()) }
        registry.register("ldap") { _ in LDAPBackend() }
        return registry
    }
}
