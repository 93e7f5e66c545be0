/* block
comment */
# hash
// slashes
path "x" { capabilities = ["list"] } # trailing
