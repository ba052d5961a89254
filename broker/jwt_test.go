package broker

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// TestJWTKeyForms: --jwt-key takes a PEM public key or an HMAC secret. A
// public key in another form is refused, naming the form: taken as an
// HMAC secret, anyone holding the public key (everyone) could sign a
// token for any user, an admin too.
func TestJWTKeyForms(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "id.example"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	cert, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ec.PublicKey, ec)
	if err != nil {
		t.Fatal(err)
	}
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(edPub)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		data []byte
		want string // the error names it; "" accepted
	}{
		{"PEM public key", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), ""},
		{"HMAC secret", []byte("a-shared-secret-of-at-least-32-bytes-long\n"), ""},
		{"short HMAC secret", []byte("short"), "at least 32 bytes"},
		{"DER public key", der, "a DER public key"},
		{"DER certificate", cert, "a DER certificate"},
		{"OpenSSH public key", ssh.MarshalAuthorizedKey(sshPub), "an OpenSSH public key"},
		{"JWKS", []byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}`), "a JSON document"},
		{"JWK after a byte-order mark", []byte("\ufeff" + `{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}`), "a JSON document"},
		// A PEM's body without its armour lines, as consoles and x5c show it.
		{"DER public key in base64", []byte(wrap64(base64.StdEncoding.EncodeToString(der)) + "\n"), "a DER public key in base64"},
		{"DER certificate in base64", []byte(base64.StdEncoding.EncodeToString(cert)), "a DER certificate in base64"},
		{"DER public key in hex", []byte(hex.EncodeToString(der)), "a DER public key in hex"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "key")
			if err := os.WriteFile(path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			b := &Broker{cfg: Config{JWTKey: path, JWTIssuer: "https://id.example", JWTAudience: "mqtt://veil.example"}}
			cfg, err := b.jwtConfig()
			if tc.want == "" {
				if err != nil || cfg == nil || cfg.Audience != "mqtt://veil.example" {
					t.Fatalf("refused: %v (%+v)", err, cfg)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v (key %T), want an error naming %q", err, cfg, tc.want)
			}
		})
	}
}

// wrap64 breaks s into lines of 64 characters, as a PEM body is.
func wrap64(s string) string {
	var b strings.Builder
	for len(s) > 64 {
		b.WriteString(s[:64] + "\n")
		s = s[64:]
	}
	b.WriteString(s)
	return b.String()
}
