import CofferFuzzHarnesses
import Testing

/// Every seed and regression input in Tests/Fuzz/Corpus goes through its harness in every
/// `swift test`, fuzzer or not: a crash found once stays fixed.
@Suite("Fuzz corpus replay")
struct CorpusReplayTests {
    @Test(arguments: FuzzHarness.all.map(\.name))
    func corpusReplaysCleanly(_ name: String) throws {
        let harness = try #require(FuzzHarness.named(name))
        let files = FuzzCorpus.files(in: FuzzCorpus.directory(of: harness))
        #expect(files.count >= 5, "the \(name) seed corpus should not be empty: \(FuzzCorpus.directory(of: harness))")
        for file in files {
            let bytes = try #require(FuzzCorpus.read(file), "cannot read \(file)")
            let problem = harness.run(bytes)
            #expect(problem == nil, "\(file): \(problem ?? "")")
        }
    }
}
