module github.com/coffer/coffer/bindings/go

go 1.19
