import CPKCS11
import CofferCore
import Glibc
import Synchronization

/// A PKCS#11 module (the vendor's shared library), loaded once per process.
///
/// Modules are opened by absolute path only and de-duplicated after resolving symlinks, so
/// `/usr/lib/softhsm/libsofthsm2.so` and its target are one module. `C_Initialize` (with
/// `CKF_OS_LOCKING_OK`) runs once per module while anyone holds it and `C_Finalize` when the last
/// holder lets go; both run under one process-wide lock, so they are never concurrent (SoftHSM and
/// others crash on concurrent `C_Initialize`). After `fork()` the child finds a different pid and
/// initialises the module again before its first call; `generation` then changes, which tells the
/// token connections that their sessions and login belong to the parent.
final class PKCS11Module: Sendable {
    /// The resolved path (symlinks followed).
    let path: String
    // The function list is an immutable table of C function pointers owned by the module, which
    // stays loaded for the life of the process (modules are never dlclose'd), so sharing the
    // pointer between threads is safe; PKCS#11 calls themselves are thread-safe after
    // C_Initialize with CKF_OS_LOCKING_OK.
    nonisolated(unsafe) let functions: UnsafeMutablePointer<CK_FUNCTION_LIST>

    private struct Loaded {
        var functions: UnsafeMutablePointer<CK_FUNCTION_LIST>
        var holders = 0
        var initializedIn: pid_t = 0
        var generation = 0
    }

    /// Every module this process has loaded, by resolved path. dlopen handles are kept for the life
    /// of the process: unloading a module that registered atexit handlers or threads (SoftHSM links
    /// OpenSSL) can crash the process later.
    private static let loaded = Mutex<[String: Loaded]>([:])

    private init(path: String, functions: UnsafeMutablePointer<CK_FUNCTION_LIST>) {
        self.path = path
        self.functions = functions
    }

    /// Loads (if needed) and initialises (if nobody holds it) the module at `path`.
    static func acquire(_ path: String) throws(CofferError) -> PKCS11Module {
        guard path.hasPrefix("/") else {
            throw CofferError.invalid(
                "the PKCS#11 module path (lib) must be absolute, got '\(path)'; for SoftHSM on Debian use /usr/lib/softhsm/libsofthsm2.so"
            )
        }
        guard let resolvedC = realpath(path, nil) else {
            throw CofferError.invalid(
                "the PKCS#11 module (lib) '\(path)' does not exist; install the vendor's library or fix the path"
            )
        }
        let resolved = String(cString: resolvedC)
        free(resolvedC)
        return try loaded.withLock { (modules) throws(CofferError) -> PKCS11Module in
            var entry: Loaded
            if let existing = modules[resolved] {
                entry = existing
            } else {
                try checkReplaceableOnlyByUs(resolved, given: path)
                guard let handle = coffer_p11_dlopen(resolved) else {
                    let reason = coffer_p11_dlerror().map { String(cString: $0) } ?? "unknown error"
                    throw CofferError.invalid("cannot load the PKCS#11 module (lib) '\(path)': \(reason)")
                }
                guard let getList = coffer_p11_get_function_list(handle) else {
                    throw CofferError.invalid(
                        "'\(path)' is not a PKCS#11 module: it exports no C_GetFunctionList; set lib to the HSM vendor's PKCS#11 library"
                    )
                }
                var list: UnsafeMutablePointer<CK_FUNCTION_LIST>?
                let rv = getList(&list)
                guard rv == CKR_OK, let list else {
                    throw CofferError.invalid("'\(path)': C_GetFunctionList failed with \(PKCS11Error.name(rv))")
                }
                entry = Loaded(functions: list)
            }
            let pid = getpid()
            if entry.holders == 0 || entry.initializedIn != pid {
                if entry.holders > 0 {
                    // Forked: the parent's state is not ours. Some modules want C_Finalize first.
                    _ = entry.functions.pointee.C_Finalize?(nil)
                }
                try initialize(entry.functions, path: path)
                entry.initializedIn = pid
                entry.generation += 1
            }
            entry.holders += 1
            modules[resolved] = entry
            return PKCS11Module(path: resolved, functions: entry.functions)
        }
    }

    /// Refuses a module that anyone but root or this process's user could replace, before it is
    /// loaded (loading runs its code in this process), as sudo and OpenSSH check their plugins: the
    /// file and every directory on its resolved path must be owned by root or by this process's
    /// effective user, and not writable by group or others. A directory with the sticky bit (like
    /// /tmp) may be writable by others: there only an entry's owner can rename or remove it, and the
    /// entries below it are checked in turn.
    static func checkReplaceableOnlyByUs(_ resolved: String, given: String) throws(CofferError) {
        let uid = geteuid()
        var paths = ["/"]
        var prefix = ""
        for component in resolved.split(separator: "/") {
            prefix += "/" + component
            paths.append(prefix)
        }
        let lib = resolved == given ? "'\(given)'" : "'\(given)' (resolved to '\(resolved)')"
        for (index, path) in paths.enumerated() {
            var info = stat()
            guard lstat(path, &info) == 0 else {
                throw CofferError.invalid(
                    "cannot check the PKCS#11 module (lib) \(lib): '\(path)': \(String(cString: strerror(errno)))"
                )
            }
            let isModule = index == paths.count - 1
            let what = isModule ? "the module file" : "the directory"
            if info.st_uid != 0 && info.st_uid != uid {
                throw CofferError.invalid(
                    "refusing to load the PKCS#11 module (lib) \(lib): \(what) '\(path)' is owned by uid \(info.st_uid), neither root "
                        + "nor this process's user (uid \(uid)), so that user could replace the module; make root the owner "
                        + "(chown root '\(path)') or install the module in a root-owned directory such as /usr/lib"
                )
            }
            let writable = info.st_mode & 0o022
            let sticky = !isModule && info.st_mode & 0o1000 != 0
            if writable != 0 && !sticky {
                let who = writable == 0o022 ? "its group and others" : writable == 0o020 ? "its group" : "others"
                throw CofferError.invalid(
                    "refusing to load the PKCS#11 module (lib) \(lib): \(what) '\(path)' is writable by \(who) "
                        + "(mode \(String(info.st_mode & 0o7777, radix: 8))), so they could replace the module; make it writable "
                        + "by its owner only (chmod go-w '\(path)') or install the module in a root-owned directory such as /usr/lib"
                )
            }
        }
    }

    private static func initialize(
        _ functions: UnsafeMutablePointer<CK_FUNCTION_LIST>,
        path: String
    ) throws(CofferError) {
        var args = CK_C_INITIALIZE_ARGS()
        args.flags = CK_FLAGS(CKF_OS_LOCKING_OK)
        let rv =
            withUnsafeMutablePointer(to: &args) { functions.pointee.C_Initialize?(UnsafeMutableRawPointer($0)) }
            ?? CKR_FUNCTION_NOT_SUPPORTED
        if rv == CKR_OK || rv == CKR_CRYPTOKI_ALREADY_INITIALIZED { return }
        var message =
            "the PKCS#11 module '\(path)' failed to initialise (C_Initialize returned \(PKCS11Error.name(rv)))"
        if rv == CKR_GENERAL_ERROR {
            message +=
                "; for SoftHSM this means its configuration is missing or unreadable: set SOFTHSM2_CONF to a file "
                + "naming an existing directories.tokendir (default /etc/softhsm/softhsm2.conf)"
        }
        throw CofferError(.unavailable, message)
    }

    /// The current initialisation generation; re-initialises first if this process is a fork.
    func generation() throws(CofferError) -> Int {
        try PKCS11Module.loaded.withLock { (modules) throws(CofferError) -> Int in
            guard var entry = modules[path] else {
                throw CofferError(.internal, "PKCS#11 module '\(path)' is not loaded")
            }
            let pid = getpid()
            if entry.initializedIn != pid {
                _ = entry.functions.pointee.C_Finalize?(nil)
                try PKCS11Module.initialize(entry.functions, path: path)
                entry.initializedIn = pid
                entry.generation += 1
                modules[path] = entry
            }
            return entry.generation
        }
    }

    /// Lets go of the module; the last holder finalises it.
    deinit {
        let path = self.path
        PKCS11Module.loaded.withLock { modules in
            guard var entry = modules[path] else { return }
            entry.holders -= 1
            if entry.holders == 0, entry.initializedIn == getpid() {
                _ = entry.functions.pointee.C_Finalize?(nil)
                entry.initializedIn = 0
            }
            modules[path] = entry
        }
    }
}

/// Names of PKCS#11 return values, for error messages.
enum PKCS11Error {
    static let names: [CK_RV: String] = [
        CK_RV(CKR_OK): "CKR_OK", CK_RV(CKR_CANCEL): "CKR_CANCEL", CK_RV(CKR_HOST_MEMORY): "CKR_HOST_MEMORY",
        CK_RV(CKR_SLOT_ID_INVALID): "CKR_SLOT_ID_INVALID", CK_RV(CKR_GENERAL_ERROR): "CKR_GENERAL_ERROR",
        CK_RV(CKR_FUNCTION_FAILED): "CKR_FUNCTION_FAILED", CK_RV(CKR_ARGUMENTS_BAD): "CKR_ARGUMENTS_BAD",
        CK_RV(CKR_ATTRIBUTE_SENSITIVE): "CKR_ATTRIBUTE_SENSITIVE",
        CK_RV(CKR_ATTRIBUTE_TYPE_INVALID): "CKR_ATTRIBUTE_TYPE_INVALID",
        CK_RV(CKR_ATTRIBUTE_VALUE_INVALID): "CKR_ATTRIBUTE_VALUE_INVALID", CK_RV(CKR_DATA_INVALID): "CKR_DATA_INVALID",
        CK_RV(CKR_DATA_LEN_RANGE): "CKR_DATA_LEN_RANGE", CK_RV(CKR_DEVICE_ERROR): "CKR_DEVICE_ERROR",
        CK_RV(CKR_DEVICE_MEMORY): "CKR_DEVICE_MEMORY", CK_RV(CKR_DEVICE_REMOVED): "CKR_DEVICE_REMOVED",
        CK_RV(CKR_ENCRYPTED_DATA_INVALID): "CKR_ENCRYPTED_DATA_INVALID",
        CK_RV(CKR_ENCRYPTED_DATA_LEN_RANGE): "CKR_ENCRYPTED_DATA_LEN_RANGE",
        CK_RV(CKR_FUNCTION_NOT_SUPPORTED): "CKR_FUNCTION_NOT_SUPPORTED",
        CK_RV(CKR_KEY_HANDLE_INVALID): "CKR_KEY_HANDLE_INVALID",
        CK_RV(CKR_KEY_SIZE_RANGE): "CKR_KEY_SIZE_RANGE", CK_RV(CKR_KEY_TYPE_INCONSISTENT): "CKR_KEY_TYPE_INCONSISTENT",
        CK_RV(CKR_KEY_FUNCTION_NOT_PERMITTED): "CKR_KEY_FUNCTION_NOT_PERMITTED",
        CK_RV(CKR_MECHANISM_INVALID): "CKR_MECHANISM_INVALID",
        CK_RV(CKR_MECHANISM_PARAM_INVALID): "CKR_MECHANISM_PARAM_INVALID",
        CK_RV(CKR_OBJECT_HANDLE_INVALID): "CKR_OBJECT_HANDLE_INVALID",
        CK_RV(CKR_OPERATION_ACTIVE): "CKR_OPERATION_ACTIVE",
        CK_RV(CKR_OPERATION_NOT_INITIALIZED): "CKR_OPERATION_NOT_INITIALIZED",
        CK_RV(CKR_PIN_INCORRECT): "CKR_PIN_INCORRECT", CK_RV(CKR_PIN_INVALID): "CKR_PIN_INVALID",
        CK_RV(CKR_PIN_LEN_RANGE): "CKR_PIN_LEN_RANGE", CK_RV(CKR_PIN_EXPIRED): "CKR_PIN_EXPIRED",
        CK_RV(CKR_PIN_LOCKED): "CKR_PIN_LOCKED",
        CK_RV(CKR_SESSION_CLOSED): "CKR_SESSION_CLOSED", CK_RV(CKR_SESSION_COUNT): "CKR_SESSION_COUNT",
        CK_RV(CKR_SESSION_HANDLE_INVALID): "CKR_SESSION_HANDLE_INVALID",
        CK_RV(CKR_TEMPLATE_INCOMPLETE): "CKR_TEMPLATE_INCOMPLETE",
        CK_RV(CKR_TEMPLATE_INCONSISTENT): "CKR_TEMPLATE_INCONSISTENT",
        CK_RV(CKR_TOKEN_NOT_PRESENT): "CKR_TOKEN_NOT_PRESENT",
        CK_RV(CKR_TOKEN_NOT_RECOGNIZED): "CKR_TOKEN_NOT_RECOGNIZED",
        CK_RV(CKR_TOKEN_WRITE_PROTECTED): "CKR_TOKEN_WRITE_PROTECTED",
        CK_RV(CKR_USER_ALREADY_LOGGED_IN): "CKR_USER_ALREADY_LOGGED_IN",
        CK_RV(CKR_USER_NOT_LOGGED_IN): "CKR_USER_NOT_LOGGED_IN",
        CK_RV(CKR_USER_PIN_NOT_INITIALIZED): "CKR_USER_PIN_NOT_INITIALIZED",
        CK_RV(CKR_USER_TYPE_INVALID): "CKR_USER_TYPE_INVALID",
        CK_RV(CKR_BUFFER_TOO_SMALL): "CKR_BUFFER_TOO_SMALL",
        CK_RV(CKR_CRYPTOKI_NOT_INITIALIZED): "CKR_CRYPTOKI_NOT_INITIALIZED",
        CK_RV(CKR_CRYPTOKI_ALREADY_INITIALIZED): "CKR_CRYPTOKI_ALREADY_INITIALIZED",
    ]

    static func name(_ rv: CK_RV) -> String {
        names[rv] ?? "CKR 0x" + String(rv, radix: 16)
    }

    /// Return values after which the connection (sessions, login) cannot be trusted: the next
    /// operation reconnects from scratch.
    static func breaksConnection(_ rv: CK_RV) -> Bool {
        [
            CKR_DEVICE_ERROR, CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT, CKR_TOKEN_NOT_RECOGNIZED, CKR_SESSION_CLOSED,
            CKR_SESSION_HANDLE_INVALID, CKR_USER_NOT_LOGGED_IN, CKR_CRYPTOKI_NOT_INITIALIZED, CKR_GENERAL_ERROR,
            CKR_DEVICE_MEMORY, CKR_FUNCTION_FAILED,
        ].contains { CK_RV($0) == rv }
    }
}
