package broker_test

import (
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestMosquittoV5QoS1StreamIsDelivered: mosquitto's MQTT v5 clients send
// Receive Maximum 20 in every CONNECT, and plain mochi v2.7.9 honouring it
// stops within a few hundred QoS 1 messages from concurrent publishers
// (Inflight.NextImmediate read-locks twice; docs/design.md). Through Veil,
// which clears the quota at CONNECT, every message arrives.
func TestMosquittoV5QoS1StreamIsDelivered(t *testing.T) {
	sub := needMosquitto(t, "mosquitto_sub")
	pub := needMosquitto(t, "mosquitto_pub")
	host, port, _ := net.SplitHostPort(veil.Addr("mqtt"))
	const each = "3000"
	listen := exec.Command(sub, "-V", "mqttv5", "-h", host, "-p", port, "-i", "an-flow", "-u", "an", "-P", "an-pass",
		"-q", "1", "-t", "things/+/data/#", "-C", "6000", "-W", "60")
	var out strings.Builder
	listen.Stdout = &out
	if err := listen.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if cl, ok := veil.MQTT.Clients.Get("an-flow"); ok && len(cl.State.Subscriptions.GetAll()) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("mosquitto_sub did not subscribe within 10 s")
		}
	}
	var wg sync.WaitGroup
	for _, thing := range []struct{ id, stream string }{{"thermo-1", "temperature"}, {"watch-1", "heart_rate"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if b, err := exec.Command(pub, "-V", "mqttv5", "-h", host, "-p", port, "-i", thing.id, "-u", thing.id, "-P", thing.id+"-secret",
				"-q", "1", "-t", "things/"+thing.id+"/data/"+thing.stream, "-m", `{"v":1}`, "--repeat", each).CombinedOutput(); err != nil {
				t.Errorf("mosquitto_pub %s: %v %s", thing.id, err, b)
			}
		}()
	}
	wg.Wait()
	err := listen.Wait() // -C 6000: exits once all arrived; -W 60 otherwise
	if n := strings.Count(out.String(), "\n"); err != nil || n != 6000 {
		t.Fatalf("mosquitto_sub (v5, Receive Maximum 20) got %d of 6000 QoS 1 messages (%v)", n, err)
	}
}
