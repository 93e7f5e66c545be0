storage "inmem" {}
listener "tcp" { address = "0.0.0.0:8200" tls_disable = 1 }
seal "pkcs11" {
  lib = "/usr/lib/softhsm/libsofthsm2.so"
  token_label = "coffer"
  pin = "1234"
  key_label = "coffer-root"
  mechanism = 4224
  generate_key = true
}
