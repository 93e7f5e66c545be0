import CofferCore

/// Which names a role lets a certificate carry: OpenBao 2.7's `validateNames` and
/// `validateCommonName` (its PKI engine's cert_util.go), with one difference on purpose: names are
/// compared with `allowed_domains` and `localhost` without regard to ASCII case, as DNS compares them
/// (RFC 4343). OpenBao ignores case only for `allow_bare_domains` (docs/pki.md).
struct NameRules {
    private let allowAnyName: Bool
    private let enforceHostnames: Bool
    private let allowWildcards: Bool
    private let allowLocalhost: Bool
    private let allowSubdomains: Bool
    private let allowBareDomains: Bool
    private let allowGlobDomains: Bool
    /// `allowed_domains`, in lower case, without empty entries.
    private let domains: [String]
    private let cnValidations: [String]

    init(_ role: PKIRole) {
        allowAnyName = role.bool("allow_any_name")
        enforceHostnames = role.bool("enforce_hostnames")
        allowWildcards = role.bool("allow_wildcard_certificates")
        allowLocalhost = role.bool("allow_localhost")
        allowSubdomains = role.bool("allow_subdomains")
        allowBareDomains = role.bool("allow_bare_domains")
        allowGlobDomains = role.bool("allow_glob_domains")
        domains = role.strings("allowed_domains").filter { !$0.isEmpty }.map(Fold.lower)
        cnValidations = role.strings("cn_validations")
    }

    /// Whether the role allows `name`, a DNS name or an email address, in a certificate.
    func allows(_ name: String) -> Bool {
        var reduced = Substring(name)
        var isEmail = false
        if name.utf8.contains(UInt8(ascii: "@")) {
            let parts = name.split(separator: "@", omittingEmptySubsequences: false)
            guard parts.count == 2 else { return false }
            reduced = parts[1]
            isEmail = true
        }
        let domain = reduced  // an email's domain; the name itself otherwise
        // RFC 6125 wildcards: one `*`, in the left-most label (`*.`, `a*.`, `*b.`, `a*b.`).
        var wildcardLabel: Substring = ""
        let isWildcard = reduced.utf8.contains(UInt8(ascii: "*"))
        if isWildcard {
            guard allowWildcards, reduced.utf8.count(where: { $0 == UInt8(ascii: "*") }) == 1, !isEmail else {
                return false
            }
            if let dot = reduced.firstIndex(of: ".") {
                wildcardLabel = reduced[..<dot]
                reduced = reduced[reduced.index(after: dot)...]
                if reduced.utf8.contains(UInt8(ascii: "*")) { return false }
            } else {
                wildcardLabel = reduced
                reduced = ""
            }
        }
        if enforceHostnames {
            if !reduced.isEmpty {
                guard IDNA.isHostname(reduced) else { return false }
            }
            if isWildcard && !Hostname.isWildcardLabel(wildcardLabel) { return false }
        }
        if allowAnyName { return true }

        if allowLocalhost {
            if Fold.equals(reduced, "localhost") || Fold.equals(reduced, "localdomain") { return true }
            if allowSubdomains
                && (Fold.hasSuffix(reduced, dot: "localhost") || Fold.hasSuffix(reduced, dot: "localdomain"))
            {
                return true
            }
        }
        for allowed in domains {
            if allowBareDomains && (Fold.equals(Substring(name), allowed) || (isEmail && Fold.equals(domain, allowed)))
            {
                return true
            }
            if allowSubdomains
                && (Fold.hasSuffix(reduced, dot: allowed) || (isWildcard && Fold.equals(reduced, allowed)))
            {
                return true
            }
            if allowGlobDomains && allowed.utf8.contains(UInt8(ascii: "*"))
                && PKIBackend.glob(allowed, Fold.lower(name))
            {
                return true
            }
        }
        return false
    }

    /// Whether `cn_validations` is `["disabled"]`: the common name is not checked (its SAN still is).
    var skipsCommonName: Bool { cnValidations == ["disabled"] }

    /// Whether the role allows `name` as a certificate's common name: as `allows`, and of a kind
    /// (`email` for a name with `@`, else `hostname`) its `cn_validations` lists.
    func allowsCommonName(_ name: String) -> Bool {
        if skipsCommonName { return true }
        guard allows(name) else { return false }
        return cnValidations.isEmpty || cnValidations.contains(name.contains("@") ? "email" : "hostname")
    }
}

/// Comparisons that ignore ASCII case, as DNS names compare (RFC 4343), against text already in
/// lower case; no lower-case copy of the name is made.
private enum Fold {
    static func lower(_ c: UInt8) -> UInt8 { c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z") ? c | 0x20 : c }

    static func lower(_ text: String) -> String { String(decoding: text.utf8.map(lower), as: UTF8.self) }

    static func equals(_ text: Substring, _ lowercase: String) -> Bool {
        text.utf8.elementsEqual(lowercase.utf8) { lower($0) == $1 }
    }

    /// Whether `text` ends in "." and `lowercase`.
    static func hasSuffix(_ text: Substring, dot lowercase: String) -> Bool {
        let tail = text.utf8.suffix(lowercase.utf8.count + 1)
        return tail.count == lowercase.utf8.count + 1 && tail.first == UInt8(ascii: ".")
            && tail.dropFirst().elementsEqual(lowercase.utf8) { lower($0) == $1 }
    }
}

/// OpenBao's `hostnameRegex` and `leftWildLabelRegex`, without a regex engine.
enum Hostname {
    /// `^(\*\.)?(label\.)*label\.?$`: LDH labels, a leading `*.` and a trailing dot allowed.
    static func matches(_ name: some StringProtocol) -> Bool {
        var rest = Substring(name).utf8
        if rest.starts(with: "*.".utf8) { rest = rest.dropFirst(2) }
        if rest.last == UInt8(ascii: ".") { rest = rest.dropLast() }
        guard !rest.isEmpty else { return false }
        var start = rest.startIndex
        while let dot = rest[start...].firstIndex(of: UInt8(ascii: ".")) {
            guard isLabel(rest[start..<dot]) else { return false }
            start = rest.index(after: dot)
        }
        return isLabel(rest[start...])
    }

    /// The left-most label of a wildcard name: `*`, or a label with one `*` at its start, end or
    /// inside (`*b`, `a*`, `a*b`).
    static func isWildcardLabel(_ label: Substring) -> Bool {
        let bytes = label.utf8
        guard let star = bytes.firstIndex(of: UInt8(ascii: "*")) else { return false }
        let before = bytes[..<star]
        let after = bytes[bytes.index(after: star)...]
        return (before.isEmpty || isLabel(before)) && (after.isEmpty || isLabel(after))
    }

    /// `[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`
    private static func isLabel(_ label: Substring.UTF8View.SubSequence) -> Bool {
        func alphanumeric(_ c: UInt8) -> Bool {
            (c | 0x20 >= UInt8(ascii: "a") && c | 0x20 <= UInt8(ascii: "z"))
                || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9"))
        }
        guard let first = label.first, let last = label.last, alphanumeric(first), alphanumeric(last) else {
            return false
        }
        return label.allSatisfy { alphanumeric($0) || $0 == UInt8(ascii: "-") }
    }
}

/// A name's ASCII form for a certificate, as OpenBao converts one (Go's `idna.New(StrictDomainName,
/// VerifyDNSLength).ToASCII`): each label with a non-ASCII character becomes `xn--` and its
/// Punycode (RFC 3492); an empty label, a label over 63 bytes or a name over 253 is refused with
/// Go's message. Like that profile, it maps nothing (no case folding or normalisation).
enum IDNA {
    /// Whether `name`'s ASCII form is a host name (OpenBao's `hostnameRegex`); false if it has none.
    static func isHostname(_ name: Substring) -> Bool {
        if isPlainASCII(name) { return Hostname.matches(name) }
        guard let ascii = try? toASCII(String(name)) else { return false }
        return Hostname.matches(ascii)
    }

    static func toASCII(_ name: String) throws(CofferError) -> String {
        guard !name.isEmpty else { throw invalid(name) }
        if isPlainASCII(Substring(name)) { return name }
        var labels: [String] = []
        for label in name.split(separator: ".", omittingEmptySubsequences: false) {
            guard !label.isEmpty else { throw invalid(name) }
            if label.utf8.allSatisfy({ $0 < 0x80 }) {
                labels.append(String(label))
            } else {
                // Encoding takes time in the label's length times its distinct characters; a label of
                // 60 or more characters is over 63 bytes once encoded, so past 253 it is refused as given.
                let scalars = label.unicodeScalars.map(\.value)
                guard scalars.count <= 253 else { throw invalid(String(label)) }
                guard let encoded = Punycode.encode(scalars) else { throw invalid(name) }
                labels.append("xn--" + encoded)
            }
        }
        if let long = labels.first(where: { $0.utf8.count > 63 }) { throw invalid(long) }
        let ascii = labels.joined(separator: ".")
        guard ascii.utf8.count <= 253 else { throw invalid(ascii) }
        return ascii
    }

    /// Whether `name` is ASCII with labels of 1 to 63 bytes and at most 253 bytes in all: its own
    /// ASCII form (the common case, without a copy).
    private static func isPlainASCII(_ name: Substring) -> Bool {
        let bytes = name.utf8
        guard bytes.count <= 253 else { return false }
        var label = 0
        for byte in bytes {
            if byte >= 0x80 { return false }
            if byte == UInt8(ascii: ".") {
                guard label > 0 else { return false }
                label = 0
            } else {
                label += 1
                guard label <= 63 else { return false }
            }
        }
        return label > 0
    }

    /// `idna: invalid label "<label>"`, quoted as Go's `%q` quotes it.
    private static func invalid(_ label: String) -> CofferError {
        var quoted = ""
        for scalar in label.unicodeScalars {
            switch scalar {
            case "\"": quoted += "\\\""
            case "\\": quoted += "\\\\"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F:
                let hex = String(scalar.value, radix: 16)
                quoted += (hex.count < 2 ? "\\x0" : "\\x") + hex
            default: quoted.unicodeScalars.append(scalar)
            }
        }
        return CofferError.invalid("idna: invalid label \"\(quoted)\"")
    }
}

/// RFC 3492's encoder (the Bootstring parameters of section 5).
enum Punycode {
    private static let base = 36, tMin = 1, tMax = 26, skew = 38, damp = 700

    /// The Punycode of `input`'s code points, without the `xn--` prefix; nil on overflow (the
    /// RFC's 32-bit limit, as Go's encoder has it).
    static func encode(_ input: [UInt32]) -> String? {
        var output: [UInt8] = input.filter { $0 < 0x80 }.map { UInt8($0) }
        let basic = output.count
        var handled = basic
        if basic > 0 { output.append(UInt8(ascii: "-")) }
        var n = 0x80
        var delta = 0
        var bias = 72
        while handled < input.count {
            guard let next = input.lazy.map({ Int($0) }).filter({ $0 >= n }).min() else { return nil }
            delta += (next - n) * (handled + 1)
            guard delta <= Int(Int32.max) else { return nil }
            n = next
            for scalar in input.lazy.map({ Int($0) }) {
                if scalar < n {
                    delta += 1
                    guard delta <= Int(Int32.max) else { return nil }
                }
                guard scalar == n else { continue }
                var q = delta
                var k = base
                while true {
                    let t = k <= bias ? tMin : k >= bias + tMax ? tMax : k - bias
                    if q < t { break }
                    output.append(digit(t + (q - t) % (base - t)))
                    q = (q - t) / (base - t)
                    k += base
                }
                output.append(digit(q))
                bias = adapt(delta, points: handled + 1, first: handled == basic)
                delta = 0
                handled += 1
            }
            delta += 1
            n += 1
        }
        return String(decoding: output, as: UTF8.self)
    }

    private static func digit(_ d: Int) -> UInt8 {
        UInt8(d < 26 ? Int(UInt8(ascii: "a")) + d : Int(UInt8(ascii: "0")) + d - 26)
    }

    private static func adapt(_ delta: Int, points: Int, first: Bool) -> Int {
        var delta = first ? delta / damp : delta / 2
        delta += delta / points
        var k = 0
        while delta > ((base - tMin) * tMax) / 2 {
            delta /= base - tMin
            k += base
        }
        return k + (base - tMin + 1) * delta / (delta + skew)
    }
}
