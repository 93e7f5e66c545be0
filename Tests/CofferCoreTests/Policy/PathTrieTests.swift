import Testing

@testable import CofferCore

@Suite struct PathTrieTests {
    /// The walk (which takes chains of single-edge nodes in one comparison) finds what a direct look-up
    /// of every prefix of the path finds, for random rule sets and paths over a small alphabet (so
    /// that paths share long prefixes with the rules, end inside chains and leave them anywhere).
    @Test func theWalkFindsWhatLookingUpEveryPrefixFinds() {
        var generator = SystemRandomNumberGenerator()
        let alphabet = Array("ab/".utf8)
        func word(_ maximum: Int) -> [UInt8] {
            (0..<Int.random(in: 0...maximum, using: &generator)).map { _ in alphabet.randomElement(using: &generator)! }
        }
        for _ in 0..<300 {
            var exact: [[UInt8]: Int] = [:]
            var prefix: [[UInt8]: Int] = [:]
            for i in 0..<Int.random(in: 0...6, using: &generator) {
                if Bool.random(using: &generator) { exact[word(9)] = i } else { prefix[word(9)] = i }
            }
            let trie = PathTrie(exact: exact, prefix: prefix)
            let paths = (0..<40).map { _ in word(12) } + Array(exact.keys) + Array(prefix.keys)
            for path in paths {
                let walk = path.withUnsafeBufferPointer { trie.walk($0) }
                let longest = (0...path.count).reversed().first { prefix[Array(path[..<$0])] != nil }
                let longestShorter = (0..<path.count).reversed().first { prefix[Array(path[..<$0])] != nil }
                let shown = String(decoding: path, as: UTF8.self)
                #expect(walk.exactFull == exact[path], "\(shown)")
                #expect(walk.exactTrimmed == (path.isEmpty ? nil : exact[Array(path.dropLast())]), "\(shown)")
                #expect(walk.prefixFull?.length == longest, "\(shown)")
                #expect(walk.prefixFull?.permissionIndex == longest.flatMap { prefix[Array(path[..<$0])] }, "\(shown)")
                #expect(walk.prefixTrimmed?.length == longestShorter, "\(shown)")
                #expect(
                    walk.prefixTrimmed?.permissionIndex == longestShorter.flatMap { prefix[Array(path[..<$0])] },
                    "\(shown)"
                )
            }
        }
    }
}
