package hooks

import (
	"testing"

	"github.com/veil-iot/veil/policies"
)

// TestHistoryReplyOnlyToItsRequester: while a history page is published
// on $config/replies/{id}/…, only the client that asked receives it, not
// another client that holds the id by then (the requester gone, another
// user connected under its id and subscribed to "its" replies). Other
// replies on the topic go to whoever holds the id, as before.
func TestHistoryReplyOnlyToItsRequester(t *testing.T) {
	f := newDeliveryFixture(t, nil)
	h := NewHistory(HistoryConfig{Engine: f.engine, Server: f.server})
	e := NewEnforcer(EnforcerConfig{Engine: f.engine, Sessions: f.sessions, Server: f.server, System: []SystemTopics{h}})
	requester := f.client("an-cli", policies.UserPrincipal("an"))
	stranger := f.client("an-cli", policies.UserPrincipal("stranger"))
	const topic = "$config/replies/an-cli/history"
	if !e.OnACLCheck(stranger, topic, false) || !e.OnACLCheck(requester, topic, false) {
		t.Fatal("with no history reply being published, the holder of the id is refused its replies")
	}
	h.addressee.Store(&addressedReply{topic: topic, to: requester})
	if e.OnACLCheck(stranger, topic, false) {
		t.Error("the requester's history page was delivered to another client under its id")
	}
	if !e.OnACLCheck(requester, topic, false) {
		t.Error("the requester was refused its own history page")
	}
	if !e.OnACLCheck(stranger, "$config/replies/an-cli/other", false) {
		t.Error("a reply on another topic was refused while a history page was published")
	}
	h.addressee.Store(nil)
}
