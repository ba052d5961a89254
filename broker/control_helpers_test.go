package broker_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
)

// reply is the control plane's answer to one config publish.
type reply struct {
	Topic     string         `json:"topic"`
	OK        bool           `json:"ok"`
	Error     string         `json:"error"`
	Warnings  []string       `json:"warnings"`
	Thing     string         `json:"thing"`
	Secret    string         `json:"secret"`
	ClaimCode string         `json:"claim_code"`
	Inv       string         `json:"invitation"`
	Records   []auditRecord  `json:"records"`
	Raw       map[string]any `json:"-"`
	puback    byte
}

type auditRecord struct {
	Who     string `json:"who"`
	Thing   string `json:"thing"`
	Stream  string `json:"stream"`
	Action  string `json:"action"`
	Purpose string `json:"purpose"`
	Effect  string `json:"effect"`
	Rule    string `json:"rule"`
	Policy  string `json:"policy"`
	Count   int64  `json:"count"`
}

// cfgClient is a v5 client that asks the control plane and reads its replies.
type cfgClient struct {
	t      testing.TB
	id     string
	user   string
	pc     *paho.Client
	msgs   chan *paho.Publish
	corr   atomic.Int64
	prefix string
}

var clientSeq atomic.Int64

// dialCfg connects user (with a fresh client id) to addr from local address
// from ("" = any) and subscribes to its replies.
func dialCfg(t testing.TB, addr, from, user, password, clientID string) (*cfgClient, error) {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if clientID == "" {
		clientID = fmt.Sprintf("%s-cfg-%d", user, clientSeq.Add(1))
	}
	c := &cfgClient{t: t, id: clientID, user: user, msgs: make(chan *paho.Publish, 1000)}
	c.prefix = "$config/replies/" + clientID
	c.pc = paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) { c.msgs <- pr.Packet; return true, nil }}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.pc.Connect(ctx, &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: true, Username: user, UsernameFlag: true,
		Password: []byte(password), PasswordFlag: true}); err != nil {
		conn.Close()
		return nil, err
	}
	t.Cleanup(func() { _ = c.pc.Disconnect(&paho.Disconnect{}) })
	sa, err := c.pc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: c.prefix + "/#", QoS: 1}}})
	if err != nil || sa.Reasons[0] > 2 {
		t.Fatalf("%s: subscribing to its replies: %v", user, err)
	}
	return c, nil
}

func mustCfg(t testing.TB, addr, user, password string) *cfgClient {
	t.Helper()
	c, err := dialCfg(t, addr, "", user, password, "")
	if err != nil {
		t.Fatalf("connect %s: %v", user, err)
	}
	return c
}

// ask publishes payload on topic (retained) as a v5 request and returns the reply.
func (c *cfgClient) ask(topic, payload string) reply {
	c.t.Helper()
	corr := fmt.Sprint(c.corr.Add(1))
	rt := c.prefix + "/r"
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	pr, err := c.pc.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Retain: true, Payload: []byte(payload),
		Properties: &paho.PublishProperties{ResponseTopic: rt, CorrelationData: []byte(corr)}})
	var code byte
	if pr != nil {
		code = pr.ReasonCode
	} else if err != nil {
		c.t.Fatalf("publish %s: %v", topic, err)
	}
	deadline := time.After(15 * time.Second)
	for {
		select {
		case m := <-c.msgs:
			if m.Topic != rt || string(m.Properties.CorrelationData) != corr {
				continue
			}
			var r reply
			if err := json.Unmarshal(m.Payload, &r); err != nil {
				c.t.Fatalf("reply %s: %v", m.Payload, err)
			}
			_ = json.Unmarshal(m.Payload, &r.Raw)
			r.puback = code
			return r
		case <-deadline:
			c.t.Fatalf("no reply to %s", topic)
		}
	}
}

// mustOK asks and fails unless the answer is ok.
func (c *cfgClient) mustOK(topic, payload string) reply {
	c.t.Helper()
	r := c.ask(topic, payload)
	if !r.OK {
		c.t.Fatalf("%s %s: refused: %s", c.id, topic, r.Error)
	}
	return r
}

// mustRefuse asks and fails unless the answer is a refusal containing want.
func (c *cfgClient) mustRefuse(topic, payload, want string) reply {
	c.t.Helper()
	r := c.ask(topic, payload)
	if r.OK || !strings.Contains(r.Error, want) {
		c.t.Fatalf("%s %s: got ok=%v error=%q, want a refusal with %q", c.id, topic, r.OK, r.Error, want)
	}
	return r
}

// subscribe subscribes and returns the reason codes.
func (c *cfgClient) subscribe(filters ...string) []byte {
	c.t.Helper()
	s := &paho.Subscribe{}
	for _, f := range filters {
		s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: 1})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sa, err := c.pc.Subscribe(ctx, s)
	if sa != nil {
		return sa.Reasons
	}
	c.t.Fatalf("subscribe %v: %v", filters, err)
	return nil
}

// publish sends at QoS 1 (not a config request) and returns the PUBACK code.
func (c *cfgClient) publish(topic, payload string) byte {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pr, err := c.pc.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)})
	if pr != nil {
		return pr.ReasonCode
	}
	c.t.Fatalf("publish %s: %v", topic, err)
	return 0
}

// invitationTo waits for c's retained invitation to thing (the bootstrap
// file's pending hand-over, offered at start) and returns its id.
func (c *cfgClient) invitationTo(thing string) string {
	c.t.Helper()
	prefix := "$config/invitations/" + c.user + "/"
	c.subscribe(prefix + "#")
	deadline := time.After(5 * time.Second)
	for {
		select {
		case m := <-c.msgs:
			if strings.HasPrefix(m.Topic, prefix) && strings.Contains(string(m.Payload), `"thing":"`+thing+`"`) {
				return strings.TrimPrefix(m.Topic, prefix)
			}
		case <-deadline:
			c.t.Fatalf("no invitation to %s for %s", thing, c.id)
			return ""
		}
	}
}

// collect gathers the messages (other than replies) arriving within d.
func (c *cfgClient) collect(d time.Duration) map[string]string {
	got := map[string]string{}
	deadline := time.After(d)
	for {
		select {
		case m := <-c.msgs:
			if !strings.HasPrefix(m.Topic, c.prefix) {
				got[m.Topic] = string(m.Payload)
			}
		case <-deadline:
			return got
		}
	}
}

// waitFor returns the first message on topic within d.
func (c *cfgClient) waitFor(topic string, d time.Duration) (*paho.Publish, bool) {
	deadline := time.After(d)
	for {
		select {
		case m := <-c.msgs:
			if m.Topic == topic {
				return m, true
			}
		case <-deadline:
			return nil, false
		}
	}
}

// enrollDevice runs a device's self-enrolment against addr and returns the reply.
func enrollDevice(t testing.TB, addr, from, serial, secret, payload string) (reply, error) {
	t.Helper()
	d, err := dialCfg(t, addr, from, "factory:"+serial, secret, "enroll-"+serial)
	if err != nil {
		return reply{}, err
	}
	defer func() {
		// Gone before the next connection with the same client id, so that
		// no session take-over races the next request's reply.
		_ = d.pc.Disconnect(&paho.Disconnect{})
		<-d.pc.Done()
		if veil != nil && addr == veil.Addr("mqtt") {
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				// Mochi removes a clean session's client by id after it has
				// closed: a new connection with that id before then can be
				// removed with it, and its messages dropped.
				if _, ok := veil.MQTT.Clients.Get("enroll-" + serial); !ok {
					break
				}
			}
		}
	}()
	return d.ask("$enroll/"+serial, payload), nil
}

// conn311 is a minimal MQTT 3.1.1 client (mochi's packet codec over a raw
// connection): enough to publish a config document and read the answer on
// $config/replies/{clientId} from the same session.
type conn311 struct {
	t  testing.TB
	id string
	net.Conn
	r *bufio.Reader
}

func dial311(t testing.TB, addr, user, pass string) *conn311 {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := &conn311{t: t, id: fmt.Sprintf("%s-311-%d", user, clientSeq.Add(1)), Conn: nc, r: bufio.NewReader(nc)}
	_ = nc.SetDeadline(time.Now().Add(15 * time.Second))
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: c.id,
			UsernameFlag: true, Username: []byte(user), PasswordFlag: true, Password: []byte(pass)}}
	c.write(&pk, (*packets.Packet).ConnectEncode)
	if typ, body := c.read(); typ != packets.Connack || len(body) < 2 || body[1] != 0 {
		t.Fatalf("3.1.1 CONNACK type %d body % x", typ, body)
	}
	return c
}

func (c *conn311) write(pk *packets.Packet, enc func(*packets.Packet, *bytes.Buffer) error) {
	c.t.Helper()
	var buf bytes.Buffer
	if err := enc(pk, &buf); err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.Write(buf.Bytes()); err != nil {
		c.t.Fatal(err)
	}
}

func (c *conn311) read() (byte, []byte) {
	c.t.Helper()
	h, err := c.r.ReadByte()
	if err != nil {
		c.t.Fatalf("3.1.1 read: %v", err)
	}
	n, _, err := packets.DecodeLength(c.r)
	if err != nil {
		c.t.Fatal(err)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		c.t.Fatal(err)
	}
	return h >> 4, body
}

func (c *conn311) subscribe(filter string) {
	c.t.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: 4, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: filter, Qos: 0}}}
	c.write(&pk, (*packets.Packet).SubscribeEncode)
	if typ, body := c.read(); typ != packets.Suback || len(body) < 3 || body[2] > 2 {
		c.t.Fatalf("3.1.1 SUBACK type %d body % x", typ, body)
	}
}

func (c *conn311) publishRetained(topic, payload string) {
	c.t.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true}, ProtocolVersion: 4,
		TopicName: topic, Payload: []byte(payload)}
	c.write(&pk, (*packets.Packet).PublishEncode)
}

// next returns the payload of the next PUBLISH (QoS 0).
func (c *conn311) next() []byte {
	c.t.Helper()
	for {
		typ, body := c.read()
		if typ != packets.Publish || len(body) < 2 {
			continue
		}
		n := int(body[0])<<8 | int(body[1])
		return body[2+n:]
	}
}
