path "x" {
  comment = <<-EOT
    indented
    EOT
  capabilities = ["read"]
}
