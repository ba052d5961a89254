package policies

import (
	"encoding/json"
	"strconv"
)

// normalizeScalar coerces a decoded attribute or literal into the three
// kinds conditions compare: string, float64, bool.
func normalizeScalar(v any) (any, bool) {
	switch x := v.(type) {
	case string, bool, float64:
		return x, true
	case float32:
		return float64(x), true
	case int:
		return float64(x), true
	case int8:
		return float64(x), true
	case int16:
		return float64(x), true
	case int32:
		return float64(x), true
	case int64:
		return float64(x), true
	case uint:
		return float64(x), true
	case uint8:
		return float64(x), true
	case uint16:
		return float64(x), true
	case uint32:
		return float64(x), true
	case uint64:
		return float64(x), true
	case json.Number:
		f, err := strconv.ParseFloat(string(x), 64)
		return f, err == nil
	}
	return nil, false
}
