package broker

import (
	"bytes"
	"fmt"
	"os"

	"github.com/golang-jwt/jwt/v5"
	"github.com/veil-iot/veil/hooks"
)

// jwtConfig reads --jwt-key: a PEM public key (RSA, ECDSA or Ed25519) or,
// for anything else, the file's bytes as an HMAC secret.
func (b *Broker) jwtConfig() (*hooks.JWTConfig, error) {
	if b.cfg.JWTKey == "" {
		return nil, nil
	}
	data, err := os.ReadFile(b.cfg.JWTKey)
	if err != nil {
		return nil, fmt.Errorf("--jwt-key: %w", err)
	}
	cfg := &hooks.JWTConfig{Issuer: b.cfg.JWTIssuer}
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
	secret := bytes.TrimSpace(data)
	if len(secret) < 32 {
		return nil, fmt.Errorf("--jwt-key %s: an HMAC secret must be at least 32 bytes", b.cfg.JWTKey)
	}
	cfg.Key = secret
	return cfg, nil
}
