package import CofferCore
package import CofferFramework

/// An ldap mount's `config`, with Vault's fields and defaults (as OpenBao 2.6.2 reads them back).
/// Stored as JSON at `config` with the bind password and the client key (the barrier encrypts
/// them); reads leave both out. A write changes only the fields it names, as OpenBao's does.
///
/// Coffer extension: `nested_group_depth` (0, the default, resolves direct groups only, as
/// OpenBao does on OpenLDAP; 1 to 10 follows group-in-group membership that many levels).
package struct LDAPConfig: Sendable, Equatable {
    package static let defaultGroupFilter = "(|(memberUid={{.Username}})(member={{.UserDN}})(uniqueMember={{.UserDN}}))"
    package static let defaultUserFilter = "({{.UserAttr}}={{.Username}})"
    package static let maximumNestedDepth = 10

    package var url = "ldap://127.0.0.1"
    package var userDN = ""
    package var userAttr = "cn"
    package var userFilter = LDAPConfig.defaultUserFilter
    package var upnDomain = ""
    package var bindDN = ""
    package var bindPass = ""
    package var discoverDN = false
    package var denyNullBind = true
    package var anonymousGroupSearch = false
    package var groupDN = ""
    package var groupFilter = LDAPConfig.defaultGroupFilter
    package var groupAttr = "cn"
    package var caseSensitiveNames = false
    package var usernameAsAlias = false
    package var startTLS = false
    package var insecureTLS = false
    package var certificate = ""
    package var clientTLSCert = ""
    package var clientTLSKey = ""
    package var tlsMinVersion = "tls12"
    package var tlsMaxVersion = "tls12"
    package var requestTimeout: Int64 = 90
    package var connectionTimeout: Int64 = 30
    package var dereferenceAliases = "never"
    package var maxPageSize = 0
    package var usePre111GroupCNBehavior = false
    package var useTokenGroups = false
    package var nestedGroupDepth = 0
    package var token = TokenParameters()

    package init() {}

    static let tlsVersions: [String: Int32] = ["tls10": 0x0301, "tls11": 0x0302, "tls12": 0x0303, "tls13": 0x0304]

    static let fields: [Field] =
        [
            .string("url"), .string("userdn"), .string("userattr"), .string("userfilter"), .string("upndomain"),
            .string("binddn"), .string("bindpass"), .bool("discoverdn"), .bool("deny_null_bind"),
            .bool("anonymous_group_search"), .string("groupdn"), .string("groupfilter"), .string("groupattr"),
            .bool("case_sensitive_names"), .bool("username_as_alias"), .bool("starttls"), .bool("insecure_tls"),
            .string("certificate"), .string("client_tls_cert"), .string("client_tls_key"), .string("tls_min_version"),
            .string("tls_max_version"), .duration("request_timeout"), .duration("connection_timeout"),
            .string("dereference_aliases"), .int("max_page_size", 0...Int(Int32.max)),
            .bool("use_pre111_group_cn_behavior"), .bool("use_token_groups"),
            .int("nested_group_depth", 0...LDAPConfig.maximumNestedDepth),
        ] + TokenParameters.fields

    /// Applies the fields a write names and checks the result with OpenBao's messages; returns the
    /// warnings OpenBao gives.
    package mutating func update(from f: FieldData) throws(CofferError) -> [String] {
        if let v = f.string("url") { url = v.lowercased() }
        if let v = f.string("userdn") { userDN = v }
        if let v = f.string("userattr") { userAttr = v.lowercased() }
        if let v = f.string("userfilter") { userFilter = v }
        if let v = f.string("upndomain") { upnDomain = v }
        if let v = f.string("binddn") { bindDN = v }
        if let v = f.string("bindpass") { bindPass = v }
        if let v = f.bool("discoverdn") { discoverDN = v }
        if let v = f.bool("deny_null_bind") { denyNullBind = v }
        if let v = f.bool("anonymous_group_search") { anonymousGroupSearch = v }
        if let v = f.string("groupdn") { groupDN = v }
        if let v = f.string("groupfilter") { groupFilter = v }
        if let v = f.string("groupattr") { groupAttr = v }
        if let v = f.bool("case_sensitive_names") { caseSensitiveNames = v }
        if let v = f.bool("username_as_alias") { usernameAsAlias = v }
        if let v = f.bool("starttls") { startTLS = v }
        if let v = f.bool("insecure_tls") { insecureTLS = v }
        if let v = f.string("certificate") {
            if !v.isEmpty && !v.contains("-----BEGIN CERTIFICATE-----") {
                throw CofferError.invalid(
                    "failed to parse server tls cert: failed to decode PEM block in the certificate"
                )
            }
            certificate = v
        }
        if let v = f.string("client_tls_cert") { clientTLSCert = v }
        if let v = f.string("client_tls_key") { clientTLSKey = v }
        if let v = f.string("tls_min_version") {
            guard Self.tlsVersions[v] != nil else { throw CofferError.invalid("invalid 'tls_min_version'") }
            tlsMinVersion = v
        }
        if let v = f.string("tls_max_version") {
            guard Self.tlsVersions[v] != nil else { throw CofferError.invalid("invalid 'tls_max_version'") }
            tlsMaxVersion = v
        }
        if (Self.tlsVersions[tlsMaxVersion] ?? 0) < (Self.tlsVersions[tlsMinVersion] ?? 0) {
            throw CofferError.invalid("'tls_max_version' must be greater than or equal to 'tls_min_version'")
        }
        if clientTLSCert.isEmpty != clientTLSKey.isEmpty {
            throw CofferError.invalid("both client_tls_cert and client_tls_key must be set")
        }
        if let v = f.seconds("request_timeout") { requestTimeout = v }
        if let v = f.seconds("connection_timeout") { connectionTimeout = v }
        if let v = f.string("dereference_aliases") {
            guard ["never", "finding", "searching", "always"].contains(v) else {
                throw CofferError.invalid("invalid 'dereference_aliases'")
            }
            dereferenceAliases = v
        }
        if let v = f.int("max_page_size") { maxPageSize = v }
        if let v = f.bool("use_pre111_group_cn_behavior") { usePre111GroupCNBehavior = v }
        if let v = f.bool("use_token_groups") {
            guard !v else {
                throw CofferError.invalid("use_token_groups (Active Directory tokenGroups) is not supported by Coffer")
            }
            useTokenGroups = v
        }
        if let v = f.int("nested_group_depth") { nestedGroupDepth = v }
        try token.update(from: f)
        // OpenBao warns unless the filter names userattr: as the template, or as the attribute
        // compared with the username.
        let rendered = LDAPLogin.render(userFilter, ["UserAttr": userAttr, "Username": "*"])
        let considersUserAttr = userFilter.contains("{{.UserAttr}}") || rendered.contains("\(userAttr)=*")
        return considersUserAttr
            ? []
            : ["userfilter configured does not consider userattr and may result in colliding entity aliases on logins"]
    }

    /// What `GET config` shows: never `bindpass` or `client_tls_key`.
    package var readable: [String: JSONValue] {
        var out = token.json
        let values: [String: JSONValue] = [
            "url": .string(url), "userdn": .string(userDN), "userattr": .string(userAttr),
            "userfilter": .string(userFilter), "upndomain": .string(upnDomain), "binddn": .string(bindDN),
            "discoverdn": .bool(discoverDN), "deny_null_bind": .bool(denyNullBind),
            "anonymous_group_search": .bool(anonymousGroupSearch), "groupdn": .string(groupDN),
            "groupfilter": .string(groupFilter), "groupattr": .string(groupAttr),
            "case_sensitive_names": .bool(caseSensitiveNames), "username_as_alias": .bool(usernameAsAlias),
            "starttls": .bool(startTLS), "insecure_tls": .bool(insecureTLS), "certificate": .string(certificate),
            "tls_min_version": .string(tlsMinVersion), "tls_max_version": .string(tlsMaxVersion),
            "request_timeout": .int(requestTimeout), "connection_timeout": .int(connectionTimeout),
            "dereference_aliases": .string(dereferenceAliases), "max_page_size": .int(maxPageSize),
            "use_pre111_group_cn_behavior": .bool(usePre111GroupCNBehavior), "use_token_groups": .bool(useTokenGroups),
        ]
        out.merge(values) { _, new in new }
        if !clientTLSCert.isEmpty { out["client_tls_cert"] = .string(clientTLSCert) }
        if nestedGroupDepth > 0 { out["nested_group_depth"] = .int(nestedGroupDepth) }
        return out
    }

    /// The stored form (with the secrets).
    var stored: [String: JSONValue] {
        var out = readable
        out["bindpass"] = .string(bindPass)
        out["client_tls_cert"] = .string(clientTLSCert)
        out["client_tls_key"] = .string(clientTLSKey)
        out["nested_group_depth"] = .int(nestedGroupDepth)
        return out
    }

    init(stored o: [String: JSONValue]) {
        func s(_ k: String, _ d: String) -> String { o[k]?.stringValue ?? d }
        func b(_ k: String, _ d: Bool) -> Bool { o[k]?.boolValue ?? d }
        url = s("url", url)
        userDN = s("userdn", userDN)
        userAttr = s("userattr", userAttr)
        userFilter = s("userfilter", userFilter)
        upnDomain = s("upndomain", upnDomain)
        bindDN = s("binddn", bindDN)
        bindPass = s("bindpass", bindPass)
        discoverDN = b("discoverdn", discoverDN)
        denyNullBind = b("deny_null_bind", denyNullBind)
        anonymousGroupSearch = b("anonymous_group_search", anonymousGroupSearch)
        groupDN = s("groupdn", groupDN)
        groupFilter = s("groupfilter", groupFilter)
        groupAttr = s("groupattr", groupAttr)
        caseSensitiveNames = b("case_sensitive_names", caseSensitiveNames)
        usernameAsAlias = b("username_as_alias", usernameAsAlias)
        startTLS = b("starttls", startTLS)
        insecureTLS = b("insecure_tls", insecureTLS)
        certificate = s("certificate", certificate)
        clientTLSCert = s("client_tls_cert", clientTLSCert)
        clientTLSKey = s("client_tls_key", clientTLSKey)
        tlsMinVersion = s("tls_min_version", tlsMinVersion)
        tlsMaxVersion = s("tls_max_version", tlsMaxVersion)
        requestTimeout = Int64(o["request_timeout"]?.intValue ?? Int(requestTimeout))
        connectionTimeout = Int64(o["connection_timeout"]?.intValue ?? Int(connectionTimeout))
        dereferenceAliases = s("dereference_aliases", dereferenceAliases)
        maxPageSize = o["max_page_size"]?.intValue ?? 0
        usePre111GroupCNBehavior = b("use_pre111_group_cn_behavior", false)
        useTokenGroups = b("use_token_groups", false)
        nestedGroupDepth = o["nested_group_depth"]?.intValue ?? 0
        token = TokenParameters(json: o)
    }

    /// The TLS settings of a connection.
    var tls: LDAPConnection.TLS {
        var t = LDAPConnection.TLS()
        t.caPEM = certificate
        t.insecure = insecureTLS
        t.minVersion = Self.tlsVersions[tlsMinVersion] ?? 0x0303
        t.maxVersion = Self.tlsVersions[tlsMaxVersion] ?? 0x0303
        t.clientCertPEM = clientTLSCert
        t.clientKeyPEM = clientTLSKey
        return t
    }
}
