# A realistic policy
path "secret/data/*" {
  capabilities = ["create", "read", "update", "patch", "delete", "list",]
  allowed_parameters = {
    "Color" = ["red", "bl*", 5, true, ["x"]]
    size = []
    "*" = []
  }
  denied_parameters {
    "secret" = []
  }
  required_parameters = ["owner"]
  min_wrapping_ttl = "1s"
  max_wrapping_ttl = 3600
  comment = <<EOT
Heredocs are accepted
EOT
}
path "/sys/mounts" { policy = "sudo" } // leading slash stripped
path "esc\"aped\u00e9" { capabilities = ["deny", "read"] }
