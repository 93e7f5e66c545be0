/// Vault's password policy (`sys/policies/password/<name>`): how long generated passwords are and
/// which characters they hold, in HCL:
///
/// ```hcl
/// length = 24
/// rule "charset" {
///   charset   = "abcdefghijklmnopqrstuvwxyz0123456789"
///   min-chars = 1
/// }
/// ```
///
/// Passwords draw each character uniformly from the union of the rules' charsets, and are drawn again
/// until every rule's `min-chars` is met. Errors are OpenBao's texts.
package struct PasswordPolicy: Sendable, Equatable {
    package static let lengthRange = 4...100

    package let length: Int
    package let rules: [Rule]
    let alphabet: [Character]

    package struct Rule: Sendable, Equatable {
        package var charset: Set<Character>
        package var minChars: Int
    }

    package init(hcl text: String) throws(CofferError) {
        let items: [HCLItem]
        do {
            items = try HCLReader.parse(text)
        } catch {
            throw CofferError.invalid("invalid password policy: unable to decode: \(error.description)")
        }
        var length = 0
        var rules: [Rule] = []
        for item in items {
            switch (item.keys.map(\.name), item.value.kind) {
            case (["length"], .number(let n)):
                length = Int(n) ?? 0
            case (["rule", "charset"], .object(let body)):
                var rule = Rule(charset: [], minChars: 0)
                for field in body {
                    switch (field.keys.map(\.name), field.value.kind) {
                    case (["charset"], .string(let s)): rule.charset = Set(s)
                    case (["min-chars"], .number(let n)): rule.minChars = max(0, Int(n) ?? 0)
                    default:
                        throw CofferError.invalid(
                            "invalid password policy: unknown field \"\(field.keys.map(\.name).joined(separator: " "))\" in a charset rule"
                        )
                    }
                }
                rules.append(rule)
            default:
                throw CofferError.invalid(
                    "invalid password policy: unknown item \"\(item.keys.map(\.name).joined(separator: " "))\""
                )
            }
        }
        guard PasswordPolicy.lengthRange.contains(length) else {
            throw CofferError.invalid("passwords must be between 4 and 100 characters")
        }
        let alphabet = rules.reduce(into: Set<Character>()) { $0.formUnion($1.charset) }
        guard !alphabet.isEmpty else { throw CofferError.invalid("invalid password policy: no charset specified") }
        // Saturating: min-chars values are the caller's and may sum past Int.max.
        let required = rules.reduce(0) { sum, rule in
            let (total, overflow) = sum.addingReportingOverflow(rule.minChars)
            return overflow ? Int.max : total
        }
        guard required <= length else {
            throw CofferError.invalid(
                "invalid password policy: specified rules require at least \(required) characters but \(length) is specified"
            )
        }
        self.length = length
        self.rules = rules
        self.alphabet = alphabet.sorted()
    }

    /// A password that meets every rule. Policies whose rules almost never hold at random (30 of 32
    /// characters from a 2-character set) give up after a bounded number of draws with an error.
    package func generate() throws(CofferError) -> String {
        for _ in 0..<10_000 {
            var out: [Character] = []
            out.reserveCapacity(length)
            // Uniform indices: 32-bit draws, rejecting the top partial range.
            let count = UInt64(alphabet.count)
            let limit = (UInt64(1) << 32) - (UInt64(1) << 32) % count
            while out.count < length {
                let bytes = Random.bytes(4 * length)
                for i in stride(from: 0, to: bytes.count, by: 4) where out.count < length {
                    let draw = bytes[i..<i + 4].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                    if draw < limit { out.append(alphabet[Int(draw % count)]) }
                }
            }
            if rules.allSatisfy({ rule in out.count(where: { rule.charset.contains($0) }) >= rule.minChars }) {
                return String(out)
            }
        }
        throw CofferError.invalid("the password policy's rules are too strict: no password met them in 10000 draws")
    }
}
