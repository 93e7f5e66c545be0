import Testing
@testable import Raft
