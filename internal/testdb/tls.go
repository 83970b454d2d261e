package testdb

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// TLSFiles are the PEM files of a throw-away certificate authority and of a server
// certificate it signed for 127.0.0.1, ::1 and localhost (for a node of a TLS Cluster,
// for its own address alone).
type TLSFiles struct {
	CAFile   string // the CA's certificate: what a client trusts
	CertFile string // the server's certificate
	KeyFile  string // the server's private key
}

// WriteTLSFiles creates a new CA and a server certificate signed by it, both valid for a
// day, and writes them to ca.pem, server.pem and server-key.pem in dir.
func WriteTLSFiles(dir string) (TLSFiles, error) {
	ca, err := newCertAuthority()
	if err != nil {
		return TLSFiles{}, err
	}
	return ca.writeFiles(dir, "localhost", "127.0.0.1", "::1")
}

// certAuthority is a throw-away CA, valid for a day, that signs server certificates.
type certAuthority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCertAuthority() (*certAuthority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("testdb: CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "flowfabric throw-away test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("testdb: CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("testdb: CA certificate: %w", err)
	}
	return &certAuthority{cert: cert, key: key}, nil
}

// writeFiles writes the CA's certificate and a new server certificate it signs, valid for
// a day, for hosts (IP addresses or DNS names), to ca.pem, server.pem and server-key.pem
// in dir.
func (ca *certAuthority) writeFiles(dir string, hosts ...string) (TLSFiles, error) {
	files := TLSFiles{
		CAFile:   filepath.Join(dir, "ca.pem"),
		CertFile: filepath.Join(dir, "server.pem"),
		KeyFile:  filepath.Join(dir, "server-key.pem"),
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return files, fmt.Errorf("testdb: server key: %w", err)
	}
	// Unique serials: the servers of a Cluster share the CA.
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return files, fmt.Errorf("testdb: serial number: %w", err)
	}
	now := time.Now()
	srv := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		// Redis uses the certificate for its client side too (replication, the cluster bus).
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			srv.IPAddresses = append(srv.IPAddresses, ip)
		} else {
			srv.DNSNames = append(srv.DNSNames, h)
		}
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srv, ca.cert, &srvKey.PublicKey, ca.key)
	if err != nil {
		return files, fmt.Errorf("testdb: server certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		return files, fmt.Errorf("testdb: server key: %w", err)
	}
	for _, f := range []struct {
		path, kind string
		der        []byte
	}{
		{files.CAFile, "CERTIFICATE", ca.cert.Raw},
		{files.CertFile, "CERTIFICATE", srvDER},
		{files.KeyFile, "EC PRIVATE KEY", keyDER},
	} {
		if err := os.WriteFile(f.path, pem.EncodeToMemory(&pem.Block{Type: f.kind, Bytes: f.der}), 0o600); err != nil {
			return files, fmt.Errorf("testdb: %w", err)
		}
	}
	return files, nil
}
