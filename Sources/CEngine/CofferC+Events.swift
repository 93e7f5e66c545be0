// The C ABI's events: coffer_subscribe and coffer_unsubscribe (include/coffer.h, docs/events.md).
// The rules the header states (delivery threads, order, bounded queues, unsubscribe waiting for a
// callback in flight unless called from it) are EventDelivery's (Sources/CofferVault/Events/).
public import CCoffer
import Coffer

#if canImport(Glibc)
import Glibc
#endif

/// The C callback and its context, carried to the delivery thread. The pointer is the caller's,
/// valid until it unsubscribes (the header says so); it is only passed back.
private struct CCallback: @unchecked Sendable {
    let function: coffer_event_fn
    let context: UnsafeMutableRawPointer?
}

@c @implementation
public func coffer_subscribe(
    _ pointer: OpaquePointer?,
    _ token: UnsafePointer<CChar>?,
    _ glob: UnsafePointer<CChar>?,
    _ callback: coffer_event_fn?,
    _ context: UnsafeMutableRawPointer?,
    _ idOut: UnsafeMutablePointer<UInt64>?
) -> Int32 {
    var status: Int32 = 0
    idOut?.pointee = 0
    guard let vault = cofferVault(pointer, status: &status) else { return status }
    guard let callback else { return cofferFail(COFFER_EINVALID, "callback is NULL") }
    guard let idOut else { return cofferFail(COFFER_EINVALID, "id_out is NULL") }
    guard case .some(let token_) = cofferString(token, "token", optional: true, status: &status) else { return status }
    guard case .some(let glob_?) = cofferString(glob, "event_type_glob", optional: false, status: &status) else {
        return status
    }
    let c = CCallback(function: callback, context: context)
    do throws(CofferError) {
        idOut.pointee = try vault.subscribeEvents(token: token_, pattern: glob_) { json in
            var text = json
            text.append(0)
            text.withUnsafeBufferPointer { buffer in
                buffer.baseAddress!.withMemoryRebound(to: CChar.self, capacity: buffer.count) {
                    c.function($0, json.count, c.context)
                }
            }
        }
    } catch {
        return cofferFail(error)
    }
    return cofferSucceed()
}

@c @implementation
public func coffer_unsubscribe(_ pointer: OpaquePointer?, _ id: UInt64) -> Int32 {
    var status: Int32 = 0
    guard let vault = cofferVault(pointer, status: &status) else { return status }
    guard vault.unsubscribeEvents(id) else {
        return cofferFail(COFFER_ENOTFOUND, "no subscription \(id) on this handle (never made, or ended already)")
    }
    return cofferSucceed()
}
