// Package influxtest runs a real influxd (v1.8.3, built once into ./bin by
// scripts/influxd.sh) for tests: on a free loopback port, with Flux on,
// data under a directory of the test's choosing. It is killed with the
// test process.
package influxtest

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/veil-iot/veil/internal/freeport"
)

// Server is one influxd process (restartable on the same port and data).
type Server struct {
	Dir  string
	Port int
	URL  string
	bin  string
	conf string
	cmd  *exec.Cmd
	exit chan struct{}
}

// Root is the repository root (the directory holding go.mod).
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("influxtest: no go.mod above the working directory")
		}
		dir = parent
	}
}

// Start builds influxd if needed (about a minute and a half, once) and
// starts it with data under dir, waiting until /ping answers.
func Start(dir string) (*Server, error) {
	root, err := Root()
	if err != nil {
		return nil, err
	}
	script := filepath.Join(root, "scripts", "influxd.sh")
	bin := filepath.Join(root, "bin", "influxd")
	if _, err := os.Stat(bin); err != nil {
		build := exec.Command(script, "build")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return nil, fmt.Errorf("influxtest: building influxd: %w", err)
		}
	}
	// Not a port the kernel hands out for port 0: influxd binds its RPC
	// listener to port 0 before its HTTP listener, and a test restarts it
	// on the same port (freeport.Loopback).
	port, err := freeport.Loopback()
	if err != nil {
		return nil, err
	}
	if out, err := exec.Command(script, "config", dir, strconv.Itoa(port)).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("influxtest: config: %v: %s", err, out)
	}
	s := &Server{Dir: dir, Port: port, URL: fmt.Sprintf("http://127.0.0.1:%d", port), bin: bin,
		conf: filepath.Join(dir, "influxd.conf")}
	return s, s.Restart()
}

// Restart starts the stopped server again (same port, same data).
func (s *Server) Restart() error {
	if s.cmd != nil {
		return errors.New("influxtest: already running")
	}
	logf, err := os.OpenFile(filepath.Join(s.Dir, "influxd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	started := make(chan error, 1)
	s.exit = make(chan struct{})
	// Pdeathsig is tied to the thread that forks: keep that thread alive
	// (locked, parked) for as long as influxd runs.
	go func() {
		runtime.LockOSThread()
		cmd := exec.Command(s.bin, "run", "-config", s.conf)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		s.cmd = cmd
		started <- nil
		_ = cmd.Wait()
		close(s.exit)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("influxtest: %w", err)
	}
	deadline := time.Now().Add(90 * time.Second) // Flux compiles its library at start: 15-30 s here
	for time.Now().Before(deadline) {
		resp, err := http.Get(s.URL + "/ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				return nil
			}
		}
		select {
		case <-s.exit:
			s.cmd = nil
			return fmt.Errorf("influxtest: influxd exited; see %s", filepath.Join(s.Dir, "influxd.log"))
		case <-time.After(100 * time.Millisecond):
		}
	}
	s.Stop()
	return errors.New("influxtest: influxd did not answer /ping within 90 s")
}

// Stop stops influxd (SIGTERM, then SIGKILL after 10 s).
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exit:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exit
	}
	s.cmd = nil
}
