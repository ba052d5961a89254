//go:build !linux

package heapfloor

// totalMemory is unknown off Linux: the floor's default stays 64 MiB.
func totalMemory() uint64 { return 0 }
