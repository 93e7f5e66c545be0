storage "memory" {}
listener "tcp" {
  address = "[::1]:8201"
  tls_disable = true
  max_request_size = 1048576
  http_read_header_timeout = "10s"
  http_idle_timeout = 300
  max_connections = "64"
}
seal "shamir" {}
api_addr  = "https://coffer.example.com:8200"
log_level = "warn"
log_format = "json"
disable_mlock = "true"
