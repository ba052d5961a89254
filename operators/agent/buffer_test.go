package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBufferBoundedDropsOldest(t *testing.T) {
	tests := []struct {
		capacity, pushes int
		wantFirst        int
		wantLen          int
		wantDropped      uint64
	}{
		{3, 2, 0, 2, 0},
		{3, 3, 0, 3, 0},
		{3, 5, 2, 3, 2},
		{1, 4, 3, 1, 3},
		{0, 2, 1, 1, 1}, // capacity below 1 means 1
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("cap%d-push%d", tt.capacity, tt.pushes), func(t *testing.T) {
			b := NewBuffer(tt.capacity)
			for i := 0; i < tt.pushes; i++ {
				b.Push(Message{Topic: "t", Payload: []byte(fmt.Sprint(i))})
			}
			if b.Len() != tt.wantLen || b.Dropped() != tt.wantDropped {
				t.Fatalf("len %d dropped %d, want %d and %d", b.Len(), b.Dropped(), tt.wantLen, tt.wantDropped)
			}
			for want := tt.wantFirst; want < tt.pushes; want++ {
				m, ok := b.Peek()
				if !ok || string(m.Payload) != fmt.Sprint(want) {
					t.Fatalf("peek = %q, %v; want %d", m.Payload, ok, want)
				}
				b.Pop(m)
			}
			if _, ok := b.Peek(); ok || b.Len() != 0 {
				t.Fatal("buffer not empty after popping everything")
			}
		})
	}
}

func TestBufferPopAfterOverflowKeepsNewer(t *testing.T) {
	b := NewBuffer(2)
	b.Push(Message{Topic: "t", Payload: []byte("a")})
	b.Push(Message{Topic: "t", Payload: []byte("b")})
	m, _ := b.Peek()                                  // "a" is being sent…
	b.Push(Message{Topic: "t", Payload: []byte("c")}) // …and dropped by an overflow meanwhile
	b.Pop(m)                                          // the acknowledgement of "a" must not remove "b"
	if m, _ := b.Peek(); string(m.Payload) != "b" || b.Len() != 2 {
		t.Fatalf("head %q len %d, want b and 2", m.Payload, b.Len())
	}
}

func TestBufferReadySignals(t *testing.T) {
	b := NewBuffer(2)
	select {
	case <-b.Ready():
		t.Fatal("ready before a push")
	default:
	}
	b.Push(Message{Topic: "t"})
	select {
	case <-b.Ready():
	case <-time.After(time.Second):
		t.Fatal("no ready signal after a push")
	}
}

func TestCredentialsFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state", "dht22.json")
	if _, err := LoadCredentials(path, nil); err != ErrNoCredentials {
		t.Fatalf("missing file: %v, want ErrNoCredentials", err)
	}
	c := Credentials{Thing: "th-7f3a", Secret: "s3cret", ClaimCode: "K7Q-4MX", Serial: "TH-10-0042", Enrolled: time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)}
	if err := SaveCredentials(path, c); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v; want 0600", st.Mode().Perm(), err)
	}
	if st, _ := os.Stat(filepath.Dir(path)); st.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v, want 0700", st.Mode().Perm())
	}
	got, err := LoadCredentials(path, nil)
	if err != nil || got != c {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	// A file others can read is tightened, with a warning.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	var warned string
	if _, err := LoadCredentials(path, func(s string) { warned = s }); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 || !strings.Contains(warned, "tightened") {
		t.Fatalf("mode %v after load, warning %q", st.Mode().Perm(), warned)
	}
	// Broken files are errors naming the file, never a silent re-enrolment.
	for name, body := range map[string]string{"garbage": "{", "no secret": `{"thing":"x"}`} {
		p := filepath.Join(dir, name)
		_ = os.WriteFile(p, []byte(body), 0o600)
		if _, err := LoadCredentials(p, nil); err == nil || err == ErrNoCredentials || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestSaveCredentialsSyncsDirectory: the rename is followed by an fsync of
// the directory (else a power cut can undo it, and the thing's only copy of
// its secret is gone), and a failing one is an error.
func TestSaveCredentialsSyncsDirectory(t *testing.T) {
	orig := syncDir
	t.Cleanup(func() { syncDir = orig })
	path := filepath.Join(t.TempDir(), "state", "lock.json")
	c := Credentials{Thing: "lock-9", Secret: "s"}
	var synced []string
	syncDir = func(dir string) error {
		if _, err := os.Stat(path); err != nil {
			t.Errorf("directory synced before the rename: %v", err)
		}
		synced = append(synced, dir)
		return orig(dir)
	}
	if err := SaveCredentials(path, c); err != nil {
		t.Fatal(err)
	}
	if len(synced) != 1 || synced[0] != filepath.Dir(path) {
		t.Fatalf("directories synced: %q, want [%s]", synced, filepath.Dir(path))
	}
	syncDir = func(string) error { return errors.New("EIO") }
	if err := SaveCredentials(path, c); err == nil || !strings.Contains(err.Error(), "EIO") {
		t.Fatalf("a failed directory sync: %v, want it reported", err)
	}
}
