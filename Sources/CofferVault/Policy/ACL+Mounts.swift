package import CofferAudit
package import CofferCore
package import CofferFramework

extension ACL {
    /// True if any rule grants something (not only deny) on a path at or under `mountPath`, or on a
    /// glob that covers it. Vault uses this to decide whether a token may learn that a mount exists.
    func hasAnyCapability(under mountPath: String) -> Bool {
        if isRoot { return true }
        if !capabilities(path: mountPath).subtracting(.deny).isEmpty { return true }
        return mergedRules.contains { rule in
            guard !rule.capabilities.contains(.deny), !rule.capabilities.isEmpty else { return false }
            var pattern = Substring(rule.path)
            if pattern.hasSuffix("*") { pattern = pattern.dropLast() }
            let plusFree = pattern.prefix { $0 != "+" }
            return plusFree.utf8.starts(with: mountPath.utf8) || mountPath.utf8.starts(with: plusFree.utf8)
        }
    }
}
