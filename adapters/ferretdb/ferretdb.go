// Package ferretdb runs an embedded FerretDB (v1, SQLite backend) so that
// Veil works without an external MongoDB. The broker talks to it through
// the ordinary mongo-driver, exactly as it would to a real MongoDB: this
// package only starts and stops the server.
//
// The SQLite files live under {dataDir}/ferretdb, one file per database.
// The server listens on a free loopback port (127.0.0.1:0), never on a
// public interface, and accepts no credentials (there is no authentication
// in FerretDB v1 with the SQLite backend); keep it on loopback.
package ferretdb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
	"github.com/rs/zerolog"
)

// SubDir is the directory below the data dir that holds the SQLite files.
const SubDir = "ferretdb"

// stopTimeout bounds Close: FerretDB gives open connections up to 3 s to
// go away after cancellation before it drops them.
const stopTimeout = 10 * time.Second

var newMu sync.Mutex

// Server is a running embedded FerretDB.
type Server struct {
	fdb    *ferretdb.FerretDB
	uri    string
	dir    string
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
	log    zerolog.Logger
}

// Start starts an embedded FerretDB with its SQLite files under
// dataDir/ferretdb (created if missing) and a listener on a free loopback
// port. FerretDB's own log records go to log at warn level and above only.
// The server runs until Close; ctx only bounds the start itself.
func Start(ctx context.Context, dataDir string, log zerolog.Logger) (*Server, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if dataDir == "" {
		return nil, errors.New("ferretdb: data dir must not be empty")
	}
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, fmt.Errorf("ferretdb: data dir %q: %w", dataDir, err)
	}
	dir := filepath.Join(abs, SubDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ferretdb: create %s: %w", dir, err)
	}

	// The SQLite URI names a directory and must end with a slash.
	sqliteURL := (&url.URL{Scheme: "file", Path: filepath.ToSlash(dir) + "/"}).String()

	flog := log.With().Str("component", "ferretdb").Logger()
	// FerretDB logs through slog: route it into zerolog, warn and above only.
	slogger := slog.New(quietHandler{zerolog.NewSlogHandler(flog.Level(maxLevel(flog.GetLevel(), zerolog.WarnLevel)))})

	// ferretdb.New writes a package-level variable of FerretDB's (the
	// version's package name): never run two at once.
	newMu.Lock()
	fdb, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: "127.0.0.1:0"},
		Logger:    slogger,
		Handler:   "sqlite",
		SQLiteURL: sqliteURL,
	})
	newMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("ferretdb: start with SQLite under %s: %w", dir, err)
	}

	runCtx, cancel := context.WithCancel(context.Background())
	s := &Server{
		fdb:    fdb,
		uri:    fdb.MongoDBURI(), // the listener is bound by New, so this does not block
		dir:    dir,
		cancel: cancel,
		done:   make(chan struct{}),
		log:    flog,
	}
	go func() {
		defer close(s.done)
		if err := fdb.Run(runCtx); err != nil {
			flog.Error().Err(err).Msg("embedded FerretDB stopped with an error")
		}
	}()
	flog.Debug().Str("uri", s.uri).Str("dir", dir).Msg("embedded FerretDB started")
	return s, nil
}

// quietHandler drops FerretDB's echo of every failed command ("Response
// header: …", "Response message: …", logged at warn). The driver already
// returns that error to the caller, the echo carries document values (a
// duplicate key, say), and the driver's routine endSessions on Disconnect,
// which FerretDB v1 does not implement, would log it on every shutdown.
type quietHandler struct{ slog.Handler }

func (h quietHandler) Handle(ctx context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, "Response header: ") || strings.HasPrefix(r.Message, "Response message:") {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h quietHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return quietHandler{h.Handler.WithAttrs(attrs)}
}

func (h quietHandler) WithGroup(name string) slog.Handler {
	return quietHandler{h.Handler.WithGroup(name)}
}

// maxLevel returns the more restrictive of two levels.
func maxLevel(a, b zerolog.Level) zerolog.Level {
	if a > b {
		return a
	}
	return b
}

// URI is the mongodb:// connection string of the server, e.g.
// mongodb://127.0.0.1:40321/.
func (s *Server) URI() string { return s.uri }

// Dir is the directory that holds the SQLite files.
func (s *Server) Dir() string { return s.dir }

// Close stops the server and waits until its listener, connections and
// SQLite databases are closed. Disconnect clients first: FerretDB waits up
// to 3 s for connections that are still open. Close is idempotent.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		s.cancel()
		select {
		case <-s.done:
		case <-time.After(stopTimeout):
			err = fmt.Errorf("ferretdb: not stopped after %s", stopTimeout)
		}
	})
	return err
}
