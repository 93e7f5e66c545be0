// `coffer agent`: the caching proxy is cofferd's agent mode (it needs cofferd's HTTP server, which
// this small tool does not link); `coffer agent ARGS` runs `cofferd agent ARGS` in its place.
#if canImport(Glibc)
import Glibc
#endif

func agentCommand(_ arguments: [String]) -> Never {
    // cofferd next to this executable (an install's bin/, a build's bin path), else on PATH.
    var candidates: [String] = []
    var buffer = [CChar](repeating: 0, count: 4096)
    let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    if length > 0 {
        let path = String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if let slash = path.lastIndex(of: "/") { candidates.append(String(path[..<slash]) + "/cofferd") }
    }
    let target = candidates.first { access($0, X_OK) == 0 } ?? "cofferd"
    let argv = ([target, "agent"] + arguments).map { strdup($0) } + [nil]
    execvp(target, argv)
    fail("cannot run \(target) for `coffer agent`: \(String(cString: strerror(errno)))", code: 127)
}
