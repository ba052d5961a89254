package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"sort"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/spf13/cobra"

	"github.com/veil-iot/veil/cmd/internal/flagsource"
)

// ctlOptions are the connection flags of every `veil ctl` command; each can
// also come from VEIL_<FLAG> (VEIL_BROKER, VEIL_USER, VEIL_PASSWORD, …).
type ctlOptions struct {
	broker   string
	user     string
	password string
	clientID string
	tlsCA    string
	timeout  time.Duration
	out      io.Writer
}

// errRefused marks an answer with ok:false (already printed): exit code 1.
var errRefused = errors.New("refused by the broker")

// ctlCmd is the owners' MQTT client for the control plane (docs/control-plane.md).
func ctlCmd() *cobra.Command {
	o := &ctlOptions{}
	var cmd *cobra.Command
	cmd = &cobra.Command{
		Use:           "ctl",
		Short:         "Manage your policies, things, relations and invitations over MQTT",
		SilenceUsage:  true,
		SilenceErrors: true,
		Long: `veil ctl talks to a running Veil over MQTT v5 as one user and prints the
broker's answers as JSON. It exits with 1 when the broker answers ok:false.
Every flag can also be set by VEIL_<FLAG> (VEIL_BROKER, VEIL_USER, VEIL_PASSWORD,
VEIL_CLIENT_ID, VEIL_TLS_CA, VEIL_TIMEOUT).`,
		PersistentPreRunE: func(c *cobra.Command, _ []string) error {
			if err := flagsource.Apply(cmd.PersistentFlags(), "VEIL_", ""); err != nil {
				return usageError{err}
			}
			if o.user == "" {
				return usageError{errors.New("--user (or VEIL_USER) is required")}
			}
			o.out = c.OutOrStdout()
			return nil
		},
	}
	f := cmd.PersistentFlags()
	f.StringVar(&o.broker, "broker", "tcp://127.0.0.1:1883", "broker URL: tcp://host:port, mqtt://…, ssl://… or mqtts://…")
	f.StringVar(&o.user, "user", "", "your user name")
	f.StringVar(&o.password, "password", "", "your password or bearer token")
	f.StringVar(&o.clientID, "client-id", "", "MQTT client id (default ctl-{user}-{random})")
	f.StringVar(&o.tlsCA, "tls-ca", "", "PEM file of the CA that signed the broker's certificate (TLS)")
	f.DurationVar(&o.timeout, "timeout", 10*time.Second, "how long to wait for the broker")

	policy := &cobra.Command{Use: "policy", Short: "Your privacy policies"}
	var file string
	apply := &cobra.Command{
		Use:   "apply -f FILE|-",
		Short: "Store a policy document (JSON); its id names it",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			var data []byte
			var err error
			if file == "-" {
				data, err = io.ReadAll(c.InOrStdin())
			} else {
				data, err = os.ReadFile(file)
			}
			if err != nil {
				return fmt.Errorf("-f: %w", err)
			}
			var head struct {
				ID string `json:"id"`
			}
			if err := json.Unmarshal(data, &head); err != nil || head.ID == "" {
				return usageError{fmt.Errorf("-f %s: a JSON policy document with an id is required", file)}
			}
			return o.request("$config/users/"+o.user+"/policies/"+head.ID, bytes.TrimSpace(data))
		},
	}
	apply.Flags().StringVarP(&file, "file", "f", "", "policy document (JSON), - for stdin")
	_ = apply.MarkFlagRequired("file")
	policy.AddCommand(apply,
		&cobra.Command{Use: "ls", Short: "List your policies", Args: cobra.NoArgs,
			RunE: func(*cobra.Command, []string) error { return o.list("$config/users/" + o.user + "/policies/+") }},
		&cobra.Command{Use: "rm ID", Short: "Delete one of your policies", Args: cobra.ExactArgs(1),
			RunE: func(_ *cobra.Command, a []string) error {
				return o.request("$config/users/"+o.user+"/policies/"+a[0], nil)
			}},
	)

	thing := &cobra.Command{Use: "thing", Short: "Things you may configure"}
	thing.AddCommand(
		&cobra.Command{Use: "show THING", Short: "Show a thing's document and relations", Args: cobra.ExactArgs(1),
			RunE: func(_ *cobra.Command, a []string) error {
				return o.list("$config/things/"+a[0], "$config/things/"+a[0]+"/relations/+")
			}},
		&cobra.Command{Use: "set THING JSON", Short: "Store a thing's document (kind, streams, attributes, place)", Args: cobra.ExactArgs(2),
			RunE: func(_ *cobra.Command, a []string) error { return o.request("$config/things/"+a[0], []byte(a[1])) }},
		&cobra.Command{Use: "claim THING CODE", Short: "Claim a newly enrolled thing with its claim code (certified installers)", Args: cobra.ExactArgs(2),
			RunE: func(_ *cobra.Command, a []string) error {
				body, _ := json.Marshal(map[string]string{"code": a[1]})
				return o.request("$config/things/"+a[0]+"/claim", body)
			}},
	)

	relation := &cobra.Command{Use: "relation", Short: "Invite people to a thing or place, and revoke them"}
	var as, from, until string
	var onPlace bool
	object := func(id string) string {
		if onPlace {
			return "$config/places/" + id
		}
		return "$config/things/" + id
	}
	invite := &cobra.Command{
		Use: "invite THING USER --as owner|co_owner|visitor [--from T] [--until T]", Short: "Invite a user (pending until they accept)",
		Args: cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, a []string) error {
			doc := map[string]string{"relation": as}
			if from != "" {
				doc["valid_from"] = from
			}
			if until != "" {
				doc["valid_until"] = until
			}
			body, _ := json.Marshal(doc)
			return o.request(object(a[0])+"/relations/"+a[1], body)
		},
	}
	invite.Flags().StringVar(&as, "as", "", "relation: owner, co_owner or visitor")
	invite.Flags().StringVar(&from, "from", "", "start of the window (RFC 3339)")
	invite.Flags().StringVar(&until, "until", "", "end of the window (RFC 3339; required for a visitor)")
	_ = invite.MarkFlagRequired("as")
	revoke := &cobra.Command{Use: "revoke THING USER", Short: "End every relation of a user on a thing or place", Args: cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, a []string) error { return o.request(object(a[0])+"/relations/"+a[1], nil) }}
	for _, c := range []*cobra.Command{invite, revoke} {
		c.Flags().BoolVar(&onPlace, "place", false, "THING names a place")
	}
	relation.AddCommand(invite, revoke)

	invitation := &cobra.Command{Use: "invitation", Short: "Invitations to you"}
	answer := func(accept bool) func(*cobra.Command, []string) error {
		return func(_ *cobra.Command, a []string) error {
			body, _ := json.Marshal(map[string]bool{"accept": accept})
			return o.request("$config/invitations/"+o.user+"/"+a[0]+"/answer", body)
		}
	}
	invitation.AddCommand(
		&cobra.Command{Use: "ls", Short: "List your pending invitations", Args: cobra.NoArgs,
			RunE: func(*cobra.Command, []string) error { return o.list("$config/invitations/" + o.user + "/+") }},
		&cobra.Command{Use: "accept ID", Short: "Accept an invitation", Args: cobra.ExactArgs(1), RunE: answer(true)},
		&cobra.Command{Use: "decline ID", Short: "Decline an invitation", Args: cobra.ExactArgs(1), RunE: answer(false)},
	)

	var since, auditUntil string
	audit := &cobra.Command{
		Use: "audit [--since 1h|T] [--until T]", Short: "Who accessed your things: the audit trail for a time range", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			q := map[string]string{"since": since}
			if auditUntil != "" {
				q["until"] = auditUntil
			}
			body, _ := json.Marshal(q)
			return o.request("$config/users/"+o.user+"/audit/query", body)
		},
	}
	audit.Flags().StringVar(&since, "since", "1h", "start: a duration before now (1h, 30m) or an RFC 3339 time")
	audit.Flags().StringVar(&auditUntil, "until", "", "end: a duration before now or an RFC 3339 time (default now)")

	cmd.AddCommand(policy, thing, relation, invitation, audit)
	return cmd
}

// session is one connection to the broker.
type session struct {
	o    *ctlOptions
	pc   *paho.Client
	id   string
	msgs chan *paho.Publish
}

func (o *ctlOptions) dial(ctx context.Context) (*session, error) {
	u, err := url.Parse(o.broker)
	if err != nil || u.Host == "" {
		return nil, usageError{fmt.Errorf("--broker %q: want tcp://host:port or mqtts://host:port", o.broker)}
	}
	var conn net.Conn
	d := net.Dialer{Timeout: o.timeout}
	switch u.Scheme {
	case "tcp", "mqtt":
		conn, err = d.DialContext(ctx, "tcp", u.Host)
	case "ssl", "tls", "mqtts":
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: u.Hostname()}
		if o.tlsCA != "" {
			pem, rerr := os.ReadFile(o.tlsCA)
			if rerr != nil {
				return nil, fmt.Errorf("--tls-ca: %w", rerr)
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--tls-ca %s: no PEM certificate", o.tlsCA)
			}
		}
		conn, err = (&tls.Dialer{NetDialer: &d, Config: cfg}).DialContext(ctx, "tcp", u.Host)
	default:
		return nil, usageError{fmt.Errorf("--broker %q: unknown scheme %q", o.broker, u.Scheme)}
	}
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", u.Host, err)
	}
	id := o.clientID
	if id == "" {
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		id = "ctl-" + o.user + "-" + hex.EncodeToString(b)
	}
	s := &session{o: o, id: id, msgs: make(chan *paho.Publish, 1024)}
	s.pc = paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) {
			select {
			case s.msgs <- pr.Packet:
			default:
			}
			return true, nil
		}}})
	ca, err := s.pc.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true, Username: o.user, UsernameFlag: true,
		Password: []byte(o.password), PasswordFlag: o.password != ""})
	if err != nil {
		conn.Close()
		if ca != nil && ca.ReasonCode != 0 {
			return nil, fmt.Errorf("the broker refused the connection: %s (0x%02x)", ca.Properties.ReasonString, ca.ReasonCode)
		}
		return nil, fmt.Errorf("connecting as %s: %w", o.user, err)
	}
	return s, nil
}

func (s *session) close() { _ = s.pc.Disconnect(&paho.Disconnect{}) }

// request publishes payload (retained; nil deletes) on topic as a v5
// request, prints the answer and returns errRefused on ok:false.
func (o *ctlOptions) request(topic string, payload []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	s, err := o.dial(ctx)
	if err != nil {
		return err
	}
	defer s.close()
	replies := "$config/replies/" + s.id
	if sa, err := s.pc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: replies + "/#", QoS: 1}}}); err != nil || sa.Reasons[0] > 2 {
		return fmt.Errorf("subscribing to the replies: %v", err)
	}
	corr := make([]byte, 8)
	_, _ = rand.Read(corr)
	rt := replies + "/ctl"
	// A refusal comes with an error reason code in the PUBACK (pr != nil);
	// the answer on the response topic says why.
	if pr, err := s.pc.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Retain: true, Payload: payload,
		Properties: &paho.PublishProperties{ResponseTopic: rt, CorrelationData: corr}}); err != nil && pr == nil {
		return fmt.Errorf("publishing %s: %w", topic, err)
	}
	for {
		select {
		case m := <-s.msgs:
			if m.Topic != rt || !bytes.Equal(m.Properties.CorrelationData, corr) {
				continue
			}
			var ans map[string]any
			if err := json.Unmarshal(m.Payload, &ans); err != nil {
				return fmt.Errorf("unreadable answer: %s", m.Payload)
			}
			printJSON(o.out, ans)
			if ok, _ := ans["ok"].(bool); !ok {
				return errRefused
			}
			return nil
		case <-ctx.Done():
			return fmt.Errorf("no answer to %s within %s", topic, o.timeout)
		}
	}
}

// list subscribes to filters and prints the retained documents that arrive
// (those you may see), as one JSON object keyed by topic.
func (o *ctlOptions) list(filters ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	s, err := o.dial(ctx)
	if err != nil {
		return err
	}
	defer s.close()
	sub := &paho.Subscribe{}
	for _, f := range filters {
		sub.Subscriptions = append(sub.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: 1})
	}
	sa, err := s.pc.Subscribe(ctx, sub)
	if sa == nil {
		return fmt.Errorf("subscribing: %w", err)
	}
	for i, code := range sa.Reasons {
		if code > 2 {
			printJSON(o.out, map[string]any{"topic": filters[i], "ok": false, "error": "not authorized"})
			return errRefused
		}
	}
	out := map[string]any{}
	quiet := 700 * time.Millisecond
	for {
		select {
		case m := <-s.msgs:
			var doc any
			if json.Unmarshal(m.Payload, &doc) != nil {
				doc = string(m.Payload)
			}
			out[m.Topic] = doc
			continue
		case <-time.After(quiet):
		case <-ctx.Done():
		}
		break
	}
	keys := make([]string, 0, len(out))
	for k := range out {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	ordered := make([]map[string]any, 0, len(keys))
	for _, k := range keys {
		ordered = append(ordered, map[string]any{"topic": k, "document": out[k]})
	}
	printJSON(o.out, ordered)
	return nil
}

func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
