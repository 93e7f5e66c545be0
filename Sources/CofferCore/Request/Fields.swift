/// Typed reads of request fields with Vault's lenient conversions (query parameters arrive as
/// strings) and errors that name the field and what was expected.
extension Dictionary where Key == String, Value == JSONValue {
    package func string(_ key: String) throws(CofferError) -> String? {
        switch self[key] {
        case nil, .null?: return nil
        case .string(let s)?: return s
        case .number(let n)?: return n
        case .bool(let b)?: return b ? "true" : "false"
        case let other?: throw CofferError.invalid("\(key) must be a string, got \(other.typeName)")
        }
    }

    package func int(_ key: String) throws(CofferError) -> Int? {
        switch self[key] {
        case nil, .null?: return nil
        case .number(let n)?:
            if let v = Int(n) { return v }
            if let d = Double(n), d == d.rounded(), abs(d) < 1e15 { return Int(d) }
        case .string(let s)?:
            if s.isEmpty { return nil }
            if let v = Int(s) { return v }
        default: break
        }
        // The value is not quoted: it may be a secret pasted into the wrong field.
        let given: String
        switch self[key] {
        case .string?: given = "text that is not one"
        case .number?: given = "a fraction or a number out of range"
        default: given = "a \(self[key]?.typeName ?? "value")"
        }
        throw CofferError.invalid("\(key) must be an integer, got \(given)")
    }

    package func bool(_ key: String) throws(CofferError) -> Bool? {
        switch self[key] {
        case nil, .null?: return nil
        case .bool(let b)?: return b
        case .string(let s)?:
            switch s.lowercased() {
            case "true", "1", "t": return true
            case "false", "0", "f", "": return false
            default: break
            }
        case .number(let n)?:
            if n == "1" { return true }
            if n == "0" { return false }
        default: break
        }
        throw CofferError.invalid("\(key) must be a boolean, got \(self[key]!.typeName)")
    }

    /// An array of strings, or a comma-separated string (as the CLI sends lists).
    package func stringList(_ key: String) throws(CofferError) -> [String]? {
        switch self[key] {
        case nil, .null?: return nil
        case .string(let s)?:
            return s.split(separator: ",").map { String($0).trimmingSpaces() }.filter { !$0.isEmpty }
        case .array(let items)?:
            var out: [String] = []
            for item in items {
                guard let s = item.stringValue else { throw CofferError.invalid("\(key) must be a list of strings") }
                out.append(s)
            }
            return out
        case let other?: throw CofferError.invalid("\(key) must be a list of strings, got \(other.typeName)")
        }
    }

    /// A duration in whole seconds.
    package func duration(_ key: String) throws(CofferError) -> Int64? {
        guard let value = self[key], value != .null else { return nil }
        return try VaultDuration.seconds(value, field: key)
    }

    package func object(_ key: String) throws(CofferError) -> [String: JSONValue]? {
        switch self[key] {
        case nil, .null?: return nil
        case .object(let o)?: return o
        case let other?: throw CofferError.invalid("\(key) must be an object, got \(other.typeName)")
        }
    }

    /// A map of string to string (token meta, custom_metadata).
    package func stringMap(_ key: String) throws(CofferError) -> [String: String]? {
        guard let object = try object(key) else { return nil }
        var out: [String: String] = [:]
        for (k, v) in object {
            guard let s = v.stringValue else {
                throw CofferError.invalid("\(key).\(k) must be a string, got \(v.typeName)")
            }
            out[k] = s
        }
        return out
    }
}

extension String {
    package func trimmingSpaces() -> String {
        var s = Substring(self)
        while s.first?.isWhitespace == true { s = s.dropFirst() }
        while s.last?.isWhitespace == true { s = s.dropLast() }
        return String(s)
    }
}
