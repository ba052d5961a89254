package broker

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"

	"github.com/golang-jwt/jwt/v5"
	"github.com/veil-iot/veil/hooks"
	"golang.org/x/crypto/ssh"
)

// jwtConfig reads --jwt-key: a PEM public key (RSA, ECDSA or Ed25519) or
// an HMAC secret (the file's bytes). A public key in another form (DER, a
// certificate, JWK, OpenSSH) is refused rather than taken as a secret.
func (b *Broker) jwtConfig() (*hooks.JWTConfig, error) {
	if b.cfg.JWTKey == "" {
		return nil, nil
	}
	data, err := os.ReadFile(b.cfg.JWTKey)
	if err != nil {
		return nil, fmt.Errorf("--jwt-key: %w", err)
	}
	cfg := &hooks.JWTConfig{Issuer: b.cfg.JWTIssuer, Audience: b.cfg.JWTAudience}
	if bytes.Contains(data, []byte("-----BEGIN")) {
		if k, err := jwt.ParseRSAPublicKeyFromPEM(data); err == nil {
			cfg.Key = k
		} else if k, err := jwt.ParseECPublicKeyFromPEM(data); err == nil {
			cfg.Key = k
		} else if k, err := jwt.ParseEdPublicKeyFromPEM(data); err == nil {
			cfg.Key = k
		} else {
			return nil, fmt.Errorf("--jwt-key %s: not an RSA, ECDSA or Ed25519 public key", b.cfg.JWTKey)
		}
		return cfg, nil
	}
	if form := publicKeyForm(data); form != "" {
		// Taken as an HMAC secret, a public key signs tokens for anyone
		// who has it: everyone.
		return nil, fmt.Errorf("--jwt-key %s: %s, not an HMAC secret: give the public key as PEM (-----BEGIN PUBLIC KEY-----)", b.cfg.JWTKey, form)
	}
	secret := bytes.TrimSpace(data)
	if len(secret) < 32 {
		return nil, fmt.Errorf("--jwt-key %s: an HMAC secret must be at least 32 bytes", b.cfg.JWTKey)
	}
	cfg.Key = secret
	return cfg, nil
}

// publicKeyForm names the form of a public key or certificate that data
// holds other than PEM — DER, or DER in base64 (a PEM's body without its
// armour lines) or hex, a JWK or JWKS, an OpenSSH key — or returns "".
func publicKeyForm(data []byte) string {
	text := bytes.TrimSpace(bytes.TrimPrefix(data, []byte("\ufeff")))
	compact := bytes.Join(bytes.Fields(text), nil)
	ders := []struct {
		form string
		der  []byte
	}{{"", data}}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if der, err := enc.DecodeString(string(compact)); err == nil {
			ders = append(ders, struct {
				form string
				der  []byte
			}{" in base64", der})
		}
	}
	if der, err := hex.DecodeString(string(compact)); err == nil {
		ders = append(ders, struct {
			form string
			der  []byte
		}{" in hex", der})
	}
	for _, d := range ders {
		if _, err := x509.ParsePKIXPublicKey(d.der); err == nil {
			return "a DER public key" + d.form
		}
		if _, err := x509.ParsePKCS1PublicKey(d.der); err == nil {
			return "a DER RSA public key" + d.form
		}
		if _, err := x509.ParseCertificate(d.der); err == nil {
			return "a DER certificate" + d.form
		}
	}
	if _, _, _, _, err := ssh.ParseAuthorizedKey(text); err == nil {
		return "an OpenSSH public key"
	}
	if bytes.HasPrefix(text, []byte("{")) && json.Valid(text) {
		return "a JSON document (a JWK or JWKS)"
	}
	return ""
}
