package hooks

import (
	"testing"
	"time"

	"github.com/alexedwards/argon2id"
)

// twoThings returns credentials for thing:a and thing:b, both "s3cret",
// hashed cheaply.
func twoThings(t *testing.T) *Credentials {
	t.Helper()
	c := NewCredentials()
	hash, err := argon2id.CreateHash("s3cret", &argon2id.Params{Memory: 1024, Iterations: 1, Parallelism: 1, SaltLength: 16, KeyLength: 32})
	if err != nil {
		t.Fatal(err)
	}
	c.Set("thing:a", hash)
	c.Set("thing:b", hash)
	return c
}

// TestVerificationsWaitForASlot: with every argon2id slot taken, a
// verification that needs one waits, and runs once a slot frees; one
// answered from the verified cache does not wait.
func TestVerificationsWaitForASlot(t *testing.T) {
	c := twoThings(t)
	if !c.Verify("thing:a", []byte("s3cret")) {
		t.Fatal("thing:a refused")
	}
	for range cap(c.hashing) {
		c.hashing <- struct{}{}
	}
	if !c.Verify("thing:a", []byte("s3cret")) {
		t.Fatal("thing:a refused from the verified cache while the slots are taken")
	}
	done := make(chan bool)
	go func() { done <- c.Verify("thing:b", []byte("s3cret")) }()
	select {
	case <-done:
		t.Fatal("a verification ran with every slot taken")
	case <-time.After(100 * time.Millisecond):
	}
	<-c.hashing
	select {
	case ok := <-done:
		if !ok {
			t.Fatal("thing:b refused")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the verification did not run once a slot freed")
	}
}

// TestLoginGivesUpWhenBusy: a check that cannot get a slot within its wait
// reports busy, not a wrong secret; a remembered one does not wait.
func TestLoginGivesUpWhenBusy(t *testing.T) {
	c := twoThings(t)
	if ok, busy := c.Check("thing:a", []byte("s3cret"), time.Second); !ok || busy {
		t.Fatalf("thing:a with a free slot: ok %v busy %v", ok, busy)
	}
	for range cap(c.hashing) {
		c.hashing <- struct{}{}
	}
	if ok, busy := c.Check("thing:b", []byte("s3cret"), 50*time.Millisecond); ok || !busy {
		t.Fatalf("thing:b with every slot taken: ok %v busy %v, want busy", ok, busy)
	}
	if ok, busy := c.Check("thing:a", []byte("s3cret"), 50*time.Millisecond); !ok || busy {
		t.Fatalf("thing:a from the verified cache with every slot taken: ok %v busy %v", ok, busy)
	}
	if ok, busy := c.Check("thing:a", []byte("wrong"), 50*time.Millisecond); ok || !busy {
		t.Fatalf("a wrong secret with every slot taken: ok %v busy %v, want busy (not judged)", ok, busy)
	}
}
