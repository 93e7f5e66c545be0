path "secret/*/x" { capabilities = ["read"] }
path "a/+*" { capabilities = ["read"] }