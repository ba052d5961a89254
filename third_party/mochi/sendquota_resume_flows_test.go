// SPDX-License-Identifier: MIT

package mqtt

import (
	"fmt"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// msgKey is message i of publisher n.
type msgKey struct{ n, i int }

// oldAct is what a session's old connection does with a PUBLISH it gets.
type oldAct byte

const (
	oldIgnores   oldAct = iota // nothing: as if lost on the way (it stays unacknowledged)
	oldAcks                    // QoS 1: delivers it and sends its PUBACK
	oldRecs                    // QoS 2: delivers it and sends its PUBREC, but never the PUBCOMP
	oldCompletes               // QoS 2: delivers it, sends its PUBREC, and the PUBCOMP for its PUBREL
)

var oldActNames = [...]string{"ignores", "acks", "PUBRECs only", "completes"}

// flowSession is the subscribing client's side of its session, which it
// keeps across its connections as MQTT has it keep it (MQTT 5 §4.1, §4.3.3
// method B): the QoS 2 packet ids it has sent PUBREC for and not yet
// got the PUBREL of (a PUBLISH with one of them is a resend, not delivered
// again), and what it has delivered to its application, once each.
type flowSession struct {
	t         *testing.T
	qos       byte
	awaiting  map[uint16]msgKey // QoS 2: PUBREC sent, PUBREL not yet got
	delivered map[msgKey]int
}

func newFlowSession(t *testing.T, qos byte) *flowSession {
	return &flowSession{t: t, qos: qos, awaiting: map[uint16]msgKey{}, delivered: map[msgKey]int{}}
}

// deliver hands message k to the application: at QoS 2 exactly once.
func (f *flowSession) deliver(conn string, k msgKey) {
	f.delivered[k]++
	if f.qos == 2 && f.delivered[k] > 1 {
		f.t.Errorf("%s: publisher %d's message %d delivered %d times at QoS 2", conn, k.n, k.i, f.delivered[k])
	}
}

// flowCase is a session taken over while publishers publish: each
// connection's protocol version and Receive Maximum (0: none; always none
// at version 4), the QoS of the subscription and of the messages, and
// what the old connection does with what it gets, one of acts at random.
type flowCase struct {
	qos                    byte
	oldVersion, newVersion byte
	oldMax, newMax         uint16
	acts                   []oldAct
}

func (c flowCase) String() string {
	acts := ""
	for n, a := range c.acts {
		if n > 0 {
			acts += " or "
		}
		acts += oldActNames[a]
	}
	return fmt.Sprintf("qos %d, v%d receive maximum %d then v%d receive maximum %d, old %s", c.qos, c.oldVersion, c.oldMax, c.newVersion, c.newMax, acts)
}

// TestSessionTakeoverMidFlow: TestSendQuotaSessionTakeoverWhilePublishing
// for what it does not cover: an old connection with no Receive Maximum;
// QoS 2 deliveries taken over mid-flow, some unacknowledged (resent with
// DUP), some PUBRECed (the new connection gets their PUBREL again, never
// their PUBLISH once the old one got their PUBREL [MQTT-4.4.0-1]), some
// completed; MQTT 3.1.1 clients, which set no Receive Maximum, and a
// session taken over from one protocol version by the other. Every message
// of every publisher is delivered to the subscriber's application once
// (QoS 2), or at least once, twice only if the old connection acknowledged
// it and the new one got it again with DUP (QoS 1); each connection gets a
// publisher's messages in its order; the new connection gets its CONNACK
// first; each connection's own Receive Maximum bounds the PUBLISH packets
// it has not completed, a PUBREC not ending one (its PUBREL holds the unit
// until the PUBCOMP); and the session ends with nothing in flight and its
// send quota whole.
func TestSessionTakeoverMidFlow(t *testing.T) {
	q1 := []oldAct{oldIgnores, oldAcks}
	q2 := []oldAct{oldIgnores, oldRecs, oldCompletes}
	for _, c := range []flowCase{
		// 1. The old connection with no Receive Maximum, then one; and the reverse.
		{qos: 1, oldVersion: 5, newVersion: 5, oldMax: 0, newMax: 3, acts: []oldAct{oldIgnores}},
		{qos: 1, oldVersion: 5, newVersion: 5, oldMax: 0, newMax: 3, acts: q1},
		{qos: 1, oldVersion: 5, newVersion: 5, oldMax: 3, newMax: 0, acts: q1},
		// 2. QoS 2 mid-flow.
		{qos: 2, oldVersion: 5, newVersion: 5, oldMax: 3, newMax: 5, acts: q2},
		{qos: 2, oldVersion: 5, newVersion: 5, oldMax: 5, newMax: 3, acts: q2},
		{qos: 2, oldVersion: 5, newVersion: 5, oldMax: 5, newMax: 2, acts: []oldAct{oldRecs}},
		{qos: 2, oldVersion: 5, newVersion: 5, oldMax: 3, newMax: 3, acts: []oldAct{oldIgnores}},
		{qos: 2, oldVersion: 5, newVersion: 5, oldMax: 3, newMax: 0, acts: q2},
		{qos: 2, oldVersion: 5, newVersion: 5, oldMax: 0, newMax: 3, acts: q2},
		// 3. MQTT 3.1.1, and a session going from one version to the other.
		{qos: 1, oldVersion: 4, newVersion: 4, acts: []oldAct{oldIgnores}},
		{qos: 1, oldVersion: 4, newVersion: 4, acts: q1},
		{qos: 2, oldVersion: 4, newVersion: 4, acts: q2},
		{qos: 2, oldVersion: 4, newVersion: 5, newMax: 3, acts: q2},
		{qos: 1, oldVersion: 5, newVersion: 4, oldMax: 3, acts: q1},
	} {
		c := c
		t.Run(c.String(), func(t *testing.T) { testSessionTakeoverMidFlow(t, c) })
	}
}

func testSessionTakeoverMidFlow(t *testing.T, c flowCase) {
	const publishers, each, before = 4, 100, 5 // before: messages each publishes before the takeover starts
	s, addr := netServer(t)
	log := newEventLog()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("event log:\n%s", log)
		}
	})
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	sess := newFlowSession(t, c.qos)
	// A version 4 session outlives its connection if it is not clean; a
	// version 5 one by its expiry.
	old, _ := dialNetPeerVersion(t, s, addr, "old", "sub", c.oldVersion, c.oldVersion == 5, c.oldMax, 600, log)
	old.subscribeQos(t, "t/+", c.qos)

	// The old connection, until the takeover closes it. What it records is
	// read once oldDone is closed.
	oldSaw := map[msgKey]bool{}        // got a PUBLISH of it
	oldAcked := map[msgKey]bool{}      // QoS 1: delivered and PUBACKed
	oldRel := map[uint16]bool{}        // QoS 2: got the PUBREL, sent no PUBCOMP
	oldComped := map[uint16]bool{}     // QoS 2: sent the PUBCOMP
	oldOpen := map[uint16]bool{}       // got a PUBLISH, sent no PUBACK or PUBCOMP
	actOf := map[uint16]oldAct{}       // by packet id
	oldLast := make([]int, publishers) // the last message of each publisher it got
	for n := range oldLast {
		oldLast[n] = -1
	}
	oldTarget := int(c.oldMax) // PUBLISH packets it gets before the takeover may start
	if oldTarget == 0 {
		oldTarget = publishers * before
	}
	oldGot := 0
	oldEnough := make(chan struct{})
	oldDone := make(chan struct{})
	oldRng := rand.New(rand.NewSource(rng.Int63()))
	go func() {
		defer close(oldDone)
		for pk := range old.wire {
			switch pk.FixedHeader.Type {
			case packets.Publish:
				k := msgKeyOf(pk)
				if pk.FixedHeader.Qos != c.qos {
					t.Errorf("old connection: %s, want QoS %d", describe(pk), c.qos)
				}
				if k.i <= oldLast[k.n] {
					t.Errorf("old connection: publisher %d's message %d after its message %d", k.n, k.i, oldLast[k.n])
				}
				oldLast[k.n] = k.i
				oldSaw[k] = true
				oldOpen[pk.PacketID] = true
				if c.oldMax > 0 && len(oldOpen) > int(c.oldMax) {
					t.Errorf("old connection: %d PUBLISH packets not completed, Receive Maximum %d", len(oldOpen), c.oldMax)
				}
				a := c.acts[oldRng.Intn(len(c.acts))]
				actOf[pk.PacketID] = a
				log.add("old: %s", oldActNames[a])
				switch a {
				case oldAcks:
					sess.deliver("old connection", k)
					oldAcked[k] = true
					delete(oldOpen, pk.PacketID)
					old.ack(t, pk.PacketID)
				case oldRecs, oldCompletes:
					sess.deliver("old connection", k)
					sess.awaiting[pk.PacketID] = k
					old.send(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: pk.PacketID})
				}
				if oldGot++; oldGot == oldTarget {
					close(oldEnough)
				}
			case packets.Pubrel:
				if _, ok := sess.awaiting[pk.PacketID]; !ok || pk.ReasonCode != packets.CodeSuccess.Code {
					t.Errorf("old connection: %s for a packet id it has no PUBREC out for", describe(pk))
					continue
				}
				if actOf[pk.PacketID] != oldCompletes {
					oldRel[pk.PacketID] = true
					continue
				}
				delete(sess.awaiting, pk.PacketID)
				delete(oldOpen, pk.PacketID)
				oldComped[pk.PacketID] = true
				old.send(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubcomp}, PacketID: pk.PacketID})
			case packets.Disconnect:
				// The takeover's, [MQTT-3.1.4-3]; a 3.1.1 client has no
				// DISCONNECT from the server, only its connection closed.
				if c.oldVersion < 5 {
					t.Errorf("old connection (v%d): %s", c.oldVersion, describe(pk))
				}
			default:
				t.Errorf("old connection: %s", describe(pk))
			}
		}
	}()

	var pubs []*netPeer
	for n := 0; n < publishers; n++ {
		p, _ := dialNetPeer(t, s, addr, fmt.Sprintf("pub-%d", n), fmt.Sprintf("pub-%d", n), true, 0, 0, log)
		pubs = append(pubs, p)
	}
	var beforeDone, wg sync.WaitGroup
	resume := make(chan struct{})
	for n, p := range pubs {
		n, p := n, p
		wg.Add(1)
		beforeDone.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if i == before {
					beforeDone.Done()
					<-resume
				}
				if err := p.publishQos(t, c.qos, uint16(i%65535+1), fmt.Sprintf("t/%d", n), fmt.Sprintf("%d %d", n, i)); err != nil {
					t.Error(err)
					if i < before {
						beforeDone.Done()
					}
					return
				}
			}
		}()
	}
	beforeDone.Wait()
	select {
	case <-oldEnough:
	case <-time.After(5 * time.Second):
		t.Fatalf("the old connection did not get %d messages", oldTarget)
	}

	// Take the session over at a random moment while the publishers go on.
	close(resume)
	time.Sleep(time.Duration(rng.Intn(3000)) * time.Microsecond)
	log.add("takeover")
	cur, ack := dialNetPeerVersion(t, s, addr, "new", "sub", c.newVersion, false, c.newMax, 600, log)
	require.True(t, ack.SessionPresent)
	select {
	case <-oldDone: // the takeover closed the old connection
	case <-time.After(5 * time.Second):
		t.Fatal("the takeover left the old connection open")
	}
	require.False(t, t.Failed(), "the old connection")

	// The new connection: it answers each PUBLISH and PUBREL, in order,
	// at random moments, at once when its Receive Maximum is reached.
	newOpen := map[uint16]bool{} // got a PUBLISH, sent no PUBACK or PUBCOMP
	maxOpen := 0
	var answers []packets.Packet
	newLast := make([]int, publishers)
	for n := range newLast {
		newLast[n] = -1
	}
	resentRels := 0
	receive := func(wait time.Duration) bool {
		t.Helper()
		pk, ok := cur.next(wait)
		if !ok {
			return false
		}
		switch pk.FixedHeader.Type {
		case packets.Publish:
			k := msgKeyOf(pk)
			require.Equal(t, c.qos, pk.FixedHeader.Qos, "new connection: %s", describe(pk))
			require.Greater(t, k.i, newLast[k.n], "new connection: publisher %d's message %d after its message %d", k.n, k.i, newLast[k.n])
			newLast[k.n] = k.i
			if oldSaw[k] {
				require.True(t, pk.FixedHeader.Dup, "new connection: publisher %d's message %d, got by the old connection, resent without DUP", k.n, k.i)
			}
			require.False(t, newOpen[pk.PacketID], "new connection: %s while its packet id is in flight", describe(pk))
			newOpen[pk.PacketID] = true
			if len(newOpen) > maxOpen {
				maxOpen = len(newOpen)
			}
			if c.newMax > 0 {
				require.LessOrEqual(t, len(newOpen), int(c.newMax), "new connection: PUBLISH packets not completed beyond its Receive Maximum")
			}
			if c.qos == 1 {
				if sess.delivered[k] > 0 {
					require.True(t, oldAcked[k] && pk.FixedHeader.Dup, "new connection: publisher %d's message %d again, not a resend of one the old connection acknowledged", k.n, k.i)
				}
				sess.deliver("new connection", k)
				answers = append(answers, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
				break
			}
			if was, ok := sess.awaiting[pk.PacketID]; ok {
				// PUBRECed on the old connection, which the server had
				// not yet processed when it was taken over.
				require.Equal(t, k, was, "new connection: %s, its packet id PUBRECed for another message", describe(pk))
				require.True(t, pk.FixedHeader.Dup, "new connection: %s, PUBRECed on the old connection, without DUP", describe(pk))
				require.False(t, oldRel[pk.PacketID], "new connection: %s resent after its PUBREL [MQTT-4.4.0-1]", describe(pk))
			} else {
				sess.deliver("new connection", k)
				sess.awaiting[pk.PacketID] = k
			}
			answers = append(answers, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: pk.PacketID})
		case packets.Pubrel:
			require.Equal(t, byte(2), c.qos, "new connection: %s", describe(pk))
			require.Equal(t, packets.CodeSuccess.Code, pk.ReasonCode, "new connection: %s", describe(pk))
			if _, ok := sess.awaiting[pk.PacketID]; ok {
				delete(sess.awaiting, pk.PacketID)
			} else {
				// Completed on the old connection: the server had not
				// processed the PUBCOMP when it was taken over.
				require.True(t, oldComped[pk.PacketID], "new connection: %s for a packet id never PUBRECed", describe(pk))
			}
			if !newOpen[pk.PacketID] {
				resentRels++
			}
			answers = append(answers, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubcomp, Qos: 0}, PacketID: pk.PacketID})
		default:
			t.Fatalf("new connection: %s", describe(pk))
		}
		return true
	}
	answer := func() {
		pk := answers[0]
		answers = answers[1:]
		if pk.FixedHeader.Type != packets.Pubrec {
			delete(newOpen, pk.PacketID)
		}
		require.True(t, cur.send(t, pk))
	}
	for len(sess.delivered) < publishers*each {
		if len(answers) > 0 && (c.newMax > 0 && len(newOpen) >= int(c.newMax) || rng.Intn(2) == 0) {
			answer()
		}
		wait := 5 * time.Second
		if len(answers) > 0 {
			wait = time.Duration(rng.Intn(2000)) * time.Microsecond
		}
		if !receive(wait) && wait == 5*time.Second {
			t.Fatalf("new connection: stalled with %d of %d messages delivered", len(sess.delivered), publishers*each)
		}
	}
	wg.Wait()
	// Complete every flow: each PUBREC gets its PUBREL.
	for len(answers) > 0 || len(sess.awaiting) > 0 {
		for len(answers) > 0 {
			answer()
		}
		if len(sess.awaiting) > 0 {
			require.True(t, receive(5*time.Second), "new connection: no PUBREL for %d PUBRECs", len(sess.awaiting))
		}
	}
	require.False(t, receive(50*time.Millisecond), "new connection: a packet after every flow completed")

	// Delivered, each once (at QoS 1 twice only as above).
	for n := 0; n < publishers; n++ {
		for i := 0; i < each; i++ {
			require.NotZero(t, sess.delivered[msgKey{n, i}], "publisher %d's message %d lost", n, i)
		}
	}
	require.Len(t, sess.delivered, publishers*each)
	if c.newMax > 0 {
		require.LessOrEqual(t, maxOpen, int(c.newMax))
	}
	log.add("done: new connection's most open %d, PUBRELs resent %d", maxOpen, resentRels)
	require.Eventually(t, func() bool {
		cl, ok := s.Clients.Get("sub")
		return ok && cl.State.Inflight.Len() == 0
	}, 5*time.Second, time.Millisecond, "the session keeps messages in flight, all completed")
	cl, _ := s.Clients.Get("sub")
	require.Equal(t, int32(c.newMax), atomic.LoadInt32(&cl.State.Inflight.sendQuota), "the send quota is not whole")
}

func msgKeyOf(pk packets.Packet) msgKey {
	n, i := streamOf(pk)
	return msgKey{n, i}
}

// TestSessionResumeMidFlow: a session whose connection went away mid-flow,
// then more messages queued for it than its next connection's Receive
// Maximum, and more published while it resumes; for MQTT 5 and 3.1.1
// (which has no Receive Maximum), at QoS 1 and 2. The old connection got
// messages 0, 1 and 2: at QoS 1 it acknowledged 0 only; at QoS 2 it got
// PUBREL for 0 (PUBRECed) and did not complete it, completed 1, and
// ignored 2. The connection resuming gets its CONNACK first, then at QoS 2
// PUBREL for 0 again, not its PUBLISH [MQTT-4.4.0-1]; what the old one had
// not acknowledged again with DUP; then each message in order, once; none
// it had completed. Its own Receive Maximum bounds the PUBLISH packets it
// has not completed: a PUBREC does not end one, its PUBREL holds the unit
// until the PUBCOMP, after which exactly one more comes.
func TestSessionResumeMidFlow(t *testing.T) {
	for _, c := range []struct {
		version, qos byte
		newMax       uint16
	}{{5, 2, 2}, {5, 2, 4}, {5, 2, 0}, {5, 1, 2}, {4, 1, 0}, {4, 2, 0}} {
		c := c
		name := fmt.Sprintf("v%d qos %d receive maximum 3 then %d", c.version, c.qos, c.newMax)
		if c.version < 5 {
			name = fmt.Sprintf("v%d qos %d", c.version, c.qos) // no Receive Maximum
		}
		t.Run(name, func(t *testing.T) {
			testSessionResumeMidFlow(t, c.version, c.qos, c.newMax)
		})
	}
}

func testSessionResumeMidFlow(t *testing.T, version, qos byte, newMax uint16) {
	const first, queued, during = 3, 20, 20 // messages the old connection gets, published while offline, published while resuming
	const total = first + queued + during
	s, addr := netServer(t)
	log := newEventLog()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("event log:\n%s", log)
		}
	})
	oldMax := uint16(0)
	if version == 5 {
		oldMax = 3
	}
	old, _ := dialNetPeerVersion(t, s, addr, "old", "sub", version, version == 5, oldMax, 600, log)
	old.subscribeQos(t, "t/+", qos)
	pub, _ := dialNetPeer(t, s, addr, "pub", "pub", true, 0, 0, log)
	for i := 0; i < first; i++ {
		require.NoError(t, pub.publishQos(t, qos, uint16(i+1), "t/0", fmt.Sprintf("0 %d", i)))
	}
	sess := newFlowSession(t, qos)
	ids := make([]uint16, first) // the packet id of each message on the old connection
	for i := 0; i < first; i++ {
		pk := old.expect(t, packets.Publish)
		require.Equal(t, msgKey{0, i}, msgKeyOf(pk))
		require.False(t, pk.FixedHeader.Dup)
		ids[i] = pk.PacketID
	}
	var relPending uint16 // QoS 2: message 0's packet id, PUBREL got, no PUBCOMP
	if qos == 1 {
		sess.deliver("old", msgKey{0, 0})
		require.True(t, old.ack(t, ids[0]))
	} else {
		for i := 0; i < 2; i++ {
			sess.deliver("old", msgKey{0, i})
			sess.awaiting[ids[i]] = msgKey{0, i}
			require.True(t, old.send(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: ids[i]}))
			require.Equal(t, ids[i], old.expect(t, packets.Pubrel).PacketID)
		}
		relPending = ids[0]
		delete(sess.awaiting, ids[1])
		require.True(t, old.send(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubcomp}, PacketID: ids[1]}))
	}
	old.send(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
	for pk := range old.wire {
		t.Errorf("old connection: %s after its last", describe(pk))
	}
	require.Eventually(t, func() bool {
		cl, ok := s.Clients.Get("sub")
		return ok && cl.Closed()
	}, 5*time.Second, time.Millisecond)

	for i := first; i < first+queued; i++ {
		require.NoError(t, pub.publishQos(t, qos, uint16(i+1), "t/0", fmt.Sprintf("0 %d", i)))
	}
	published := make(chan struct{})
	go func() {
		defer close(published)
		for i := first + queued; i < total; i++ {
			if err := pub.publishQos(t, qos, uint16(i+1), "t/0", fmt.Sprintf("0 %d", i)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	cur, ack := dialNetPeerVersion(t, s, addr, "new", "sub", version, false, newMax, 600, log)
	require.True(t, ack.SessionPresent)

	next := 1 // the message due: those the old connection did not complete, then the others
	if qos == 2 {
		next = 2
	}
	var open []uint16         // PUBLISH packets got and not completed, oldest first
	recd := map[uint16]bool{} // QoS 2: of these, those PUBRECed
	var rels []uint16         // QoS 2: PUBREL packets got, not yet answered
	resentRel := false
	receive := func(wait time.Duration) bool {
		t.Helper()
		pk, ok := cur.next(wait)
		if !ok {
			return false
		}
		switch pk.FixedHeader.Type {
		case packets.Publish:
			k := msgKeyOf(pk)
			require.Equal(t, qos, pk.FixedHeader.Qos, describe(pk))
			require.Equal(t, next, k.i, "message %d when %d was due", k.i, next)
			if k.i < first {
				require.True(t, pk.FixedHeader.Dup, "%s: got by the old connection, resent without DUP", describe(pk))
			}
			if qos == 2 {
				_, awaiting := sess.awaiting[pk.PacketID]
				require.False(t, awaiting, "%s: its packet id is awaiting its PUBREL", describe(pk))
			}
			sess.deliver("new", k)
			next++
			open = append(open, pk.PacketID)
			if newMax > 0 {
				require.LessOrEqual(t, len(open), int(newMax), "PUBLISH packets not completed beyond Receive Maximum %d", newMax)
			}
		case packets.Pubrel:
			require.Equal(t, byte(2), qos, describe(pk))
			require.Equal(t, packets.CodeSuccess.Code, pk.ReasonCode, describe(pk))
			if pk.PacketID == relPending && !resentRel {
				resentRel = true
			} else {
				require.True(t, recd[pk.PacketID], "%s for a packet id not PUBRECed", describe(pk))
			}
			rels = append(rels, pk.PacketID)
		default:
			t.Fatalf("%s", describe(pk))
		}
		return true
	}
	// complete ends the flow of open[n]: PUBACK, or PUBCOMP after its PUBREL.
	complete := func(n int) {
		t.Helper()
		id := open[n]
		open = append(open[:n:n], open[n+1:]...)
		if qos == 1 {
			require.True(t, cur.ack(t, id))
			return
		}
		require.True(t, recd[id], "PUBCOMP before PUBREC")
		delete(recd, id)
		require.True(t, cur.send(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubcomp}, PacketID: id}))
	}
	pubrec := func(id uint16) {
		t.Helper()
		recd[id] = true
		require.True(t, cur.send(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: id}))
	}
	// answerRels sends the PUBCOMP of a resent PUBREL, and removes the
	// others from rels (their flows end with complete).
	answerRels := func() {
		t.Helper()
		for _, id := range rels {
			if id == relPending && resentRel {
				require.True(t, cur.send(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubcomp}, PacketID: id}))
				delete(sess.awaiting, id)
				relPending = 0
			}
		}
		rels = rels[:0]
	}

	if newMax == 0 {
		// No Receive Maximum: everything comes, unanswered.
		for next < total || qos == 2 && !resentRel {
			require.True(t, receive(5*time.Second), "no Receive Maximum: stalled at %d without acknowledging", next)
		}
		answerRels()
		if qos == 2 {
			for _, id := range open {
				pubrec(id)
			}
			for len(rels) < len(open) {
				require.True(t, receive(5*time.Second), "%d PUBRELs for %d PUBRECs", len(rels), len(open))
			}
			rels = rels[:0]
		}
	} else {
		// The resend: at QoS 2 message 0's PUBREL again; and PUBLISH packets
		// within the quota, unanswered.
		for qos == 2 && !resentRel {
			require.True(t, receive(5*time.Second), "no PUBREL resent for message 0")
		}
		for receive(100 * time.Millisecond) {
		}
		answerRels()
		// The quota full, and no more.
		for len(open) < int(newMax) {
			require.True(t, receive(5*time.Second), "%d of %d messages before any acknowledgement", len(open), newMax)
		}
		require.False(t, receive(100*time.Millisecond), "more than Receive Maximum %d unacknowledged", newMax)
		if qos == 2 {
			// PUBREC each: their PUBRELs come, and no PUBLISH until a PUBCOMP.
			for _, id := range open {
				pubrec(id)
			}
			for len(rels) < len(open) {
				require.True(t, receive(5*time.Second), "%d PUBRELs for %d PUBRECs", len(rels), len(open))
			}
			rels = rels[:0]
			require.False(t, receive(100*time.Millisecond), "a PUBLISH with each unit of quota held by a PUBREL")
		}
		// Then each completion lets one more go.
		for next < total {
			complete(0)
			require.True(t, receive(5*time.Second), "stalled at %d", next)
			if qos == 2 {
				pubrec(open[len(open)-1])
				require.True(t, receive(5*time.Second), "no PUBREL")
				require.Len(t, rels, 1, "a PUBLISH for one PUBCOMP, then more")
				rels = rels[:0]
			}
		}
	}
	<-published
	for len(open) > 0 {
		if qos == 2 && !recd[open[0]] {
			pubrec(open[0])
			require.True(t, receive(5*time.Second), "no PUBREL")
			rels = rels[:0]
		}
		complete(0)
	}
	require.False(t, receive(50*time.Millisecond), "a packet after every flow completed")
	for i := 0; i < total; i++ {
		require.Equal(t, 1, sess.delivered[msgKey{0, i}], "message %d delivered %d times", i, sess.delivered[msgKey{0, i}])
	}
	require.Empty(t, sess.awaiting)
	require.Eventually(t, func() bool {
		cl, ok := s.Clients.Get("sub")
		return ok && cl.State.Inflight.Len() == 0
	}, 5*time.Second, time.Millisecond, "the session keeps messages in flight, all completed")
	cl, _ := s.Clients.Get("sub")
	require.Equal(t, int32(newMax), atomic.LoadInt32(&cl.State.Inflight.sendQuota), "the send quota is not whole")
}
