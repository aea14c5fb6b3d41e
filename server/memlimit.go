package server

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"

	"go.uber.org/zap"
)

// SetMemoryLimit gives the Go runtime a soft memory limit that follows the
// configuration, unless GOMEMLIMIT is set: twice the memory the process
// uses once the server is built (the geo database above all), plus
// limits.request_memory, plus 64 MiB. Bodies the native engine lets go of
// are garbage until the next collection; without a limit the collector
// lets the heap grow to twice what is live first, so under a flood of
// uploads the process would reach two to three times its request budget.
// With the limit it collects sooner and returns memory to the system. It
// reports the limit set (0: none, GOMEMLIMIT rules). It sets a
// process-wide value: call it from main, once.
func (s *Server) SetMemoryLimit() int64 {
	if os.Getenv("GOMEMLIMIT") != "" {
		return 0
	}
	runtime.GC()
	sample := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(sample)
	inUse := int64(sample[0].Value.Uint64() - sample[1].Value.Uint64())
	limit := 2*inUse + s.gen.Load().cfg.Limits.RequestMemory + 64<<20
	debug.SetMemoryLimit(limit)
	s.log.Info("memory limit set", zap.Int64("bytes", limit), zap.Int64("in_use", inUse),
		zap.Int64("request_memory", s.gen.Load().cfg.Limits.RequestMemory))
	return limit
}
