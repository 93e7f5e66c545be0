@_exported import Coffer
@_exported import CofferCore
@_exported import CofferTesting
@_exported import CofferVault
