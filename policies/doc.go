// Package policies is Veil's privacy model: principals, things, places,
// relations, owner policies, their evaluation and the payload constraints
// that rewrite a reading for one subscriber.
//
// It is pure: no I/O, no broker, no database. The broker hooks, the control
// plane and the archive all ask one Engine the same question — may this
// principal perform this action on this topic for this purpose, and if so,
// what may it see — so that every path answers alike.
//
// Evaluation order (privacy by default):
//
//  1. built-in relation rules: owner and active co-owner see everything raw;
//     an installer may read state, command and configure until an owner is
//     in force; a visitor may read state and command inside its window; a
//     thing may publish its own data and state and receive its own commands;
//  2. the owners' policies that match the resource, action and purpose, in
//     ascending priority (ties by id): the first whose subjects and when-
//     condition hold decides (Algorithm 5.1 of the thesis);
//  3. otherwise deny.
package policies
