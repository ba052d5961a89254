package agent

import "time"

// TSLayout is how readings carry their time: RFC 3339 in UTC with
// milliseconds, e.g. 2026-11-25T20:00:01.250Z.
const TSLayout = "2006-01-02T15:04:05.000Z07:00"

// TS is a reading's timestamp; it marshals as TSLayout.
type TS time.Time

// MarshalJSON implements json.Marshaler.
func (t TS) MarshalJSON() ([]byte, error) {
	return []byte(`"` + time.Time(t).UTC().Format(TSLayout) + `"`), nil
}

// UnmarshalJSON implements json.Unmarshaler.
func (t *TS) UnmarshalJSON(b []byte) error {
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return &time.ParseError{Layout: TSLayout, Value: string(b)}
	}
	v, err := time.Parse(time.RFC3339Nano, string(b[1:len(b)-1]))
	if err != nil {
		return err
	}
	*t = TS(v)
	return nil
}

// Time returns t as a time.Time.
func (t TS) Time() time.Time { return time.Time(t) }
