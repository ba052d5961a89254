package broker_test

import (
	"context"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestMosquittoV5QoS1StreamIsDelivered: mosquitto's MQTT v5 clients send
// Receive Maximum 20 in every CONNECT, and plain mochi v2.7.9 honouring it
// stops within a few hundred QoS 1 messages from concurrent publishers
// (Inflight.NextImmediate read-locks twice, and a released message's PUBACK
// returns no quota; docs/design.md). Through Veil, whose mochi keeps the
// send quota under one lock (third_party/mochi patch 0003) and honours the
// Receive Maximum, every message arrives.
func TestMosquittoV5QoS1StreamIsDelivered(t *testing.T) {
	sub := needMosquitto(t, "mosquitto_sub")
	pub := needMosquitto(t, "mosquitto_pub")
	host, port, _ := net.SplitHostPort(veil.Addr("mqtt"))
	const each = 3000
	things := []struct{ id, stream string }{{"thermo-1", "temperature"}, {"watch-1", "heart_rate"}}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// -R: no retained message counts; -v: each line names its topic.
	listen := exec.CommandContext(ctx, sub, "-V", "mqttv5", "-h", host, "-p", port, "-i", "an-flow", "-u", "an", "-P", "an-pass",
		"-q", "1", "-R", "-v", "-t", "things/+/data/#", "-C", "6000", "-W", "60")
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
	errs := make(chan string, len(things))
	for _, th := range things {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if b, err := exec.CommandContext(ctx, pub, "-V", "mqttv5", "-h", host, "-p", port, "-i", th.id, "-u", th.id, "-P", th.id+"-secret",
				"-q", "1", "-t", "things/"+th.id+"/data/"+th.stream, "-m", `{"v":1}`, "--repeat", strconv.Itoa(each)).CombinedOutput(); err != nil {
				errs <- th.id + ": " + err.Error() + " " + string(b)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("mosquitto_pub %s", e)
	}
	err := listen.Wait() // -C 6000: exits once all arrived; -W 60 otherwise
	for _, th := range things {
		topic := "things/" + th.id + "/data/" + th.stream + ` {"v":1}` + "\n"
		if n := strings.Count(out.String(), topic); n != each {
			t.Errorf("mosquitto_sub (v5, Receive Maximum 20) got %d of %d QoS 1 messages from %s (%v)", n, each, th.id, err)
		}
	}
}
