package loadgen

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// instructions counts the instructions a process's threads retire, user
// and kernel, with one Linux perf event per thread. Unlike CPU time it does
// not grow when other work on the machine evicts the broker's caches or
// steals its cores, so it compares brokers on a noisy machine; unlike CPU
// time it does not see cache misses, so the two are reported side by side.
//
// Threads the process starts later are counted too (the events are
// inherited, and reading one sums its thread's descendants): a Go broker
// starts threads while it runs, whenever one blocked in a system call
// hands its work on, and without them a run counted as little as half.
type instructions struct {
	fds []int
}

// openInstructions starts counting for every current thread of pid. It
// fails where perf events are not available (no PMU in the VM, or
// kernel.perf_event_paranoid forbids it).
func openInstructions(pid int) (*instructions, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, err
	}
	c := &instructions{}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		attr := unix.PerfEventAttr{Type: unix.PERF_TYPE_HARDWARE, Config: unix.PERF_COUNT_HW_INSTRUCTIONS}
		attr.Size = uint32(unsafe.Sizeof(attr))
		attr.Bits = unix.PerfBitInherit
		fd, err := unix.PerfEventOpen(&attr, tid, -1, -1, unix.PERF_FLAG_FD_CLOEXEC)
		if err != nil {
			if len(c.fds) == 0 {
				return nil, fmt.Errorf("perf event for thread %d of %d: %w", tid, pid, err)
			}
			continue // the thread ended meanwhile
		}
		c.fds = append(c.fds, fd)
	}
	return c, nil
}

// read returns the instructions counted so far.
func (c *instructions) read() (uint64, error) {
	var sum uint64
	var buf [8]byte
	for _, fd := range c.fds {
		if n, err := unix.Read(fd, buf[:]); err != nil || n != 8 {
			return 0, fmt.Errorf("reading a perf event: %v", err)
		}
		sum += binary.NativeEndian.Uint64(buf[:])
	}
	return sum, nil
}

func (c *instructions) close() {
	for _, fd := range c.fds {
		unix.Close(fd)
	}
}
