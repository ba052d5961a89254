package agent

import "sync"

// Message is one reading (or state) ready to be published: the payload is
// rendered when the reading is taken, so its "ts" is the time of the
// reading, not of the (possibly much later) delivery.
type Message struct {
	Topic   string
	Payload []byte
	Retain  bool
}

// Buffer is a bounded FIFO of messages waiting for the broker. When it is
// full the oldest message is dropped: after a long outage the most recent
// readings are the valuable ones. It is safe for concurrent use.
type Buffer struct {
	mu      sync.Mutex
	items   []Message // ring
	head    int       // index of the oldest item
	n       int       // number of items
	dropped uint64
	notify  chan struct{} // receives a value when something is added
}

// NewBuffer returns a buffer holding at most capacity messages (at least 1).
func NewBuffer(capacity int) *Buffer {
	if capacity < 1 {
		capacity = 1
	}
	return &Buffer{items: make([]Message, capacity), notify: make(chan struct{}, 1)}
}

// Push appends m, dropping the oldest message if the buffer is full. It
// reports whether a message was dropped.
func (b *Buffer) Push(m Message) (dropped bool) {
	b.mu.Lock()
	if b.n == len(b.items) {
		b.head = (b.head + 1) % len(b.items)
		b.n--
		b.dropped++
		dropped = true
	}
	b.items[(b.head+b.n)%len(b.items)] = m
	b.n++
	b.mu.Unlock()
	select {
	case b.notify <- struct{}{}:
	default:
	}
	return dropped
}

// Peek returns the oldest message without removing it.
func (b *Buffer) Peek() (Message, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.n == 0 {
		return Message{}, false
	}
	return b.items[b.head], true
}

// Pop removes the oldest message if it is still m's slot (a Push that
// overflowed in between may already have dropped it).
func (b *Buffer) Pop(m Message) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.n == 0 {
		return
	}
	cur := b.items[b.head]
	if cur.Topic != m.Topic || string(cur.Payload) != string(m.Payload) {
		return
	}
	b.items[b.head] = Message{}
	b.head = (b.head + 1) % len(b.items)
	b.n--
}

// Len is the number of waiting messages.
func (b *Buffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}

// Dropped is how many messages were dropped because the buffer was full.
func (b *Buffer) Dropped() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dropped
}

// Ready receives a value after a Push.
func (b *Buffer) Ready() <-chan struct{} { return b.notify }
