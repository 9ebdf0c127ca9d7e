//go:build e2e

package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "telemeter-e2e-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return &testCA{cert: cert, key: key, file: writeFile(t, "ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))}
}

// issue writes a certificate signed by the CA: a server certificate for
// 127.0.0.1, or a client certificate whose CN is a cluster ID.
func (ca *testCA) issue(t *testing.T, cn string, server bool) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	kder, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	return writeFile(t, cn+"-cert.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))),
		writeFile(t, cn+"-key.pem", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})))
}

// In mTLS identity mode a certificate for cluster A pushes for A and
// cannot push data for cluster B, even with a valid cluster token.
func TestMTLSIdentity(t *testing.T) {
	ca := newTestCA(t)
	srvCert, srvKey := ca.issue(t, "127.0.0.1", true)
	certA, keyA := ca.issue(t, "cluster-a", false)

	source := startSource(t)
	tokens := writeFile(t, "tokens.json", `[{"token":"fleet-token"}]`)
	ext, internal := freeAddr(t), freeAddr(t)
	srv := &telemeterServer{URL: "https://" + ext, InternalURL: "http://" + internal}
	srv.proc = start(t, "telemeter-server-mtls", bin("telemeter-server"), "--listen="+ext, "--listen-internal="+internal,
		"--tokens-file="+tokens, "--storage-dir="+t.TempDir(), "--tls-crt="+srvCert, "--tls-key="+srvKey,
		"--client-ca-file="+ca.file)
	waitHTTP(t, srv.InternalURL+"/healthz/ready", 30*time.Second)

	withCert := func(id string) []string {
		return append(clientArgs(source, srv, id, "fleet-token"),
			"--to-ca-file="+ca.file, "--to-cert-file="+certA, "--to-key-file="+keyA, "--interval=20s")
	}
	runClientOnce(t, withCert("cluster-a")...)

	p := start(t, "client-cert-a-for-b", bin("telemeter-client"), append([]string{"--once"}, withCert("cluster-b")...)...)
	<-p.done
	require.Error(t, p.err, "a certificate for cluster-a must not push for cluster-b")

	noCert := append(clientArgs(source, srv, "cluster-a", "fleet-token"), "--to-ca-file="+ca.file, "--interval=20s")
	p = start(t, "client-no-cert", bin("telemeter-client"), append([]string{"--once"}, noCert...)...)
	<-p.done
	require.Error(t, p.err, "without a certificate the push must fail")

	got, err := httpGetBody(srv.InternalURL + "/federate")
	require.NoError(t, err)
	require.Contains(t, got, `_id="cluster-a"`)
	require.NotContains(t, got, `cluster-b`)
}
