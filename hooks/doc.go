// Package hooks holds Veil's mochi-mqtt hooks: authentication, and the
// enforcer that authorises every publish, subscribe and delivery and
// rewrites each delivered payload for its subscriber.
//
// Where mochi checks what (v2.7.9, see DESIGN.md "Enforcement points"):
//
//   - OnConnect: the will topic (mochi never checks it) and outbound topic
//     aliases switched off, so that OnPacketEncode always sees the topic;
//   - OnConnectAuthenticate: users (argon2id or JWT), things (id + secret);
//   - OnACLCheck: each PUBLISH, each SUBSCRIBE filter, and every delivery to
//     every recipient, in the publisher's goroutine, where payload-dependent
//     verdicts (range, non-JSON under a constraint) and rate limits are
//     decided from the message being fanned out;
//   - OnPacketEncode: the rewrite itself, into a fresh payload slice, and a
//     fail-safe second decision: a packet whose decision became deny since it
//     was queued is not written at all;
//   - OnSessionEstablish: inflight messages a taken-over session would resend
//     are re-checked against the new connection's principal (mochi#504).
package hooks
