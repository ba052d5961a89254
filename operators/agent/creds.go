package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Credentials are what enrolment returned: the thing's own identity. They
// are written once, with 0600 permissions, and read at every start.
type Credentials struct {
	Thing     string    `json:"thing"`
	Secret    string    `json:"secret"`
	ClaimCode string    `json:"claim_code,omitempty"`
	Serial    string    `json:"serial"`
	Enrolled  time.Time `json:"enrolled"`
}

// ErrNoCredentials means the operator has not enrolled yet.
var ErrNoCredentials = errors.New("no credentials: not enrolled yet")

// LoadCredentials reads the credentials file. A missing file is
// ErrNoCredentials. A file readable by others is tightened to 0600 and
// reported through warn.
func LoadCredentials(path string, warn func(string)) (Credentials, error) {
	var c Credentials
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, ErrNoCredentials
	}
	if err != nil {
		return c, fmt.Errorf("credentials %s: %w", path, err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(path, 0o600); err != nil {
			return c, fmt.Errorf("credentials %s: mode %v is readable by others and chmod failed: %w", path, st.Mode().Perm(), err)
		}
		if warn != nil {
			warn(fmt.Sprintf("credentials %s had mode %v; tightened to 0600", path, st.Mode().Perm()))
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("credentials %s: %w", path, err)
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return c, fmt.Errorf("credentials %s: %w", path, err)
	}
	if c.Thing == "" || c.Secret == "" {
		return c, fmt.Errorf("credentials %s: thing and secret must be set", path)
	}
	return c, nil
}

// SaveCredentials writes c atomically and durably with 0600 permissions
// (the directory is created 0700 if missing): a temporary file, synced,
// renamed over path, then the directory synced.
func SaveCredentials(path string, c Credentials) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("credentials dir %s: %w", dir, err)
	}
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".credentials-*")
	if err != nil {
		return fmt.Errorf("credentials %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("credentials %s: %w", path, err)
	}
	if _, err := f.Write(append(data, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("credentials %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("credentials %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("credentials %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("credentials %s: %w", path, err)
	}
	// The rename is durable only once the directory is synced: after a
	// power cut without it the file may be gone again, and with it the
	// only copy of the thing's secret.
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("credentials %s: sync %s: %w", path, dir, err)
	}
	return nil
}

// syncDir fsyncs a directory (its entries); a variable so that a test can
// see it called, and when.
var syncDir = func(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
