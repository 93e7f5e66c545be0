blah "a" { }
path "a" { mfa_methods = ["x"] }