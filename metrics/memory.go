package metrics

import "github.com/prometheus/client_golang/prometheus"

// RequestMemory reports the memory an engine holds for requests now, its
// limit, and how many requests it has refused for want of memory.
type RequestMemory func() (used, limit, refused int64)

// RegisterRequestMemory registers the native engine's memory budget on reg:
// what it holds, its limit, and the requests refused.
func RegisterRequestMemory(reg prometheus.Registerer, mem RequestMemory) {
	get := func(i int) func() float64 {
		return func() float64 {
			used, limit, refused := mem()
			return float64([]int64{used, limit, refused}[i])
		}
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "geoproxy_request_memory_bytes",
			Help: "Memory the native engine holds for requests now: bodies and grown read buffers (limits.request_memory bounds it).",
		}, get(0)),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "geoproxy_request_memory_limit_bytes",
			Help: "The native engine's memory budget for requests (limits.request_memory).",
		}, get(1)),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "geoproxy_request_memory_refusals_total",
			Help: "Requests refused with 503 because the memory budget for requests was spent.",
		}, get(2)),
	)
}
