package cachetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TLSRedis is a redis-server that also serves TLS, with a certificate
// from a CA made for the test.
type TLSRedis struct {
	*Redis
	// TLSAddr is the TLS listener's host:port (Addr stays plaintext, for
	// the start-up probe and for tests that want to compare).
	TLSAddr string
	// CAFile is the PEM file of the CA that signed the server's
	// certificate (for 127.0.0.1 and localhost).
	CAFile string
	// RootCAs holds that CA.
	RootCAs *x509.CertPool
}

// StartRedisTLS starts a redis-server like StartRedis that also listens
// for TLS on another free loopback port (tls-auth-clients no: any client
// with the CA may connect). redis-server must be built with TLS, as
// Debian's is.
func StartRedisTLS(tb testing.TB) *TLSRedis {
	tb.Helper()
	dir := tb.TempDir()
	caPEM, certPEM, keyPEM, err := testCertificates()
	if err != nil {
		tb.Fatalf("cachetest: certificates: %v", err)
	}
	files := map[string][]byte{"ca.pem": caPEM, "server.pem": certPEM, "server.key": keyPEM}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	port, err := freePort()
	if err != nil {
		tb.Fatal(err)
	}
	r := startRedis(tb, []string{
		"--tls-port", strconv.Itoa(port),
		"--tls-cert-file", filepath.Join(dir, "server.pem"),
		"--tls-key-file", filepath.Join(dir, "server.key"),
		"--tls-ca-cert-file", filepath.Join(dir, "ca.pem"),
		"--tls-auth-clients", "no",
	})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &TLSRedis{Redis: r, TLSAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		CAFile: filepath.Join(dir, "ca.pem"), RootCAs: pool}
}

// ClientConfig is a TLS client configuration that trusts the test CA.
func (r *TLSRedis) ClientConfig() *tls.Config {
	return &tls.Config{RootCAs: r.RootCAs, MinVersion: tls.VersionTLS12}
}

// testCertificates makes a CA and a server certificate it signs for
// 127.0.0.1 and localhost, valid for a day, in PEM.
func testCertificates() (caPEM, certPEM, keyPEM []byte, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "edgecache test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "redis"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}
