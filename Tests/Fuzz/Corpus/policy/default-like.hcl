path "auth/token/lookup-self" {
    capabilities = ["read"]
}
path "auth/token/renew-self" {
    capabilities = ["update"]
}
path "sys/capabilities-self" {
    capabilities = ["update"]
}
path "secret/+/team-*" {
    capabilities = ["read", "list"]
}
path "transit/encrypt/app" { capabilities = ["update"] }
path "transit/decrypt/app" { capabilities = ["update"] }
