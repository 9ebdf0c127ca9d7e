//go:build !unix

package authorizationserver

// lockFile is a no-op where flock does not exist: run one
// authorization-server per claims file.
func lockFile(string) (func(), error) { return func() {}, nil }
