package influx

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/rs/zerolog"
)

// ErrSpoolFull is returned by Append when the spool holds its bound of
// unacknowledged bytes: the record is counted (Overflow) and not kept.
var ErrSpoolFull = errors.New("archive spool full")

// ErrSpoolClosed is returned by Append after Close.
var ErrSpoolClosed = errors.New("archive spool closed")

// Spool is a bounded, disk-backed FIFO of newline-terminated records (line
// protocol): what InfluxDB has not acknowledged yet.
//
// Records go to numbered segment files under dir; a cursor file says how
// far InfluxDB has acknowledged. Append writes the record into the active
// segment with one write(2) before it returns, so a record is in the
// kernel before the broker acknowledges the publish: a crash of the
// process (even SIGKILL) loses nothing. The file data reach the disk at
// the next Sync (the archive calls it every second and at rotation and
// close): a power loss or kernel crash may lose the last second.
// Re-sending after a restart is harmless: the same point (measurement,
// tags, time) overwrites itself in InfluxDB.
type Spool struct {
	dir    string
	max    int64
	segMax int64
	log    zerolog.Logger

	mu      sync.Mutex
	segs    []*segment // oldest first; the last one is being appended to
	w       *os.File   // append handle of the last segment
	size    int64      // unacknowledged bytes
	roff    int64      // acknowledged offset in segs[0]
	rseg    int        // index in segs of the next unread record (Next)
	rpos    int64      // its offset there
	dirty   bool       // appended since the last Sync
	newDir  bool       // files created or removed since the last Sync
	closed  bool
	toSync  []*os.File // rotated-out append handles, synced and closed by Sync
	cursor  *os.File
	curDirt bool

	// Group commit of concurrent appends (guarded by mu).
	cond     *sync.Cond
	writing  bool   // a goroutine is writing a group
	gbuf     []byte // records queued for the next group
	gspare   []byte
	gseq     uint64 // the group gbuf belongs to
	gdone    uint64 // the last group written
	gstarted bool   // gdone is meaningful
	gerrs    [16]groupResult

	overflow atomic.Int64
	notify   chan struct{}

	// opened is the first segment of this open: the ones before hold the
	// readings spooled before it (Backlog).
	opened uint64
}

type segment struct {
	id   uint64
	size int64
	r    *os.File
}

const (
	segSuffix  = ".seg"
	cursorFile = "cursor"
	cursorLen  = 42 // "%020d %020d\n"
)

// OpenSpool opens (or creates) the spool in dir holding at most max
// unacknowledged bytes. A torn last record (a crash in the middle of a
// write) is cut off.
func OpenSpool(dir string, max int64, log zerolog.Logger) (*Spool, error) {
	if max <= 0 {
		return nil, fmt.Errorf("spool bound %d: must be positive", max)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	s := &Spool{dir: dir, max: max, segMax: min(16<<20, max/4+1), log: log, notify: make(chan struct{}, 1)}
	s.cond = sync.NewCond(&s.mu)
	cur, err := os.OpenFile(filepath.Join(dir, cursorFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool cursor: %w", err)
	}
	s.cursor = cur
	curID, curOff := readCursor(cur)

	ents, err := os.ReadDir(dir)
	if err != nil {
		cur.Close()
		return nil, fmt.Errorf("spool: %w", err)
	}
	var ids []uint64
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), segSuffix)
		if !ok {
			continue
		}
		id, err := strconv.ParseUint(name, 10, 64)
		if err != nil {
			continue
		}
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		path := s.segPath(id)
		if id < curID { // acknowledged completely; removal was interrupted
			_ = os.Remove(path)
			continue
		}
		size, err := trimTorn(path)
		if err != nil {
			s.closeFiles()
			return nil, err
		}
		r, err := os.Open(path)
		if err != nil {
			s.closeFiles()
			return nil, fmt.Errorf("spool: %w", err)
		}
		s.segs = append(s.segs, &segment{id: id, size: size, r: r})
	}
	if len(s.segs) > 0 && s.segs[0].id == curID {
		s.roff = min(curOff, s.segs[0].size)
	}
	s.rpos = s.roff
	for _, sg := range s.segs {
		s.size += sg.size
	}
	s.size -= s.roff
	next := uint64(1)
	if n := len(s.segs); n > 0 {
		next = s.segs[n-1].id + 1
	}
	if err := s.addSegment(next); err != nil {
		s.closeFiles()
		return nil, err
	}
	s.opened = next
	if s.size > 0 {
		s.log.Info().Int64("bytes", s.size).Int("segments", len(s.segs)).Msg("archive spool holds unacknowledged readings from before; draining them")
		s.signal()
	}
	return s, nil
}

func (s *Spool) segPath(id uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%020d%s", id, segSuffix))
}

func readCursor(f *os.File) (id uint64, off int64) {
	buf := make([]byte, cursorLen)
	n, _ := f.ReadAt(buf, 0)
	fs := strings.Fields(string(buf[:n]))
	if len(fs) != 2 {
		return 0, 0
	}
	id, err1 := strconv.ParseUint(fs[0], 10, 64)
	o, err2 := strconv.ParseInt(fs[1], 10, 64)
	if err1 != nil || err2 != nil || o < 0 {
		return 0, 0
	}
	return id, o
}

// trimTorn cuts a segment after its last newline and returns its size.
func trimTorn(path string) (int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, fmt.Errorf("spool: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("spool: %w", err)
	}
	size := st.Size()
	end := size
	buf := make([]byte, 4096)
	for end > 0 {
		start := max(0, end-int64(len(buf)))
		n, err := f.ReadAt(buf[:end-start], start)
		if err != nil && err != io.EOF {
			return 0, fmt.Errorf("spool: %w", err)
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			end = start + int64(i) + 1
			break
		}
		end = start
	}
	if end != size {
		if err := f.Truncate(end); err != nil {
			return 0, fmt.Errorf("spool: %w", err)
		}
	}
	return end, nil
}

// addSegment starts a new active segment. Called with mu held (or before
// the spool is shared).
func (s *Spool) addSegment(id uint64) error {
	path := s.segPath(id)
	w, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	r, err := os.Open(path)
	if err != nil {
		w.Close()
		return fmt.Errorf("spool: %w", err)
	}
	if s.w != nil {
		s.toSync = append(s.toSync, s.w)
	}
	s.w = w
	s.segs = append(s.segs, &segment{id: id, r: r})
	s.newDir = true
	return nil
}

// Append adds one newline-terminated record. It returns once the record
// is written to the segment file (in the kernel), never waiting on
// anything but that local write; beyond the bound it returns ErrSpoolFull
// and counts the record in Overflow.
//
// Concurrent appends are group-committed: while one goroutine writes,
// the others queue their records, and the next writer writes them all
// with one write(2); each Append still returns only after its own
// record is written.
func (s *Spool) Append(rec []byte) error {
	if len(rec) == 0 || rec[len(rec)-1] != '\n' || bytes.IndexByte(rec[:len(rec)-1], '\n') >= 0 {
		return errors.New("spool: a record is one line ending in a newline")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrSpoolClosed
	}
	if s.size+int64(len(rec)) > s.max {
		s.overflow.Add(1)
		return ErrSpoolFull
	}
	s.size += int64(len(rec)) // reserved now, so the bound holds for queued records
	s.gbuf = append(s.gbuf, rec...)
	my := s.gseq
	for s.writing && s.gdone < my {
		s.cond.Wait()
	}
	if s.gdone >= my && s.gstarted {
		return s.groupErr(my)
	}
	// Lead: write the queued group (ours and whoever joined it).
	s.writing, s.gstarted = true, true
	buf := s.gbuf
	s.gbuf = s.gspare[:0]
	s.gseq++
	err := s.writeGroup(buf)
	s.gspare = buf[:0]
	s.gdone = my
	s.gerrs[my%uint64(len(s.gerrs))] = groupResult{seq: my, err: err}
	s.writing = false
	s.cond.Broadcast()
	if err == nil {
		s.signal()
	}
	return err
}

// writeGroup appends buf to the active segment (rotating first if it is
// full), with mu released during the write. Called with mu held by the
// one writer.
func (s *Spool) writeGroup(buf []byte) error {
	active := s.segs[len(s.segs)-1]
	if active.size >= s.segMax {
		if err := s.addSegment(active.id + 1); err != nil {
			s.size -= int64(len(buf))
			return err
		}
		active = s.segs[len(s.segs)-1]
	}
	w := s.w
	s.mu.Unlock()
	n, err := w.Write(buf)
	s.mu.Lock()
	if err != nil {
		// A short write leaves torn records: cut them so the next write
		// starts on a line of its own.
		if n > 0 {
			_ = w.Truncate(active.size)
		}
		s.size -= int64(len(buf))
		return fmt.Errorf("spool: %w", err)
	}
	active.size += int64(n)
	s.dirty = true
	return nil
}

// groupErr is the outcome of write group seq (nil once forgotten: groups
// only fail when the disk does, and then the next ones fail too).
func (s *Spool) groupErr(seq uint64) error {
	if r := s.gerrs[seq%uint64(len(s.gerrs))]; r.seq == seq {
		return r.err
	}
	return nil
}

type groupResult struct {
	seq uint64
	err error
}

func (s *Spool) signal() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Notify is signalled after appends.
func (s *Spool) Notify() <-chan struct{} { return s.notify }

// Batch is a run of whole records read from the spool.
type Batch struct {
	Data  []byte
	Lines int
	seg   uint64
	start int64
	end   int64
}

// Next returns up to maxBytes of the oldest records not yet returned (at
// least one record, however long), or ok=false when there are none. Only
// one goroutine may call Next, Ack and Rewind; batches are acknowledged in
// the order Next returned them.
func (s *Spool) Next(maxBytes int) (b Batch, ok bool, err error) {
	s.mu.Lock()
	for {
		seg := s.segs[s.rseg]
		if seg.size > s.rpos {
			break
		}
		if s.rseg == len(s.segs)-1 {
			s.mu.Unlock()
			return Batch{}, false, nil
		}
		s.rseg++
		s.rpos = 0
	}
	seg := s.segs[s.rseg]
	start, end := s.rpos, seg.size
	s.mu.Unlock()

	n := min(end-start, int64(maxBytes))
	for {
		buf := make([]byte, n)
		if _, err := seg.r.ReadAt(buf, start); err != nil && err != io.EOF {
			return Batch{}, false, fmt.Errorf("spool read: %w", err)
		}
		if i := bytes.LastIndexByte(buf, '\n'); i >= 0 {
			buf = buf[:i+1]
			b := Batch{Data: buf, Lines: bytes.Count(buf, []byte{'\n'}), seg: seg.id, start: start, end: start + int64(i) + 1}
			s.mu.Lock()
			s.rpos = b.end
			s.mu.Unlock()
			return b, true, nil
		}
		if n == end-start { // cannot happen: segments hold whole records
			return Batch{}, false, fmt.Errorf("spool: segment %d has a record without newline at %d", seg.id, start)
		}
		n = min(end-start, 2*n)
	}
}

// Rewind makes Next start again at the oldest unacknowledged record (after
// a failed write: the batches after it are sent again).
func (s *Spool) Rewind() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rseg, s.rpos = 0, s.roff
}

// dropFirst removes the fully acknowledged first segment. Called with mu held.
func (s *Spool) dropFirst() {
	seg := s.segs[0]
	seg.r.Close()
	if err := os.Remove(s.segPath(seg.id)); err != nil {
		s.log.Warn().Err(err).Msg("archive spool: removing a drained segment")
	}
	s.segs = s.segs[1:]
	s.roff = 0
	if s.rseg > 0 {
		s.rseg--
	} else {
		s.rpos = 0
	}
	s.newDir = true
	s.writeCursor()
}

// Ack marks a batch returned by Next as stored in InfluxDB. Batches must
// be acknowledged in order; others are ignored.
func (s *Spool) Ack(b Batch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// A segment acknowledged to its end while it was still being appended
	// to goes once a newer one exists.
	for len(s.segs) > 1 && s.roff >= s.segs[0].size {
		s.dropFirst()
	}
	if s.segs[0].id != b.seg || b.start != s.roff {
		return
	}
	s.size -= b.end - s.roff
	s.roff = b.end
	if s.roff >= s.segs[0].size && len(s.segs) > 1 {
		s.dropFirst()
		return
	}
	s.writeCursor()
}

// writeCursor records the read position. Called with mu held.
func (s *Spool) writeCursor() {
	id := s.segs[0].id
	if _, err := s.cursor.WriteAt([]byte(fmt.Sprintf("%020d %020d\n", id, s.roff)), 0); err != nil {
		s.log.Warn().Err(err).Msg("archive spool: writing the cursor")
	}
	s.curDirt = true
}

// Sync forces appended records and the cursor to disk.
func (s *Spool) Sync() error {
	s.mu.Lock()
	w, dirty, rotated, dir, cur := s.w, s.dirty, s.toSync, s.newDir, s.curDirt
	s.dirty, s.toSync, s.newDir, s.curDirt = false, nil, false, false
	s.mu.Unlock()
	var errs []error
	for _, f := range rotated {
		errs = append(errs, f.Sync(), f.Close())
	}
	if dirty && w != nil {
		if err := w.Sync(); err != nil && !errors.Is(err, os.ErrClosed) {
			errs = append(errs, err)
		}
	}
	if cur {
		if err := s.cursor.Sync(); err != nil && !errors.Is(err, os.ErrClosed) {
			errs = append(errs, err)
		}
	}
	if dir {
		if d, err := os.Open(s.dir); err == nil {
			errs = append(errs, d.Sync(), d.Close())
		}
	}
	return errors.Join(errs...)
}

// Backlog reports whether readings spooled before the spool was opened
// (before a restart) are not all acknowledged yet: until they are, the
// archive misses readings older than any taken since.
func (s *Spool) Backlog() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, sg := range s.segs {
		if sg.id >= s.opened {
			return false
		}
		if i == 0 && s.roff >= sg.size {
			continue // acknowledged to its end, not dropped yet
		}
		if sg.size > 0 {
			return true
		}
	}
	return false
}

// Len is the number of unacknowledged bytes.
func (s *Spool) Len() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size
}

// Max is the bound.
func (s *Spool) Max() int64 { return s.max }

// Overflow counts records refused because the spool was full.
func (s *Spool) Overflow() int64 { return s.overflow.Load() }

// Close syncs and closes the spool; what is unacknowledged stays on disk.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for s.writing {
		s.cond.Wait()
	}
	s.mu.Unlock()
	err := s.Sync()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeFiles()
	return err
}

func (s *Spool) closeFiles() {
	for _, sg := range s.segs {
		sg.r.Close()
	}
	if s.w != nil {
		s.w.Close()
	}
	if s.cursor != nil {
		s.cursor.Close()
	}
}
