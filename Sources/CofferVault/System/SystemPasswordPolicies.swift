package import CofferCore
package import CofferFramework

/// `sys/policies/password/*`: Vault's password policies, which the database engine's
/// `password_policy` names. Stored in the barrier under `sys/password_policy/<name>` as given.
extension SystemBackend {
    static let passwordPolicyPrefix = "password_policy/"

    static let passwordPolicyPaths: [Path<SystemBackend>] = [
        Path("policies/password/", list: SystemBackend.listPasswordPolicies),
        Path("policies/password/{name}/generate", read: SystemBackend.generatePassword),
        Path(
            "policies/password/{name}",
            fields: [.string("policy")],
            read: SystemBackend.readPasswordPolicy,
            write: SystemBackend.writePasswordPolicy,
            delete: SystemBackend.deletePasswordPolicy
        ),
    ]

    func listPasswordPolicies(_ request: BackendRequest) throws(CofferError) -> Response {
        let keys = try request.storage.list(Self.passwordPolicyPrefix)
        guard !keys.isEmpty else { return .notFound }
        return Response(data: ["keys": .array(keys.map { .string($0) })])
    }

    func readPasswordPolicy(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let text = try request.storage.get(Self.passwordPolicyPrefix + request.capture("name")) else {
            throw CofferError(.notFound, "policy does not exist")
        }
        return Response(data: ["policy": .string(String(decoding: text, as: UTF8.self))])
    }

    func writePasswordPolicy(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let text = request.fields.string("policy"), !text.isEmpty else {
            throw CofferError.invalid("missing policy")
        }
        // Stored only if it parses and can generate: a policy no password meets is refused here.
        _ = try PasswordPolicy(hcl: text).generate()
        try request.storage.put(Self.passwordPolicyPrefix + request.capture("name"), Array(text.utf8))
        return .noContent
    }

    func deletePasswordPolicy(_ request: BackendRequest) throws(CofferError) -> Response {
        try request.storage.delete(Self.passwordPolicyPrefix + request.capture("name"))
        return .noContent
    }

    func generatePassword(_ request: BackendRequest) throws(CofferError) -> Response {
        guard let policy = try core.passwordPolicy(request.capture("name")) else {
            throw CofferError(.notFound, "policy does not exist")
        }
        return Response(data: ["password": .string(try policy.generate())])
    }
}

extension Core: SystemView {
    package func passwordPolicy(_ name: String) throws(CofferError) -> PasswordPolicy? {
        guard !name.isEmpty, let text = try barrier.get("sys/" + SystemBackend.passwordPolicyPrefix + name) else {
            return nil
        }
        return try PasswordPolicy(hcl: String(decoding: text, as: UTF8.self))
    }

    package func publishEvent(
        _ type: String,
        mount: MountEntry,
        namespaceID: String,
        metadata: [String: JSONValue],
        now: Timestamp
    ) {
        let namespace = namespaceID.isEmpty ? root : self.namespace(id: namespaceID)
        let plugin: JSONValue = [
            "mount_path": .string(mount.path), "mount_accessor": .string(mount.accessor),
            "plugin": .string(mount.type),
        ]
        events.publish(
            type,
            namespace: namespace.map { $0.path.isEmpty ? "root" : $0.path } ?? "root",
            data: ["metadata": .object(metadata), "plugin_info": plugin],
            time: now
        )
    }
}
