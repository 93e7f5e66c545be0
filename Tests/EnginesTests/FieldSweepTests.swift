import Foundation
import Testing

/// Every declared field of every path of every backend, given values that do not fit it: huge and
/// negative numbers, 10^20 hours, NaN-like and marker text, the wrong JSON types. Each request must
/// be refused with 400 naming the field, before its handler runs (so nothing is changed and no
/// destructive path acts), the process must live on, and the marker text must appear in no answer
/// and no audit record.
@Suite struct FieldSweepTests {
    static let marker = "SWEEP-MARKER-5b1e"

    /// Values that do not fit `kind`. Each is wrong for the declared type or out of its range.
    static func badValues(_ kind: Field.Kind) -> [JSONValue] {
        let text = JSONValue.string(marker)
        switch kind {
        case .string: return [[text], ["k": text]]
        case .int(let range):
            var values: [JSONValue] = [
                text, "NaN", "1e999", .number("1e308"), .number("-0.5"), "99999999999999999999999",
                .number("9223372036854775808"), [text], true,
            ]
            if range.lowerBound > Int.min { values.append(.int(range.lowerBound - 1)) }
            if range.upperBound < Int.max { values.append(.int(range.upperBound + 1)) }
            return values
        case .bool: return [text, "maybe", .number("2"), [text]]
        case .duration:
            return [
                "99999999999999999999h", "1e20h", .number("1e300"), "-1s", .int(-1), text, "NaNs",
                .number("100000000000"), ["1h"],
            ]
        case .stringList: return [["k": text], [["nested": text]], .number("1")]
        case .intList(let range):
            return [
                [text], ["k": text], .int(range.upperBound == Int.max ? -1 : range.upperBound + 1), [.number("1e400")],
            ]
        case .stringMap: return [text, ["k": ["nested": text]], [text]]
        case .object: return [text, [text], .number("1")]
        case .any: return []
        case .bytes: return [.string("not base64 \(marker)!"), ["k": text]]
        }
    }

    /// A concrete path for `pattern`: captures filled with a valid name.
    static func instantiate(_ pattern: PathPattern) -> String {
        var path = pattern.description
        for name in pattern.captureNames {
            for form in ["{\(name)}", "{\(name)+}", "{\(name)*}", "{\(name)?}"] {
                path = path.replacingOccurrences(of: form, with: "sweep")
            }
        }
        return path
    }

    struct Target {
        let mount: String
        let paths: [(pattern: PathPattern, fields: [Field], operations: [Request.Operation])]
    }

    static func targets() -> [Target] {
        func rows<B>(_ table: PathTable<B>) -> [(PathPattern, [Field], [Request.Operation])] {
            table.paths.map { ($0.pattern, $0.fields, $0.operations) }
        }
        return [
            Target(mount: "sys/", paths: rows(SystemBackend.paths)),
            Target(mount: "auth/token/", paths: rows(TokenBackend.paths)),
            Target(mount: "secret/", paths: rows(KVv2Backend.paths)),
            Target(mount: "kv1/", paths: rows(KVv1Backend.paths)),
            Target(mount: "transit/", paths: rows(TransitBackend.paths)),
            Target(mount: "cubbyhole/", paths: rows(CubbyholeBackend.paths)),
            Target(mount: "pki/", paths: rows(PKIBackend.paths)),
            Target(mount: "auth/approle/", paths: rows(AppRoleBackend.paths)),
            Target(mount: "auth/userpass/", paths: rows(UserpassBackend.paths)),
        ]
    }

    @Test func everyTableIsWellFormed() {
        #expect(SystemBackend.paths.validate() == [])
        #expect(TokenBackend.paths.validate() == [])
        #expect(KVv2Backend.paths.validate() == [])
        #expect(KVv1Backend.paths.validate() == [])
        #expect(TransitBackend.paths.validate() == [])
        #expect(CubbyholeBackend.paths.validate() == [])
        #expect(PKIBackend.paths.validate() == [])
        #expect(AppRoleBackend.paths.validate() == [])
        #expect(UserpassBackend.paths.validate() == [])
    }

    @Test func everyDeclaredFieldRefusesWhatDoesNotFit() throws {
        let h = try Harness()
        let log = TemporaryDirectory()
        #expect(h.wire("POST", "sys/mounts/transit", ["type": "transit"]).status == 204)
        #expect(h.wire("POST", "sys/mounts/kv1", ["type": "kv"]).status == 204)
        #expect(h.wire("POST", "sys/mounts/pki", ["type": "pki"]).status == 204)
        #expect(h.wire("POST", "sys/auth/approle", ["type": "approle"]).status == 204)
        #expect(h.wire("POST", "sys/auth/userpass", ["type": "userpass"]).status == 204)
        #expect(h.wire("POST", "transit/keys/sweep", [:]).status == 200)
        #expect(h.wire("PUT", "secret/data/sweep", ["data": ["a": "b"]]).status == 200)
        #expect(
            h.wire("PUT", "sys/audit/file", ["type": "file", "options": ["file_path": .string(log.file("audit.log"))]])
                .status == 204
        )
        var cases = 0
        for target in Self.targets() {
            for (pattern, fields, operations) in target.paths {
                // Written without a trailing "/": the core refuses a write to "x/", as OpenBao does.
                var path = target.mount + Self.instantiate(pattern)
                if path.hasSuffix("/") { path.removeLast() }
                for operation in operations where operation != .read && operation != .list {
                    for field in fields {
                        for value in Self.badValues(field.kind) {
                            cases += 1
                            let method = operation == .patch ? "PATCH" : (operation == .delete ? "DELETE" : "PUT")
                            let (status, bytes) = h.vault.core.handleWire(
                                method: method,
                                path: path,
                                token: "root",
                                body: JSONValue.object([field.name: value]).serialized()
                            )
                            let text = bytes.map { String(decoding: $0, as: UTF8.self) } ?? ""
                            #expect(
                                status == 400,
                                "\(method) \(path) \(field.name)=\(value.jsonString) answered \(status): \(text)"
                            )
                            #expect(text.contains(field.name), "\(method) \(path) \(field.name): \(text)")
                            #expect(
                                !text.contains(Self.marker),
                                "\(method) \(path) \(field.name) quoted the value: \(text)"
                            )
                        }
                    }
                }
                // Reads take their fields from the query string: text only.
                for operation in operations where operation == .read || operation == .list {
                    for field in fields where Self.badValues(field.kind).contains(.string(Self.marker)) {
                        cases += 1
                        let query = "?\(field.name)=\(Self.marker)" + (operation == .list ? "&list=true" : "")
                        let (status, bytes) = h.vault.core.handleWire(
                            method: "GET",
                            path: path + query,
                            token: "root",
                            body: []
                        )
                        let text = bytes.map { String(decoding: $0, as: UTF8.self) } ?? ""
                        #expect(status == 400, "GET \(path)\(query) answered \(status): \(text)")
                        #expect(!text.contains(Self.marker), "GET \(path) \(field.name) quoted the value: \(text)")
                    }
                }
            }
        }
        // Still alive and unchanged: the vault answers, the root token works, nothing was sealed.
        #expect(h.wire("GET", "secret/data/sweep").json?["data"]?["data"] == ["a": "b"])
        #expect(h.wire("GET", "sys/seal-status").json?["sealed"] == false)
        try h.vault.flushAudit()
        let records = try String(contentsOfFile: log.file("audit.log"), encoding: .utf8)
        #expect(!records.isEmpty)
        #expect(!records.contains(Self.marker), "a marker reached the audit log")
        #expect(cases > 1000, "only \(cases) cases ran")
        print("field sweep: \(cases) requests, each refused with 400 naming its field")
    }
}
