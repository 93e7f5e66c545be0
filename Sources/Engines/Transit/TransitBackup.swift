import CofferCore
package import CofferFramework

/// Transit backups in OpenBao's format: base64 of `{"policy": {...}, "archived_keys": {"keys": [...]}}`,
/// with Go's JSON forms for key material (EC and RSA parameters as decimal numbers). A backup from
/// OpenBao restores here and one from here restores into OpenBao.
enum TransitBackup {
    static func encode(_ key: TransitKey, now: Timestamp) throws(CofferError) -> String {
        var working: [String: JSONValue] = [:]
        var archive: [JSONValue] = []
        let archiveMin = key.minAvailableVersion
        for n in archiveMin...key.latestVersion {
            guard let version = key.versions[n] else {
                archive.append(try entry(nil, key))
                continue
            }
            let json = try entry(version, key)
            archive.append(json)
            if n >= key.minDecryptionVersion { working[String(n)] = json }
        }
        var policy: [String: JSONValue] = [
            "name": .string(key.name), "keys": .object(working), "derived": .bool(key.derived),
            "kdf": key.derived ? 1 : 0,
            "convergent_encryption": .bool(key.convergent), "exportable": .bool(key.exportable),
            "min_decryption_version": .int(key.minDecryptionVersion),
            "min_encryption_version": .int(key.minEncryptionVersion),
            "latest_version": .int(key.latestVersion), "archive_version": .int(key.latestVersion),
            "archive_min_version": .int(archiveMin),
            "min_available_version": .int(key.minAvailableVersion), "deletion_allowed": .bool(key.deletionAllowed),
            "convergent_version": key.convergent ? -1 : 0, "type": .int(key.type.backupNumber),
            "backup_info": ["time": .string(now.rfc3339), "version": .int(key.latestVersion)], "restore_info": nil,
            "allow_plaintext_backup": .bool(key.allowPlaintextBackup), "version_template": "", "storage_prefix": "",
            "auto_rotate_period": .int(key.autoRotatePeriod * 1_000_000_000), "Imported": false,
            "AllowImportedKeyRotation": false,
            "soft_deleted": false,
        ]
        if key.type == .hmac { policy["key_size"] = .int(key.keySize) }
        let document: JSONValue = ["policy": .object(policy), "archived_keys": ["keys": .array(archive)]]
        return Base64.encode(document.serialized())
    }

    /// One key version in Go's `KeyEntry` JSON; nil gives the empty placeholder OpenBao writes for version 0.
    static func entry(_ version: KeyVersion?, _ key: TransitKey) throws(CofferError) -> JSONValue {
        var json: [String: JSONValue] = [
            "key": nil, "hmac_key": nil, "time": "0001-01-01T00:00:00Z", "ec_x": nil, "ec_y": nil, "ec_d": nil,
            "rsa_key": nil,
            "rsa_public_key": nil, "public_key": "", "convergent_version": 0, "creation_time": 0,
            "certificate_chain": nil,
            "external_key_ref": "",
        ]
        guard let version else { return .object(json) }
        json["hmac_key"] = .string(version.hmacKey.withUnsafeBytes { Base64.encode($0) })
        json["time"] = .string(version.creationTime.rfc3339)
        json["creation_time"] = .int(version.creationTime.seconds)
        if key.convergent { json["convergent_version"] = 3 }
        let type = key.type
        if type.curve != nil {
            let pkey = version.pkey!
            json["ec_d"] = .number(try pkey.decimalParameter("priv"))
            json["ec_x"] = .number(try pkey.decimalParameter("qx"))
            json["ec_y"] = .number(try pkey.decimalParameter("qy"))
            json["public_key"] = .string(version.publicKey)
        } else if type.rsaBits != nil {
            let pkey = version.pkey!
            func p(_ name: String) throws(CofferError) -> JSONValue { .number(try pkey.decimalParameter(name)) }
            json["rsa_key"] = [
                "N": try p("n"), "E": try p("e"), "D": try p("d"),
                "Primes": [try p("rsa-factor1"), try p("rsa-factor2")],
                "Precomputed": [
                    "Dp": try p("rsa-exponent1"), "Dq": try p("rsa-exponent2"), "Qinv": try p("rsa-coefficient1"),
                    "CRTValues": [],
                ],
            ]
        } else {
            json["key"] = .string(version.material.withUnsafeBytes { Base64.encode($0) })
            if type == .ed25519 { json["public_key"] = .string(version.publicKey) }
        }
        return .object(json)
    }

    static func decode(_ text: String) throws(CofferError) -> TransitKey {
        let malformed = CofferError.invalid(
            "the backup is not a transit key backup (expected base64 of the JSON that backup/<name> returns)"
        )
        guard let raw = Base64.decode(text), let document = try? JSONValue.parse(raw),
            let policy = document["policy"]?.objectValue,
            let name = policy["name"]?.stringValue, let typeNumber = policy["type"]?.intValue
        else { throw malformed }
        guard let type = TransitKeyType.allCases.first(where: { $0.backupNumber == typeNumber }) else {
            throw CofferError.invalid(
                "the backup holds a key of a type Coffer does not support (OpenBao type number \(typeNumber))"
            )
        }
        var key = TransitKey(name: name, type: type)
        key.derived = policy["derived"]?.boolValue ?? false
        if key.derived, policy["kdf"]?.intValue != 1 {
            throw CofferError.invalid(
                "the backup's key uses a legacy key derivation function; only hkdf_sha256 (kdf 1) is supported"
            )
        }
        key.convergent = policy["convergent_encryption"]?.boolValue ?? false
        if key.convergent, let v = policy["convergent_version"]?.intValue, v != -1, v != 3 {
            throw CofferError.invalid(
                "the backup's key uses convergent encryption version \(v); only version 3 is supported"
            )
        }
        key.exportable = policy["exportable"]?.boolValue ?? false
        key.allowPlaintextBackup = policy["allow_plaintext_backup"]?.boolValue ?? false
        key.deletionAllowed = policy["deletion_allowed"]?.boolValue ?? false
        key.minDecryptionVersion = max(1, policy["min_decryption_version"]?.intValue ?? 1)
        key.minEncryptionVersion = policy["min_encryption_version"]?.intValue ?? 0
        key.minAvailableVersion = policy["min_available_version"]?.intValue ?? 0
        key.latestVersion = policy["latest_version"]?.intValue ?? 0
        key.autoRotatePeriod = Int64((policy["auto_rotate_period"]?.intValue ?? 0) / 1_000_000_000)
        key.keySize = policy["key_size"]?.intValue ?? 0
        var entries: [Int: JSONValue] = [:]
        if let archive = document["archived_keys"]?["keys"]?.arrayValue {
            let archiveMin = policy["archive_min_version"]?.intValue ?? 0
            for (index, item) in archive.enumerated() { entries[archiveMin + index] = item }
        }
        for (number, item) in policy["keys"]?.objectValue ?? [:] {
            guard let n = Int(number) else { throw malformed }
            entries[n] = item
        }
        for (n, item) in entries where n >= max(1, key.minAvailableVersion) && n <= key.latestVersion {
            key.versions[n] = try version(n, item, type)
        }
        guard key.latestVersion > 0, key.versions[key.latestVersion] != nil else {
            throw CofferError.invalid("the backup holds no key material for its latest version \(key.latestVersion)")
        }
        return key
    }

    static func version(_ n: Int, _ item: JSONValue, _ type: TransitKeyType) throws(CofferError) -> KeyVersion {
        let missing = CofferError.invalid("the backup's version \(n) has no usable key material")
        let created: Timestamp
        if let time = item["time"]?.stringValue, let t = Timestamp(rfc3339: time) {
            created = t
        } else {
            created = Timestamp(seconds: Int64(item["creation_time"]?.intValue ?? 0))
        }
        let hmac = item["hmac_key"]?.stringValue.flatMap(Base64.decode)
        func number(_ value: JSONValue?) throws(CofferError) -> String {
            guard case .number(let text)? = value else { throw missing }
            return text
        }
        let material: SecureBytes
        if let curve = type.curve {
            let x = try number(item["ec_x"])
            let y = try number(item["ec_y"])
            let size = type.ecdsaComponentSize
            guard let xb = bigEndian(x, size: size), let yb = bigEndian(y, size: size) else { throw missing }
            let pkey = try PKey.fromDecimal(
                type: "EC",
                group: curve,
                publicPoint: [0x04] + xb + yb,
                numbers: [("priv", try number(item["ec_d"]))]
            )
            material = try pkey.privateDER()
        } else if type.rsaBits != nil {
            guard let rsa = item["rsa_key"], let primes = rsa["Primes"]?.arrayValue, primes.count == 2,
                let pre = rsa["Precomputed"]
            else {
                throw missing
            }
            let pkey = try PKey.fromDecimal(
                type: "RSA",
                group: nil,
                publicPoint: nil,
                numbers: [
                    ("n", try number(rsa["N"])), ("e", try number(rsa["E"])), ("d", try number(rsa["D"])),
                    ("rsa-factor1", try number(primes[0])), ("rsa-factor2", try number(primes[1])),
                    ("rsa-exponent1", try number(pre["Dp"])), ("rsa-exponent2", try number(pre["Dq"])),
                    ("rsa-coefficient1", try number(pre["Qinv"])),
                ]
            )
            material = try pkey.privateDER()
        } else {
            guard let raw = item["key"]?.stringValue.flatMap(Base64.decode) else { throw missing }
            let expected = type.aead?.keySize ?? (type == .ed25519 ? 64 : raw.count)
            guard raw.count == expected, type != .hmac || (32...512).contains(raw.count) else {
                throw CofferError.invalid(
                    "the backup's version \(n) holds a \(raw.count)-byte key; \(type.rawValue) needs \(expected)"
                )
            }
            material = SecureBytes(raw)
        }
        let hmacKey = type == .hmac ? material : SecureBytes(hmac ?? [])
        guard hmacKey.count > 0 else { throw missing }
        return try KeyVersion(number: n, creationTime: created, material: material, hmacKey: hmacKey, type: type)
    }

    /// A decimal number as `size` big-endian bytes (nil if it does not fit).
    static func bigEndian(_ decimal: String, size: Int) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: size)
        for c in decimal.utf8 {
            guard c >= 0x30, c <= 0x39 else { return nil }
            var carry = Int(c - 0x30)
            for i in stride(from: size - 1, through: 0, by: -1) {
                let v = Int(out[i]) * 10 + carry
                out[i] = UInt8(v & 0xFF)
                carry = v >> 8
            }
            guard carry == 0 else { return nil }
        }
        return out
    }
}
