import CofferCore

extension FuzzHarness {
    /// `JSONValue.parse`: request bodies, stored engine state, configuration.
    ///
    /// Checks that an error points inside the input, that the byte and `String` entry points agree,
    /// and that what parses survives serialising and parsing again unchanged, in the canonical form.
    public static let json = FuzzHarness(
        name: "json",
        summary: "JSONValue.parse (request bodies, stored state): round trip, both entry points agree"
    ) { input in
        let bytes = Array(input)
        let parsed: Result<JSONValue, JSONParseError>
        do throws(JSONParseError) {
            parsed = .success(try JSONValue.parse(bytes))
        } catch {
            parsed = .failure(error)
        }
        if let text = String(validating: bytes, as: UTF8.self) {
            let viaString: Result<JSONValue, JSONParseError>
            do throws(JSONParseError) {
                viaString = .success(try JSONValue.parse(text))
            } catch {
                viaString = .failure(error)
            }
            switch (parsed, viaString) {
            case (.success(let a), .success(let b)) where a != b:
                return "the byte and String parsers read different values"
            case (.success, .failure), (.failure, .success):
                return "the byte and String parsers disagree on whether the input is valid"
            default: break
            }
        }
        switch parsed {
        case .failure(let error):
            guard error.offset >= 0 && error.offset <= bytes.count else {
                return "error offset \(error.offset) is outside the \(bytes.count)-byte input"
            }
            return nil
        case .success(let value):
            let serialized = value.serialized()
            guard let again = try? JSONValue.parse(serialized) else { return "the serialised value does not parse" }
            guard again == value else { return "a round trip through serialized() changed the value" }
            guard again.serialized() == serialized else { return "serialized() is not canonical" }
            return nil
        }
    }
}
