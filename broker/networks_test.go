package broker_test

import (
	"fmt"
	"testing"
)

// TestKnownNetworksSurviveRestart: after a restart, a stranger's guesses
// at An's password lock her name out only for networks she has not logged
// in from: An, from the network she used before the restart, still logs
// in. (The networks were in memory only: a restart left every name open to
// being locked out by 20 guesses.)
func TestKnownNetworksSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	b := startOwn(t, dir, "")
	if _, err := dialCfg(t, b.Addr("mqtt"), "127.0.0.1", "an", "an-pass", ""); err != nil {
		t.Fatalf("an's login before the restart: %v", err)
	}
	b.Close()

	b = startOwn(t, dir, "")
	defer b.Close()
	addr := b.Addr("mqtt")
	for i := range 21 {
		if _, err := dialCfg(t, addr, fmt.Sprintf("127.0.%d.1", 10+i), "an", fmt.Sprintf("guess-%d", i), ""); err == nil {
			t.Fatalf("wrong guess %d accepted", i)
		}
	}
	if _, err := dialCfg(t, addr, "127.0.9.1", "an", "an-pass", ""); err == nil {
		t.Fatal("after 21 guesses, an's right password from a network she never used was still checked (the name limiter did not engage)")
	}
	if _, err := dialCfg(t, addr, "127.0.0.1", "an", "an-pass", ""); err != nil {
		t.Errorf("an, from the network she logged in from before the restart, is locked out by a stranger's guesses: %v", err)
	}
}
