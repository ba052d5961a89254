package broker

import (
	"io"
	"log/slog"

	"github.com/rs/zerolog"
)

// EmptyStore gives the external tests (package broker_test) a metadata
// store of their own: see emptyStore.
var EmptyStore = emptyStore

// MochiLogger is the broker's bridge from mochi's log to zerolog, writing
// to w at debug.
func MochiLogger(w io.Writer) *slog.Logger {
	return slog.New(slogToZerolog{log: zerolog.New(w), min: slog.LevelDebug})
}
