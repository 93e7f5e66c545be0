@_exported import Coffer
@_exported import CofferAudit
@_exported import CofferCore
@_exported import CofferFramework
@_exported import CofferStorage
@_exported import CofferTesting
@_exported import CofferVault
@_exported import Engines
