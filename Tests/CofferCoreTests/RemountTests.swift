import Foundation
import Testing

@testable import CofferCore

@Suite struct RemountTests {
    @Test func remountMovesAMountWithItsDataAndIdentity() throws {
        let directory = TemporaryDirectory()
        let path = directory.file("coffer.db")
        let result: InitResult
        do {
            let (core, r) = try makeCore(storage: try SQLiteBackend(path: path), shares: 1, threshold: 1)
            result = r
            let root = r.rootToken
            try core.call(.update, "sys/mounts/team/app", ["type": "echo", "description": "team data"], token: root)
            try core.call(.update, "team/app/db", ["password": "s3cret"], token: root)
            let before = try #require(try core.call(.read, "sys/mounts", token: root).data?["team/app/"])

            let moved = try core.call(.update, "sys/remount", ["from": "team/app", "to": "moved/app/"], token: root)
            #expect(moved.status == 200 && moved.repeatDataAtTopLevel && moved.warnings.count == 1)
            let id = try #require(moved.data?["migration_id"]?.stringValue)
            #expect(try core.call(.update, "moved/app/db", ["password": "s3cret"], token: root).status == 204)
            #expect(try core.call(.read, "moved/app/db", token: root).data?["password"] == "s3cret")
            expectError(.notFound, containing: "no handler for route") {
                try core.call(.read, "team/app/db", token: root)
            }
            let mounts = try #require(try core.call(.read, "sys/mounts", token: root).data)
            #expect(
                mounts["team/app/"] == nil && mounts["moved/app/"] == before,
                "same uuid, accessor, type and description"
            )

            let status = try core.call(.read, "sys/remount/status/\(id)", token: root)
            #expect(
                status.data == [
                    "migration_id": .string(id),
                    "migration_info": ["source_mount": "team/app/", "target_mount": "moved/app/", "status": "success"],
                ]
            )
            expectError(.notFound) {
                try core.call(.read, "sys/remount/status/00000000-0000-0000-0000-000000000000", token: root)
            }
            core.barrier.physical.close()
        }
        // The move was stored: reopened, the data is at the new path.
        let core = try Core(storage: try SQLiteBackend(path: path), engines: testRegistry())
        try core.unseal(key: result.keys[0].unsafeCopy)
        #expect(try core.call(.read, "moved/app/db", token: result.rootToken).data?["password"] == "s3cret")
        #expect(try core.mounts().map(\.path) == ["echo/", "moved/app/"])
    }

    @Test(arguments: [
        (["from": "echo"] as [String: JSONValue], "both 'from' and 'to' path must be specified as a string"),
        (["from": "", "to": "x"], "both 'from' and 'to' path must be specified as a string"),
        (["from": "nope", "to": "x"], "no matching mount at \"nope/\""),
        (["from": "echo", "to": "other"], "path already in use at \"other/\""),
        (["from": "echo", "to": "other/inner"], "path already in use at \"other/\""),
        (["from": "echo", "to": "echo"], "path already in use at \"echo/\""),
        (["from": "echo", "to": "echo/deeper"], "path already in use at \"echo/\""),
        (["from": "sys", "to": "x"], "cannot remount \"sys/\""),
        (["from": "auth/token", "to": "x"], "cannot remount \"auth/token/\""),
        (["from": "echo", "to": "sys/x"], "cannot remount to destination sys/x/"),
        (["from": "echo", "to": "auth/x"], "cannot remount to destination auth/x/"),
        (["from": "echo", "to": "a/../b"], "'..' segment"),
    ])
    func remountRefusesWhatCannotMove(body: [String: JSONValue], message: String) throws {
        let (core, result) = try makeCore()
        try core.call(.update, "sys/mounts/other", ["type": "echo"], token: result.rootToken)
        try core.call(.update, "echo/x", ["v": 1], token: result.rootToken)
        expectError(.invalidArgument, containing: message) {
            try core.call(.update, "sys/remount", body, token: result.rootToken)
        }
        #expect(try core.mounts().map(\.path) == ["echo/", "other/"], "nothing moved")
        #expect(try core.call(.read, "echo/x", token: result.rootToken).data?["v"] == 1)
    }

    @Test func remountNeedsSudoAndOnlyWrites() throws {
        let (core, result) = try makeCore()
        let root = result.rootToken
        try core.call(
            .update,
            "sys/policies/acl/mover",
            ["policy": #"path "sys/remount" { capabilities = ["update", "create"] }"#],
            token: root
        )
        try core.call(
            .update,
            "sys/policies/acl/sudo-mover",
            ["policy": #"path "sys/remount" { capabilities = ["update", "sudo"] }"#],
            token: root
        )
        func token(_ policy: String) throws -> String {
            try #require(
                try core.call(.update, "auth/token/create", ["policies": [.string(policy)]], token: root).auth?
                    .clientToken
            )
        }
        expectError(.permissionDenied) {
            try core.call(.update, "sys/remount", ["from": "echo", "to": "e2"], token: try token("mover"))
        }
        try core.call(.update, "sys/remount", ["from": "echo", "to": "e2"], token: try token("sudo-mover"))
        #expect(try core.mounts().map(\.path) == ["e2/"])
        expectError(.unsupportedOperation) { try core.call(.read, "sys/remount", token: root) }
    }
}
