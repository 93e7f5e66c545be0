path = { "secret/*" = { capabilities = ["read"] } }
name = "x"
