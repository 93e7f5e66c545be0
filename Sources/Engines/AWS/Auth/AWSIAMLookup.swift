import CofferCore

#if canImport(Glibc)
import Glibc
#endif

/// Coffer's own IAM calls for the aws auth method, through the shared query client
/// (``AWSQueryClient``, SigV4): iam:GetUser or iam:GetRole by the principal's name, with
/// `config/client`'s key, or else `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
/// `AWS_SESSION_TOKEN` from cofferd's environment (as Vault falls back to the environment; instance
/// metadata and `role_arn` are not looked at). `iam_endpoint` when set, else IAM's global endpoint.
package struct AWSIAMLookup: IAMPrincipalLookup {
    package init() {}

    static func credentials(_ config: AWSAuthClientConfig) throws(AWSAuthError) -> AWSCredentials {
        if !config.accessKey.isEmpty || !config.secretKey.isEmpty {
            return AWSCredentials(accessKeyID: config.accessKey, secretAccessKey: config.secretKey)
        }
        func env(_ name: String) -> String { getenv(name).map { String(cString: $0) } ?? "" }
        let id = env("AWS_ACCESS_KEY_ID")
        let secret = env("AWS_SECRET_ACCESS_KEY")
        guard !id.isEmpty, !secret.isEmpty else {
            throw AWSAuthError(
                "no AWS credentials for Coffer's IAM calls: set access_key and secret_key in config/client"
            )
        }
        let token = env("AWS_SESSION_TOKEN")
        return AWSCredentials(accessKeyID: id, secretAccessKey: secret, sessionToken: token.isEmpty ? nil : token)
    }

    package func lookUp(
        _ entity: IAMEntity,
        config: AWSAuthClientConfig
    ) throws(AWSAuthError) -> (arn: String, uniqueID: String) {
        var client = AWSQueryClient.iam(
            try Self.credentials(config),
            region: config.stsRegion.isEmpty ? "us-east-1" : config.stsRegion,
            endpoint: config.iamEndpoint
        )
        client.maxRetries = config.maxRetries < 0 ? 3 : config.maxRetries
        let (kind, action, parameter, result, idField) =
            switch entity.type {
            case "user": ("user", "GetUser", "UserName", "GetUserResult", ("User", "UserId"))
            case "role", "assumed-role": ("role", "GetRole", "RoleName", "GetRoleResult", ("Role", "RoleId"))
            default: throw AWSAuthError("unrecognized entity type: \(entity.type)")
            }
        let answer: AWSXML
        do {
            answer = try client.call(action: action, parameters: [(parameter, entity.friendlyName)])
        } catch {
            throw AWSAuthError("error fetching \(kind) \"\(entity.friendlyName)\": \(error)")
        }
        guard let arn = answer.text(result, idField.0, "Arn"), !arn.isEmpty,
            let id = answer.text(result, idField.0, idField.1), !id.isEmpty
        else { throw AWSAuthError("nil response from \(action)") }
        return (arn, id)
    }
}
