package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// runIdle connects cfg.Clients idle clients (as the stranger, who may
// connect but sees nothing) and reports the broker's resident memory per
// client, marginally: VmRSS of cfg.BrokerPID once a fifth of the clients
// is connected and again once all are, settled. The first fifth absorbs
// what the broker allocated and freed before (Veil's argon2id verification
// of the first connect frees 64 MiB that later clients would reuse).
func runIdle(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.BrokerPID <= 0 {
		return nil, fmt.Errorf("--scenario idle needs --broker-pid (the broker process whose memory is measured)")
	}
	if cfg.Clients < 10 {
		return nil, fmt.Errorf("--scenario idle needs at least 10 clients")
	}
	res := &Result{Broker: cfg.Broker, Profile: cfg.Profile, Scenario: Idle, Clients: cfg.Clients, Round: cfg.Round, Tag: cfg.Tag}
	clients := make([]*paho.Client, cfg.Clients)
	var mu sync.Mutex
	var clientErrs int
	connect := func(ctx context.Context, i int) error {
		cl, err := dial(ctx, cfg.Addr, fmt.Sprintf("bench-idle-%d", i), "stranger", cfg.password("stranger"), nil,
			func(error) { mu.Lock(); clientErrs++; mu.Unlock() })
		if err != nil {
			return fmt.Errorf("idle client %d of %d: %w", i+1, cfg.Clients, err)
		}
		clients[i] = cl
		return nil
	}
	defer func() {
		_ = parallel(context.Background(), len(clients), 256, func(_ context.Context, i int) error {
			if clients[i] != nil {
				_ = clients[i].Disconnect(&paho.Disconnect{})
			}
			return nil
		})
	}()
	settle := cfg.Duration
	if settle <= 0 {
		settle = 3 * time.Second
	}
	base := cfg.Clients / 5
	start := time.Now()
	// The first client alone: the broker verifies the password once
	// (argon2id) and the rest from its cache.
	if err := connect(ctx, 0); err != nil {
		return nil, err
	}
	if err := parallel(ctx, base-1, 64, func(ctx context.Context, i int) error { return connect(ctx, i+1) }); err != nil {
		return nil, err
	}
	time.Sleep(settle)
	before, err := RSSKiB(cfg.BrokerPID)
	if err != nil {
		return nil, err
	}
	if err := parallel(ctx, cfg.Clients-base, 64, func(ctx context.Context, i int) error { return connect(ctx, base+i) }); err != nil {
		return nil, err
	}
	connectTook := time.Since(start)
	if cfg.Log != nil {
		fmt.Fprintf(cfg.Log, "%s idle: %d clients connected in %s; settling\n", cfg.Broker, cfg.Clients, connectTook.Round(time.Millisecond))
	}
	time.Sleep(settle)
	after, err := RSSKiB(cfg.BrokerPID)
	if err != nil {
		return nil, err
	}
	connected := 0
	for _, cl := range clients {
		if cl != nil {
			select {
			case <-cl.Done():
			default:
				connected++
			}
		}
	}
	res.Idle = &IdleResult{Clients: cfg.Clients, Connected: connected, BaseClients: base, RSSBeforeKiB: before, RSSAfterKiB: after,
		BytesPerClient: float64(after-before) * 1024 / float64(cfg.Clients-base), ConnectSeconds: connectTook.Seconds()}
	res.Duration = settle.Seconds()
	if clientErrs > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d client errors", clientErrs))
	}
	res.OK = connected == cfg.Clients
	if !res.OK {
		res.FailureReason = fmt.Sprintf("only %d of %d idle clients still connected", connected, cfg.Clients)
	}
	return res, nil
}

// RSSKiB reads VmRSS of process pid from /proc.
func RSSKiB(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("broker memory: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("broker memory: VmRSS %q: %v", rest, err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("broker memory: no VmRSS in /proc/%d/status", pid)
}

// CPUSeconds is the CPU time (user + system) process pid has used so far,
// from /proc/{pid}/stat in clock ticks of 1/100 s (Linux's USER_HZ).
func CPUSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("broker CPU: %w", err)
	}
	// The command name (field 2) may hold spaces: count fields after its ')'.
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 13 {
		return 0, fmt.Errorf("broker CPU: /proc/%d/stat: unexpected format", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("broker CPU: /proc/%d/stat: unexpected format", pid)
	}
	return float64(utime+stime) / 100, nil
}
