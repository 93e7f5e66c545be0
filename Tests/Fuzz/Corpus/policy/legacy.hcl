path "a" { policy = "deny" capabilities = ["read"] }
path "b" { policy = "write" }
path "c" { policy = "read" }
