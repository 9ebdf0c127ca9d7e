package upload

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCertificateErrorsAreNotRetryable(t *testing.T) {
	for name, err := range map[string]error{
		"verification": fmt.Errorf("post: %w", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}),
		"unknown CA":   fmt.Errorf("post: %w", x509.UnknownAuthorityError{}),
		"hostname":     fmt.Errorf("post: %w", x509.HostnameError{Host: "x"}),
	} {
		require.False(t, Retryable(err), name)
	}
	require.True(t, Retryable(fmt.Errorf("dial: connection refused")))
}
