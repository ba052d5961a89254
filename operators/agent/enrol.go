package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// Enrolment is what a device says about itself when it enrols.
type Enrolment struct {
	Kind    string   `json:"kind"`              // sensor, actuator, gateway
	Streams []string `json:"streams,omitempty"` // the data streams it publishes
}

// EnrolReply is the broker's answer on the response topic.
type EnrolReply struct {
	OK        bool   `json:"ok"`
	Thing     string `json:"thing"`
	Secret    string `json:"secret"`
	ClaimCode string `json:"claim_code"`
	Error     string `json:"error"`
}

// RejectedError is an enrolment the broker refused (unknown serial, already
// enrolled, too many attempts): retrying with the same credential will not help.
type RejectedError struct {
	Reason string
	// ForNow is a refusal that a wait may lift: "too many attempts", or
	// the factory credential refused at CONNECT, which is how a serial
	// blocked by others' wrong guesses reads (by design the same as a
	// wrong secret).
	ForNow bool
}

func (e *RejectedError) Error() string { return "enrolment rejected: " + e.Reason }

// Retryable reports whether an enrolment refusal is the broker's trouble
// (its metadata store unavailable), worth another attempt, rather than a
// verdict on the device.
func Retryable(reason string) bool { return strings.Contains(reason, "unavailable") }

// EnrolClientID is the client id a device enrols with.
func EnrolClientID(serial string) string { return "enroll-" + serial }

// Enrol runs the enrolment exchange once: connect with the factory
// credential, subscribe to the reply topic, publish the request on
// $enroll/{serial} and wait for the reply with our correlation data.
func Enrol(ctx context.Context, broker *url.URL, tlsCfg *tls.Config, serial, factorySecret string, e Enrolment) (Credentials, error) {
	if serial == "" || factorySecret == "" {
		return Credentials{}, errors.New("enrolment needs the factory serial and secret (config keys serial, factory-secret)")
	}
	conn, err := Dial(ctx, broker, tlsCfg)
	if err != nil {
		return Credentials{}, err
	}
	clientID := EnrolClientID(serial)
	replyPrefix := "$config/replies/" + clientID
	replies := make(chan *paho.Publish, 4)
	cli := paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			select {
			case replies <- pr.Packet:
			default:
			}
			return true, nil
		}},
	})
	ca, err := cli.Connect(ctx, &paho.Connect{
		ClientID: clientID, CleanStart: true, KeepAlive: 30,
		Username: "factory:" + serial, UsernameFlag: true,
		Password: []byte(factorySecret), PasswordFlag: true,
	})
	if err != nil {
		conn.Close()
		if ca != nil && ca.ReasonCode >= 0x80 {
			return Credentials{}, &RejectedError{Reason: fmt.Sprintf("factory credential refused at CONNECT (reason 0x%02x %s)", ca.ReasonCode, reasonString(ca)), ForNow: true}
		}
		return Credentials{}, fmt.Errorf("enrolment connect: %w", err)
	}
	defer func() { _ = cli.Disconnect(&paho.Disconnect{}) }()

	sa, err := cli.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: replyPrefix + "/#", QoS: 1}}})
	if err != nil {
		return Credentials{}, fmt.Errorf("enrolment subscribe %s/#: %w", replyPrefix, err)
	}
	if len(sa.Reasons) != 1 || sa.Reasons[0] >= 0x80 {
		return Credentials{}, fmt.Errorf("enrolment subscribe %s/#: refused % x", replyPrefix, sa.Reasons)
	}

	corr := make([]byte, 16)
	_, _ = rand.Read(corr)
	body, _ := json.Marshal(e)
	pr, err := cli.Publish(ctx, &paho.Publish{
		Topic: "$enroll/" + serial, QoS: 1, Payload: body,
		Properties: &paho.PublishProperties{ResponseTopic: replyPrefix + "/enroll", CorrelationData: corr},
	})
	refused := byte(0)
	if pr != nil && pr.ReasonCode >= 0x80 {
		// The broker refused; its answer on the reply topic says why.
		refused = pr.ReasonCode
		wait, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		ctx = wait
	} else if err != nil {
		return Credentials{}, fmt.Errorf("enrolment publish: %w", err)
	}
	for {
		select {
		case <-ctx.Done():
			if refused == 0x87 {
				return Credentials{}, &RejectedError{Reason: fmt.Sprintf("$enroll/%s not authorized (0x87)", serial)}
			}
			if refused != 0 {
				return Credentials{}, fmt.Errorf("enrolment refused with reason 0x%02x and no answer", refused)
			}
			return Credentials{}, fmt.Errorf("enrolment: no reply: %w", ctx.Err())
		case p := <-replies:
			if p.Properties != nil && len(p.Properties.CorrelationData) > 0 && !bytes.Equal(p.Properties.CorrelationData, corr) {
				continue // an answer to an earlier attempt
			}
			var r EnrolReply
			if err := json.Unmarshal(p.Payload, &r); err != nil {
				return Credentials{}, fmt.Errorf("enrolment reply on %s: %w", p.Topic, err)
			}
			if !r.OK {
				if r.Error == "" {
					r.Error = fmt.Sprintf("no reason given (0x%02x)", refused)
				}
				if Retryable(r.Error) {
					return Credentials{}, fmt.Errorf("enrolment: %s", r.Error)
				}
				return Credentials{}, &RejectedError{Reason: r.Error, ForNow: r.Error == "too many attempts"}
			}
			if r.Thing == "" || r.Secret == "" {
				return Credentials{}, fmt.Errorf("enrolment reply on %s: ok without thing or secret", p.Topic)
			}
			return Credentials{Thing: r.Thing, Secret: r.Secret, ClaimCode: r.ClaimCode, Serial: serial, Enrolled: time.Now().UTC()}, nil
		}
	}
}

func reasonString(ca *paho.Connack) string {
	if ca.Properties != nil {
		return ca.Properties.ReasonString
	}
	return ""
}

// InsecurePlaintextFlag is the option that allows plain MQTT to a broker
// that is not on this machine (--insecure-plaintext, config key
// insecure-plaintext, VEIL_OPERATOR_INSECURE_PLAINTEXT).
const InsecurePlaintextFlag = "--insecure-plaintext"

// CheckBroker refuses a plaintext broker URL (mqtt://, tcp://) whose host
// is not loopback, unless insecure is set: whoever answers on that address
// (or reads the path) learns the thing's secret — and at enrolment the
// factory secret, the new secret and the claim code — and with them may
// publish as the thing or, for a lock, take its commands. It reports
// whether the URL is plaintext to a remote host (allowed by insecure), so
// that the caller can warn. Other schemes are left to Dial.
func CheckBroker(u *url.URL, insecure bool) (plaintextRemote bool, err error) {
	if u == nil {
		return false, errors.New("no broker URL")
	}
	switch u.Scheme {
	case "mqtt", "tcp":
	default:
		return false, nil
	}
	if isLoopback(u.Hostname()) {
		return false, nil
	}
	if !insecure {
		return true, fmt.Errorf("broker %s: plain MQTT to %s, which is not this machine, would send the thing's secret (and at enrolment the factory secret and claim code) unencrypted: use mqtts://%s (with --ca-file for a private CA), or set %s if the network is trusted",
			u.Redacted(), u.Hostname(), net.JoinHostPort(u.Hostname(), "8883"), InsecurePlaintextFlag)
	}
	return true, nil
}

// isLoopback reports whether host is a loopback address, or localhost.
// Names other than localhost are not resolved: what they resolve to may
// change after the check.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Dial opens a network connection to the broker URL: mqtt:// or tcp://
// (port 1883 by default), tls://, ssl:// or mqtts:// (port 8883). Callers
// check a plaintext URL with CheckBroker first (Run and EnsureEnrolled do).
func Dial(ctx context.Context, u *url.URL, tlsCfg *tls.Config) (net.Conn, error) {
	host := u.Host
	var d net.Dialer
	switch u.Scheme {
	case "mqtt", "tcp":
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), "1883")
		}
		c, err := d.DialContext(ctx, "tcp", host)
		if err != nil {
			return nil, fmt.Errorf("connect %s: %w", u.Redacted(), err)
		}
		return c, nil
	case "tls", "ssl", "mqtts":
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), "8883")
		}
		cfg := &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12}
		if tlsCfg != nil {
			cfg = tlsCfg.Clone()
			if cfg.ServerName == "" {
				cfg.ServerName = u.Hostname()
			}
		}
		td := tls.Dialer{NetDialer: &d, Config: cfg}
		c, err := td.DialContext(ctx, "tcp", host)
		if err != nil {
			return nil, fmt.Errorf("connect %s: %w", u.Redacted(), err)
		}
		return c, nil
	}
	return nil, fmt.Errorf("broker %s: scheme must be mqtt, tcp, tls, ssl or mqtts", u.Redacted())
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
