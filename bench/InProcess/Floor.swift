// The physical floors, measured with the C libraries directly (no Coffer code): for a KV read one
// SQLite point read of the stored row and one AES-256-GCM open of a ciphertext of the same length;
// for a transit encrypt one AES-256-GCM seal under a fresh random nonce; for an audited read the hashing
// and writing of its two records.
import CLinux
import COpenSSL
import CSQLite
import Foundation

/// A raw SQLite point read: its own read-only connection to the database file, one prepared
/// statement, the value copied into a reused buffer.
final class RawSQLiteReader {
    private var db: OpaquePointer?
    private var statement: OpaquePointer?
    private let key: [CChar]
    private var buffer = [UInt8](repeating: 0, count: 1 << 20)

    init(path: String, key: String) {
        precondition(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nil) == SQLITE_OK)
        precondition(
            sqlite3_prepare_v2(db, "SELECT value FROM entries WHERE key = ?1", -1, &statement, nil) == SQLITE_OK
        )
        self.key = Array(key.utf8CString)
    }

    deinit {
        sqlite3_finalize(statement)
        sqlite3_close_v2(db)
    }

    /// Reads the row; returns its length.
    @discardableResult
    func read() -> Int {
        key.withUnsafeBufferPointer { k in
            sqlite3_bind_text(statement, 1, k.baseAddress, Int32(k.count - 1), nil)
            precondition(sqlite3_step(statement) == SQLITE_ROW)
            let count = Int(sqlite3_column_bytes(statement, 0))
            buffer.withUnsafeMutableBytes {
                $0.baseAddress!.copyMemory(from: sqlite3_column_blob(statement, 0), byteCount: count)
            }
            sqlite3_reset(statement)
            return count
        }
    }
}

/// A raw AES-256-GCM open with one reused EVP context: a ciphertext (and associated data) of the
/// same length as the stored row, under a random key (the barrier's keys are not exposed).
final class RawAESGCMOpener {
    private let ctx = EVP_CIPHER_CTX_new()
    private let cipher = EVP_CIPHER_fetch(nil, "AES-256-GCM", nil)
    private let key = (0..<32).map { _ in UInt8.random(in: 0...255) }
    private let nonce = (0..<12).map { _ in UInt8.random(in: 0...255) }
    private let aad: [UInt8]
    private var sealed: [UInt8]
    private var output: [UInt8]

    /// `length`: the stored row's length (5-byte header, 12-byte nonce, ciphertext, 16-byte tag).
    init(length: Int, aad: [UInt8]) {
        self.aad = aad
        let plaintextLength = length - 33
        output = [UInt8](repeating: 0, count: plaintextLength)
        sealed = [UInt8](repeating: 0, count: plaintextLength + 16)
        var len: Int32 = 0
        let plaintext = [UInt8](repeating: 0x61, count: plaintextLength)
        precondition(EVP_EncryptInit_ex2(ctx, cipher, key, nonce, nil) == 1)
        precondition(EVP_EncryptUpdate(ctx, nil, &len, aad, Int32(aad.count)) == 1)
        sealed.withUnsafeMutableBufferPointer { out in
            precondition(EVP_EncryptUpdate(ctx, out.baseAddress, &len, plaintext, Int32(plaintextLength)) == 1)
            precondition(EVP_EncryptFinal_ex(ctx, out.baseAddress! + Int(len), &len) == 1)
            precondition(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, out.baseAddress! + plaintextLength) == 1)
        }
    }

    deinit {
        EVP_CIPHER_CTX_free(ctx)
        EVP_CIPHER_free(cipher)
    }

    func open() {
        var len: Int32 = 0
        let n = Int32(output.count)
        let ok = sealed.withUnsafeMutableBufferPointer { s in
            output.withUnsafeMutableBufferPointer { o in
                EVP_DecryptInit_ex2(ctx, cipher, key, nonce, nil) == 1
                    && EVP_DecryptUpdate(ctx, nil, &len, aad, Int32(aad.count)) == 1
                    && EVP_DecryptUpdate(ctx, o.baseAddress, &len, s.baseAddress, n) == 1
                    && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, s.baseAddress! + Int(n)) == 1
                    && EVP_DecryptFinal_ex(ctx, o.baseAddress! + Int(len), &len) == 1
            }
        }
        precondition(ok, "AES-GCM floor failed to authenticate")
    }
}

/// A raw AES-256-GCM seal of `plaintext` under a fresh random nonce (RAND_bytes), with one reused
/// EVP context: the least a transit encrypt must do (it also base64-encodes and frames the result).
final class RawAESGCMSealer {
    private let ctx = EVP_CIPHER_CTX_new()
    private let cipher = EVP_CIPHER_fetch(nil, "AES-256-GCM", nil)
    private let key = (0..<32).map { _ in UInt8.random(in: 0...255) }
    private let plaintext: [UInt8]
    private var nonce = [UInt8](repeating: 0, count: 12)
    private var output: [UInt8]

    init(plaintext: [UInt8]) {
        self.plaintext = plaintext
        output = [UInt8](repeating: 0, count: plaintext.count + 16)
    }

    deinit {
        EVP_CIPHER_CTX_free(ctx)
        EVP_CIPHER_free(cipher)
    }

    func seal() {
        var len: Int32 = 0
        let n = Int32(plaintext.count)
        let ok = nonce.withUnsafeMutableBufferPointer { nonce in
            output.withUnsafeMutableBufferPointer { o in
                RAND_bytes(nonce.baseAddress, 12) == 1
                    && EVP_EncryptInit_ex2(ctx, cipher, key, nonce.baseAddress, nil) == 1
                    && EVP_EncryptUpdate(ctx, o.baseAddress, &len, plaintext, n) == 1
                    && EVP_EncryptFinal_ex(ctx, o.baseAddress! + Int(len), &len) == 1
                    && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, o.baseAddress! + Int(n)) == 1
            }
        }
        precondition(ok, "AES-GCM seal floor failed")
    }
}

/// The least an audit device must do for one read's two records, with the C libraries directly: HMAC-SHA256
/// over each line (from a hash state kept after the bytes the two lines share, as the device keeps one after
/// a token's auth block), an HMAC of each response value, the lines copied into a batch, and the batch's
/// whole blocks appended to a file by direct I/O once it holds 256 KiB, as the device writes big batches
/// (DirectAppender). No JSON is built, escaped or hex-encoded here, and the batch is built in the aligned
/// buffer the write takes.
final class RawAuditLines {
    private let lines: [[UInt8]]
    private let shared: Int
    private let values: [[UInt8]]
    private let inner = UnsafeMutablePointer<SHA256_CTX>.allocate(capacity: 1)
    private let outer = UnsafeMutablePointer<SHA256_CTX>.allocate(capacity: 1)
    private let afterShared = UnsafeMutablePointer<SHA256_CTX>.allocate(capacity: 1)
    private static let batch = 1 << 18
    private let buffer: UnsafeMutableRawPointer
    private var filled = 0
    private let fd: Int32
    private let alignment: Int

    /// `lines`: one read's records as the device wrote them; `valueLengths`: the lengths of the strings
    /// the response's record holds as HMACs; `path`: a new file to append to.
    init(lines: [[UInt8]], valueLengths: [Int], path: String) {
        self.lines = lines
        shared = zip(lines[0], lines[1]).prefix { $0 == $1 }.count
        values = valueLengths.map { [UInt8](repeating: 0x61, count: $0) }
        let key = (0..<32).map { _ in UInt8.random(in: 0...255) } + [UInt8](repeating: 0, count: 32)
        SHA256_Init(inner)
        SHA256_Update(inner, key.map { $0 ^ 0x36 }, 64)
        SHA256_Init(outer)
        SHA256_Update(outer, key.map { $0 ^ 0x5C }, 64)
        afterShared.initialize(to: inner.pointee)
        SHA256_Update(afterShared, lines[0], shared)
        close(open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600))
        // As the device: direct where the file system has it (alignment 1 writes plainly, as on tmpfs).
        let direct = coffer_open_append_direct(path)
        if direct >= 0, coffer_direct_alignment(direct) > 0 {
            fd = direct
            alignment = max(Int(coffer_direct_alignment(direct)), 4096)
        } else {
            if direct >= 0 { close(direct) }
            fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC)
            alignment = 1
        }
        precondition(fd >= 0, "audit floor: cannot open \(path)")
        var memory: UnsafeMutableRawPointer?
        precondition(posix_memalign(&memory, max(alignment, 64), RawAuditLines.batch + 16 << 10) == 0)
        buffer = memory!
    }

    deinit {
        close(fd)
        free(buffer)
        for state in [inner, outer, afterShared] { state.deallocate() }
    }

    /// The two lines of one read.
    func write() {
        var digest = [UInt8](repeating: 0, count: 32)
        func mac(from start: UnsafeMutablePointer<SHA256_CTX>, _ bytes: UnsafeRawBufferPointer) {
            var ctx = start.pointee
            SHA256_Update(&ctx, bytes.baseAddress, bytes.count)
            SHA256_Final(&digest, &ctx)
            ctx = outer.pointee
            SHA256_Update(&ctx, digest, 32)
            SHA256_Final(&digest, &ctx)
        }
        for value in values { value.withUnsafeBytes { mac(from: inner, $0) } }
        for line in lines {
            line.withUnsafeBytes {
                mac(from: afterShared, UnsafeRawBufferPointer(rebasing: $0[shared...]))
                (buffer + filled).copyMemory(from: $0.baseAddress!, byteCount: $0.count)
            }
            filled += line.count
        }
        if filled >= RawAuditLines.batch {
            let blocks = filled / alignment * alignment
            precondition(Foundation.write(fd, buffer, blocks) == blocks, "audit floor: short write")
            buffer.copyMemory(from: buffer + blocks, byteCount: filled - blocks)
            filled -= blocks
        }
    }
}

/// The machine's own tail for an operation of a given length: xorshift rounds (registers only: no memory,
/// calls or locks) matched to the median of an operation, timed beside it. The VM this bench was written on
/// stalls a running thread for about 20 µs roughly once a millisecond, whatever it runs, so an operation of
/// about 8 µs has over 1% of its samples stalled and a p99 at the stall's size; the spin of the same median
/// shows how much of a p99 is the machine's and how much the code's (docs/benchmarks.md).
struct CPUSpin {
    var rounds = 1_000

    /// Runs `rounds` rounds; the result is kept, so the loop cannot be removed.
    func run() {
        var x: UInt64 = 0x9E37_79B9_7F4A_7C15
        for _ in 0..<rounds {
            x ^= x << 13
            x ^= x >> 7
            x ^= x << 17
        }
        spinSink = x
    }

    /// Scales the rounds by how far the spin's last median was from the operation's.
    mutating func match(operationMedian: UInt64, spinMedian: UInt64) {
        rounds = Int(min(max(1, Double(rounds) * Double(operationMedian) / Double(max(spinMedian, 1))), 1e9))
    }
}

nonisolated(unsafe) private var spinSink: UInt64 = 0

extension Bench {
    /// Times `body` and a ``CPUSpin`` in 20 alternating rounds (this VM's speed drifts by up to 2× within a
    /// run), matching the spin to the median of the operation's round before each of its own, and records
    /// both figures: `name` and `spinName`.
    func measureBesideSpin(_ name: String, spinName: String, _ body: () throws -> Void) throws {
        if !selects(name) { return }
        let rounds = 20
        let perRound = max(100, iterations / rounds)
        var spin = CPUSpin()
        var samples: [[UInt64]] = [[], []]
        func round(_ operation: () throws -> Void) rethrows -> [UInt64] {
            var times = [UInt64](repeating: 0, count: perRound)
            for i in 0..<perRound {
                let start = nowNanos()
                try operation()
                times[i] = nowNanos() - start
            }
            return times
        }
        func median(_ times: [UInt64]) -> UInt64 { times.sorted()[times.count / 2] }
        // Warm-up, and a first match of the spin; then each spin round is matched by the one before it.
        var spinMedian = median(round(spin.run))
        for _ in 0..<4 {
            spin.match(operationMedian: median(try round(body)), spinMedian: spinMedian)
            spinMedian = median(round(spin.run))
        }
        for _ in 0..<rounds {
            let operation = try round(body)
            spin.match(operationMedian: median(operation), spinMedian: spinMedian)
            let spun = round(spin.run)
            spinMedian = median(spun)
            samples[0] += operation
            samples[1] += spun
        }
        for (index, figureName) in [name, spinName].enumerated() {
            let figure = Figure(name: figureName, samples: samples[index].sorted(), allocationsPerOp: nil)
            record(figure)
            say(String(format: "  %-44@ p50 %9.2f µs  p99 %9.2f µs", figureName as NSString, figure.p50, figure.p99))
        }
    }
}
