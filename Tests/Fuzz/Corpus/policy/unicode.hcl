path "secret/данные/*" { capabilities = ["read"] }
path "é/+/ü" { capabilities = ["deny"] }
