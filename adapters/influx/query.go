package influx

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Row is one archived reading: its time and its fields by flattened name
// ("position.lat"), each value of the type it was published with (JSON
// text as json.RawMessage; see FieldOf).
type Row struct {
	Time   time.Time
	Fields map[string]any
}

// systemColumns are the columns of a Flux result that are not fields.
var systemColumns = map[string]bool{
	"result": true, "table": true, "_start": true, "_stop": true, "_time": true, "_measurement": true,
	TagThing: true, TagOwner: true, TagKind: true, TagPlace: true,
}

// HistoryFlux is the Flux query for the readings of one thing's stream in
// [from, to) archived under owner (the owner tag; "" for none), oldest
// first, one row per reading (fields pivoted into columns).
func (a *Archive) HistoryFlux(thing, stream, owner string, from, to time.Time) string {
	ownerIs := "not exists r." + TagOwner
	if owner != "" {
		ownerIs = "r." + TagOwner + " == " + fluxString(owner)
	}
	return fmt.Sprintf(`from(bucket: %s)
  |> range(start: %s, stop: %s)
  |> filter(fn: (r) => r._measurement == %s and r.thing == %s and %s)
  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")
  |> group()
  |> sort(columns: ["_time"])`,
		fluxString(a.bucket), from.UTC().Format(time.RFC3339Nano), to.UTC().Format(time.RFC3339Nano),
		fluxString(stream), fluxString(thing), ownerIs)
}

// History streams the archived readings of things/{thing}/data/{stream}
// in [from, to) that were archived under owner (the thing's owner of
// record when each was taken; "" before a hand-over), oldest first, to fn;
// fn returns false to stop early. A thing id passes to another holder at a
// hand-over, or when the thing is deleted and its id created again for
// someone else: the caller passes the current owner of record, so that
// nobody reads a former holder's readings.
func (a *Archive) History(ctx context.Context, thing, stream, owner string, from, to time.Time, fn func(Row) bool) error {
	if !to.After(from) {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	res, err := a.query.Query(ctx, a.HistoryFlux(thing, stream, owner, from, to))
	if err != nil {
		return fmt.Errorf("archive query: %w", err)
	}
	defer res.Close()
	for res.Next() {
		rec := res.Record()
		row := Row{Time: rec.Time(), Fields: map[string]any{}}
		for k, v := range rec.Values() {
			if v == nil || systemColumns[k] {
				continue
			}
			name, v := FieldOf(k, v)
			row.Fields[name] = v
		}
		if len(row.Fields) == 0 {
			continue
		}
		if !fn(row) {
			return nil
		}
	}
	if err := ctx.Err(); err != nil {
		return err // the caller's context ended: the readings stopped short
	}
	if err := res.Err(); err != nil {
		return fmt.Errorf("archive query: %w", err)
	}
	return nil
}

// earliest is the first instant InfluxDB can hold (a range may not start
// before it).
var earliest = time.Date(1677, 9, 21, 0, 12, 44, 0, time.UTC)

// Latest returns the latest reading of things/{thing}/data/{stream}
// archived under owner (as History) before before, however long before,
// and whether there is one: its time in one query (each field's last()),
// then the reading at that time. The range's stop is checked again in
// the filter: influxd 1.8 takes a point at the stop too.
func (a *Archive) Latest(ctx context.Context, thing, stream, owner string, before time.Time) (Row, bool, error) {
	if !before.After(earliest) {
		return Row{}, false, nil
	}
	ownerIs := "not exists r." + TagOwner
	if owner != "" {
		ownerIs = "r." + TagOwner + " == " + fluxString(owner)
	}
	res, err := a.query.Query(ctx, fmt.Sprintf(`from(bucket: %s)
  |> range(start: %s, stop: %s)
  |> filter(fn: (r) => r._measurement == %s and r.thing == %s and %s and r._time < %s)
  |> last()
  |> keep(columns: ["_time"])
  |> group()
  |> max(column: "_time")`,
		fluxString(a.bucket), earliest.Format(time.RFC3339Nano), before.UTC().Format(time.RFC3339Nano),
		fluxString(stream), fluxString(thing), ownerIs, before.UTC().Format(time.RFC3339Nano)))
	if err != nil {
		return Row{}, false, fmt.Errorf("archive query: %w", err)
	}
	var at time.Time
	found := false
	for res.Next() {
		at, found = res.Record().Time(), true
	}
	err = res.Err()
	res.Close()
	if err != nil {
		return Row{}, false, fmt.Errorf("archive query: %w", err)
	}
	if !found {
		return Row{}, false, nil
	}
	var row Row
	got := false
	err = a.History(ctx, thing, stream, owner, at, at.Add(time.Nanosecond), func(r Row) bool {
		row, got = r, true
		return false
	})
	return row, got && err == nil, err
}

// Query runs a Flux query and returns every record's values (tests, tools).
func (a *Archive) Query(ctx context.Context, flux string) ([]map[string]any, error) {
	res, err := a.query.Query(ctx, flux)
	if err != nil {
		return nil, err
	}
	defer res.Close()
	var out []map[string]any
	for res.Next() {
		out = append(out, res.Record().Values())
	}
	return out, res.Err()
}

// Bucket is the bucket as Flux names it ("db/rp" or "db/" on 1.8).
func (a *Archive) Bucket() string { return a.bucket }

// fluxString quotes s as a Flux string literal.
func fluxString(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, `${`, `\${`, "\n", `\n`, "\r", `\r`, "\t", `\t`).Replace(s) + `"`
}
