//go:build !coffer_nopkgconfig

package coffer

// By default cgo asks pkg-config for libcoffer's flags (`pkg-config --cflags --libs coffer`, from the
// coffer.pc that `make install` writes). Build with -tags coffer_nopkgconfig to give them yourself in
// CGO_CFLAGS and CGO_LDFLAGS instead (README.md). cgo flags apply to the whole package.

/*
#cgo pkg-config: coffer
*/
import "C"
