package import CofferCore

/// One login against the directory, as Vault's LDAP method does it (hashicorp/cap `ldap.Client`
/// `Authenticate` with groups and user attributes), plus Coffer's nested-group extension.
package struct LDAPLogin: Sendable {
    package let config: LDAPConfig

    package init(config: LDAPConfig) { self.config = config }

    /// What the directory says about a user whose password it accepted.
    package struct Found: Sendable, Equatable {
        package var userDN: String
        /// Group names (CNs, or the values of `groupattr`), without repeats, in the order found.
        package var groups: [String]
        /// The first value of `userattr` on the user's entry (the entity alias name).
        package var aliasValue: String?
    }

    /// A failure of one URL that the next URL may not have: the connection, a timeout, TLS.
    struct Unreachable: Error {
        let message: String
    }

    /// Authenticates `username`; a wrong password, an unknown user, a user the filter does not find
    /// exactly once: "ldap operation failed: failed to bind as user" (400).
    package func authenticate(username: String, password: String) throws(CofferError) -> Found {
        let urls = config.url.split(separator: ",").map { String($0).trimmingCharacters(" ") }.filter { !$0.isEmpty }
        var errors: [String] = []
        for text in urls {
            guard let url = LDAPConnection.URL(text) else {
                // OpenBao's words for another scheme (naming the host part), else a parse error.
                if let scheme = text.firstRange(of: "://") {
                    let authority = text[scheme.upperBound...].prefix { $0 != "/" && $0 != "?" }
                    errors.append("invalid LDAP scheme in url \"\(authority)\"")
                } else {
                    errors.append("error parsing url \"\(text)\": not an ldap:// or ldaps:// URL")
                }
                continue
            }
            do {
                return try attempt(url, username: username, password: password)
            } catch let failure as Unreachable {
                errors.append("error connecting to host \"\(text)\": \(failure.message)")
            } catch let error as CofferError {
                throw error
            } catch {
                throw CofferError(.internal, "ldap login failed")
            }
        }
        if errors.isEmpty { errors.append("no LDAP url configured") }
        throw CofferError.invalid(
            "\(errors.count) error\(errors.count == 1 ? "" : "s") occurred:\n"
                + errors.map { "\t* \($0)" }.joined(separator: "\n") + "\n\n"
        )
    }

    /// The whole login against one server. Transport failures become ``Unreachable`` (try the next
    /// URL); LDAP answers become the login's result.
    func attempt(_ url: LDAPConnection.URL, username: String, password: String) throws -> Found {
        let connection: LDAPConnection
        do {
            connection = try LDAPConnection.open(
                url,
                startTLS: config.startTLS,
                tls: config.tls,
                connectTimeout: Double(config.connectionTimeout > 0 ? config.connectionTimeout : 30),
                requestTimeout: Double(config.requestTimeout > 0 ? config.requestTimeout : 90)
            )
        } catch {
            throw Unreachable(message: error.message)
        }
        defer { connection.unbind() }
        func run<T>(_ body: () throws(LDAPConnection.Failure) -> T) throws -> Result<T, LDAPConnection.Failure> {
            do {
                return .success(try body())
            } catch {
                if error.resultCode == nil { throw Unreachable(message: error.message) }
                return .failure(error)
            }
        }
        let bindFailed = CofferError.invalid(LDAPBackend.userBindFailed)

        // The DN to bind as.
        let hasService = !config.bindDN.isEmpty && !config.bindPass.isEmpty
        let bindDN: String
        if config.discoverDN || hasService {
            guard
                case .success = try run({ () throws(LDAPConnection.Failure) in
                    try connection.bind(config.bindDN, password: config.bindPass)
                })
            else { throw bindFailed }
            guard let filter = try? LDAPFilter.parse(renderUserFilter(username)) else { throw bindFailed }
            guard
                case .success(let entries) = try run({ () throws(LDAPConnection.Failure) in
                    try connection.search(base: config.userDN, scope: .subtree, filter: filter, attributes: ["1.1"])
                }), entries.count == 1
            else { throw bindFailed }
            bindDN = entries[0].dn
        } else if !config.upnDomain.isEmpty {
            bindDN = "\(LDAPFilter.escapeDNValue(username))@\(config.upnDomain)"
        } else {
            bindDN = "\(config.userAttr)=\(LDAPFilter.escapeDNValue(username)),\(config.userDN)"
        }

        // The user's password.
        guard
            case .success = try run({ () throws(LDAPConnection.Failure) in
                try connection.bind(bindDN, password: password)
            })
        else { throw bindFailed }
        if hasService {
            guard
                case .success = try run({ () throws(LDAPConnection.Failure) in
                    try connection.bind(config.bindDN, password: config.bindPass)
                })
            else {
                throw CofferError.invalid("ldap operation failed: failed to bind with BindDN")
            }
        }

        // The user's entry.
        var userDN = bindDN
        if !config.upnDomain.isEmpty {
            let filter = BER(
                tag: 0xA3,
                children: [.octets("userPrincipalName"), .octets("\(username)@\(config.upnDomain)")]
            )
            if case .success(let entries) = try run({ () throws(LDAPConnection.Failure) in
                try connection.search(base: config.userDN, scope: .subtree, filter: filter, attributes: ["1.1"])
            }), let last = entries.last {
                userDN = last.dn
            }
        }
        var aliasValue: String? = nil
        if !config.usernameAsAlias {
            let present = BER(tag: 0x87, bytes: Array("objectClass".utf8))
            if case .success(let entries) = try run({ () throws(LDAPConnection.Failure) in
                try connection.search(base: userDN, scope: .base, filter: present, attributes: [config.userAttr])
            }) {
                aliasValue = entries.first?.values(config.userAttr).first
            }
        }

        // Groups.
        var groups: [String] = []
        if !config.groupFilter.isEmpty && !config.groupDN.isEmpty {
            if config.anonymousGroupSearch {
                _ = try run({ () throws(LDAPConnection.Failure) in try connection.bind(config.bindDN, password: "") })
            }
            let filter: BER
            do {
                filter = try LDAPFilter.parse(renderGroupFilter(userDN: userDN, username: username))
            } catch {
                throw CofferError.invalid(
                    "LDAP search failed: LDAP Result Code 201 \"Filter Compile Error\": ldap: \(error.description)"
                )
            }
            let result = try run({ () throws(LDAPConnection.Failure) in
                try connection.search(
                    base: config.groupDN,
                    scope: .subtree,
                    filter: filter,
                    attributes: [config.groupAttr]
                )
            })
            let entries: [LDAPConnection.Entry]
            switch result {
            case .success(let found): entries = found
            case .failure(let failure): throw CofferError.invalid("LDAP search failed: \(failure.message)")
            }
            var nextDNs: [String] = []
            for entry in entries {
                let values = entry.values(config.groupAttr)
                if values.isEmpty {
                    groups.append(groupCN(entry.dn))
                    nextDNs.append(entry.dn)
                } else {
                    for value in values {
                        groups.append(groupCN(value))
                        nextDNs.append(isMemberOf ? value : entry.dn)
                    }
                }
            }
            if config.nestedGroupDepth > 0 {
                groups += try nestedGroups(start: nextDNs) { base, scope, filter in
                    let result = try run({ () throws(LDAPConnection.Failure) in
                        try connection.search(base: base, scope: scope, filter: filter, attributes: [config.groupAttr])
                    })
                    guard case .success(let entries) = result else { return nil }
                    return entries
                }
            }
        }
        var unique: [String] = []
        var seen = Set<String>()
        for g in groups where seen.insert(g).inserted { unique.append(g) }
        return Found(userDN: userDN, groups: unique, aliasValue: aliasValue)
    }

    /// Whether groups are read from the entries' `memberOf` (Active Directory style) rather than
    /// found by searching for the groups that list the user.
    var isMemberOf: Bool { config.groupAttr.lowercased() == "memberof" }

    /// The most groups the nested search visits in one login.
    static let maximumNestedGroups = 1000

    /// Coffer extension: the groups the direct groups belong to, level by level up to
    /// `nested_group_depth`, each group visited once (cycles end), at most
    /// ``maximumNestedGroups`` in all. With `groupattr` memberOf the parents are the group's own
    /// `memberOf` values; otherwise `groupfilter` is searched again with the group as the member
    /// (`{{.UserDN}}` its DN, `{{.Username}}` its CN). `search` answers nil for an LDAP error (that
    /// group is skipped) and throws for a connection failure.
    func nestedGroups(
        start: [String],
        search: (String, LDAPConnection.Scope, BER) throws -> [LDAPConnection.Entry]?
    ) throws -> [String] {
        var visited = Set(start.map(LDAPDN.normalized))
        var frontier = start
        var found: [String] = []
        for _ in 0..<config.nestedGroupDepth {
            var next: [String] = []
            for dn in frontier {
                guard visited.count < Self.maximumNestedGroups else { return found }
                if isMemberOf {
                    let present = BER(tag: 0x87, bytes: Array("objectClass".utf8))
                    let parents = (try search(dn, .base, present) ?? []).flatMap { $0.values(config.groupAttr) }
                    for parent in parents where visited.insert(LDAPDN.normalized(parent)).inserted {
                        found.append(groupCN(parent))
                        next.append(parent)
                    }
                } else {
                    guard let filter = try? LDAPFilter.parse(renderGroupFilter(userDN: dn, username: groupCN(dn)))
                    else { continue }
                    for entry in try search(config.groupDN, .subtree, filter) ?? []
                    where visited.insert(LDAPDN.normalized(entry.dn)).inserted {
                        let values = entry.values(config.groupAttr)
                        found += values.isEmpty ? [groupCN(entry.dn)] : values.map(groupCN)
                        next.append(entry.dn)
                    }
                }
            }
            if next.isEmpty { break }
            frontier = next
        }
        return found
    }

    /// The CN of a group's DN (Vault's getCN: the first RDN attribute named CN, any case), or the
    /// text itself when it is not a DN or has no CN.
    func groupCN(_ dn: String) -> String {
        guard let rdns = LDAPDN.parse(dn) else { return dn }
        for rdn in rdns {
            for (type, value) in rdn {
                if config.usePre111GroupCNBehavior ? type == "CN" : type.lowercased() == "cn" { return value }
            }
        }
        return dn
    }

    /// `userfilter` with `{{.UserAttr}}` and `{{.Username}}` filled in, escaped for a filter.
    func renderUserFilter(_ username: String) -> String {
        var attr = LDAPFilter.escape(config.userAttr)
        var name = LDAPFilter.escape(username)
        if !config.upnDomain.isEmpty {
            attr = "userPrincipalName"
            name = "\(LDAPFilter.escape(username))@\(config.upnDomain)"
        }
        return Self.render(config.userFilter, ["UserAttr": attr, "Username": name])
    }

    /// `groupfilter` with `{{.UserDN}}` and `{{.Username}}` filled in, escaped for a filter.
    func renderGroupFilter(userDN: String, username: String) -> String {
        Self.render(
            config.groupFilter,
            ["UserDN": LDAPFilter.escape(userDN), "Username": LDAPFilter.escape(username)]
        )
    }

    /// Replaces `{{.Name}}` (spaces inside the braces allowed) by its value; other text stays.
    package static func render(_ template: String, _ values: [String: String]) -> String {
        let bytes = Array(template.utf8)
        var out: [UInt8] = []
        var i = 0
        while i < bytes.count {
            if i + 1 < bytes.count && bytes[i] == UInt8(ascii: "{") && bytes[i + 1] == UInt8(ascii: "{") {
                var j = i + 2
                while j + 1 < bytes.count && !(bytes[j] == UInt8(ascii: "}") && bytes[j + 1] == UInt8(ascii: "}")) {
                    j += 1
                }
                if j + 1 < bytes.count {
                    let name = String(decoding: bytes[(i + 2)..<j], as: UTF8.self).trimmingCharacters(" ")
                    if name.hasPrefix("."), let value = values[String(name.dropFirst())] {
                        out += Array(value.utf8)
                        i = j + 2
                        continue
                    }
                }
            }
            out.append(bytes[i])
            i += 1
        }
        return String(decoding: out, as: UTF8.self)
    }
}

extension StringProtocol {
    fileprivate func trimmingCharacters(_ set: String) -> String {
        var s = Substring(self)
        while let first = s.first, set.contains(first) { s = s.dropFirst() }
        while let last = s.last, set.contains(last) { s = s.dropLast() }
        return String(s)
    }
}
