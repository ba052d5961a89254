package influx

import "github.com/influxdata/influxdb-client-go/v2/api"

// WrapQuery lets a test stand between the archive and its query API.
func WrapQuery(a *Archive, wrap func(api.QueryAPI) api.QueryAPI) { a.query = wrap(a.query) }
