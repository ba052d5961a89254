package broker

import (
	"context"
	"log/slog"

	"github.com/rs/zerolog"
)

// slogToZerolog forwards mochi's slog records to zerolog at or above min,
// so the broker logs one structured stream. mochi logs every refused
// connection at warn; Veil's own hook logs those, so min defaults to error.
type slogToZerolog struct {
	log   zerolog.Logger
	min   slog.Level
	attrs []slog.Attr
}

func (h slogToZerolog) Enabled(_ context.Context, l slog.Level) bool {
	return l >= min(h.min, slog.LevelError)
}

func (h slogToZerolog) Handle(_ context.Context, r slog.Record) error {
	var ev *zerolog.Event
	if r.Message == "failed to get data" {
		r.Level = slog.LevelDebug // mochi's bolt hook on a fresh data dir: nothing stored yet
	}
	switch {
	case r.Level >= slog.LevelError:
		ev = h.log.Error()
	case r.Level >= slog.LevelWarn:
		ev = h.log.Warn()
	case r.Level >= slog.LevelInfo:
		ev = h.log.Info()
	default:
		ev = h.log.Debug()
	}
	add := func(a slog.Attr) bool {
		v := a.Value.Resolve()
		switch v.Kind() {
		case slog.KindAny:
			// Only errors: any other value (a packet under "packet",
			// "pk" or a key mochi adds later, a will) can carry a
			// password or a payload, and is never logged.
			if err, ok := v.Any().(error); ok {
				ev = ev.AnErr(a.Key, err)
			}
		case slog.KindGroup, slog.KindLogValuer:
		default:
			ev = ev.Any(a.Key, v.Any())
		}
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	if r.Level < h.min {
		return nil
	}
	r.Attrs(add)
	ev.Msg(r.Message)
	return nil
}

func (h slogToZerolog) WithAttrs(attrs []slog.Attr) slog.Handler {
	h.attrs = append(append([]slog.Attr(nil), h.attrs...), attrs...)
	return h
}

func (h slogToZerolog) WithGroup(string) slog.Handler { return h }
