// The physical floors, measured with the C libraries directly (no Coffer code): for a KV read one
// SQLite point read of the stored row and one AES-256-GCM open of a ciphertext of the same length;
// for a transit encrypt one AES-256-GCM seal under a fresh random nonce.
import COpenSSL
import CSQLite

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
