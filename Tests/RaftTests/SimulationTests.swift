import Foundation
import Testing

@testable import Raft

/// Seeded random runs of whole clusters (see `Simulation`). Every run checks Election Safety, Leader
/// Append-Only, Log Matching, Leader Completeness, State Machine Safety, linearizable ReadIndex answers, and
/// liveness after healing.
///
/// - `RAFT_SIM_RUNS=n` runs n seeds per cluster size instead of the default (a longer campaign).
/// - `RAFT_SIM_SEED=s` runs only seed s (and prints its trace), to replay a failure.
/// - `RAFT_SIM_FIRST_SEED=s` starts the campaign at seed s. Without it the window moves with the UTC
///   date (`dailyFirstSeed`), so each day's `make test` tries seeds no earlier day tried; every campaign
///   prints its first seed, and a failure prints its own, to replay.
@Suite struct SimulationTests {
    static let environment = ProcessInfo.processInfo.environment

    /// 1 + 1,000 × (days since 1970 mod 500): 500 windows of 1,000 seeds, below the campaigns' salts
    /// (1,000,000 apart), so no two campaigns of one day share a seed.
    static var dailyFirstSeed: UInt64 {
        1 + 1_000 * (UInt64(max(0, Date().timeIntervalSince1970)) / 86_400 % 500)
    }

    /// Read once: a run that crosses midnight keeps one window.
    static let firstSeed: UInt64 = environment["RAFT_SIM_FIRST_SEED"].flatMap(UInt64.init) ?? dailyFirstSeed

    static func seeds(defaultRuns: Int, salt: UInt64) -> [UInt64] {
        if let single = environment["RAFT_SIM_SEED"].flatMap(UInt64.init) { return [single] }
        let runs = environment["RAFT_SIM_RUNS"].flatMap(Int.init) ?? defaultRuns
        return (0..<UInt64(runs)).map { firstSeed + $0 + salt }
    }

    func campaign(nodes: Int, defaultRuns: Int, salt: UInt64, onlyFollowerFaults: Bool = false) {
        let seeds = Self.seeds(defaultRuns: defaultRuns, salt: salt)
        let replay = Self.environment["RAFT_SIM_SEED"] != nil
        var options = Simulation.Options()
        options.nodes = nodes
        options.onlyFollowerFaults = onlyFollowerFaults
        var totals = Simulation.Stats()
        var failed: [UInt64] = []
        let start = ContinuousClock.now
        for seed in seeds {
            let sim = Simulation(seed: seed, options: options)
            sim.keepTrace = replay
            do {
                try sim.run()
            } catch {
                failed.append(seed)
                // Replay with a trace for the report.
                let again = Simulation(seed: seed, options: options)
                again.keepTrace = true
                _ = try? again.run()
                Issue.record(
                    "seed \(seed) (\(nodes) nodes) failed: \(error)\nreplay: RAFT_SIM_SEED=\(seed) swift test --filter RaftTests.SimulationTests\nlast events:\n\(again.trace.suffix(40).joined(separator: "\n"))"
                )
                if failed.count >= 3 { break }
            }
            if replay { print(sim.trace.joined(separator: "\n")) }
            totals.elections += sim.stats.elections
            totals.proposalsApplied += sim.stats.proposalsApplied
            totals.snapshotsInstalled += sim.stats.snapshotsInstalled
            totals.readsServed += sim.stats.readsServed
            totals.crashes += sim.stats.crashes
            totals.messagesDelivered += sim.stats.messagesDelivered
            totals.membershipChanges += sim.stats.membershipChanges
        }
        print(
            "raft simulation: \(seeds.count) runs of \(nodes) nodes from seed \(seeds.first ?? 0) (RAFT_SIM_FIRST_SEED=\(Self.firstSeed)) in \(ContinuousClock.now - start): \(totals.elections) elections, \(totals.proposalsApplied) entries applied, \(totals.snapshotsInstalled) snapshots installed, \(totals.readsServed) reads, \(totals.crashes) crashes, \(totals.membershipChanges) membership changes, \(totals.messagesDelivered) messages; failed seeds: \(failed)"
        )
        // The runs must exercise what they claim to check.
        if seeds.count >= 100 && !onlyFollowerFaults {
            #expect(totals.elections > seeds.count)
            #expect(totals.snapshotsInstalled > 0)
            #expect(totals.readsServed > 0)
            #expect(totals.crashes > 0)
            #expect(totals.membershipChanges > 0)
        }
    }

    @Test func aSeedReplaysExactly() throws {
        var options = Simulation.Options()
        options.nodes = 5
        var traces: [[String]] = []
        for _ in 0..<2 {
            let sim = Simulation(seed: 42, options: options)
            sim.keepTrace = true
            try sim.run()
            traces.append(sim.trace)
        }
        #expect(traces[0].count > 50)
        #expect(traces[0] == traces[1])
    }

    @Test func threeNodeClusters() {
        campaign(nodes: 3, defaultRuns: 1000, salt: 0)
    }

    /// The issue's promise: a restarted (or cut-off, then healed) follower never causes an election while
    /// the leader is healthy. Every term change after the first election fails the run.
    @Test func aRejoiningFollowerNeverDisruptsAHealthyLeader() {
        campaign(nodes: 3, defaultRuns: 150, salt: 2_000_000, onlyFollowerFaults: true)
        campaign(nodes: 5, defaultRuns: 100, salt: 3_000_000, onlyFollowerFaults: true)
    }

    @Test func fiveNodeClusters() {
        campaign(nodes: 5, defaultRuns: 500, salt: 1_000_000)
    }
}
