package h1

import (
	"errors"
	"time"

	"github.com/geoproxy/geoproxy/metrics"
)

// errBodyTimeout: a request body not all in within the body timeout (408);
// errTimeout is the head's.
var errBodyTimeout = errors.New("request not received in time")

// Timeout returns the client timeout configured, unless override is other
// than DefaultClientTimeout: a server-wide timeout with which tests shorten
// every client timeout at once.
func Timeout(configured, override time.Duration) time.Duration {
	if override > 0 && override != DefaultClientTimeout {
		return override
	}
	return configured
}

// limitCounters count the requests the client limits refused
// (geoproxy_client_limit_hits_total).
type limitCounters struct{ metrics.LimitCounters }

// count counts a request refused with err, when a client limit refused it.
func (l *limitCounters) count(err error) {
	switch err {
	case errTimeout:
		l.HeadTimeout.Inc()
	case errBodyTimeout:
		l.BodyTimeout.Inc()
	case errHeadTooBig:
		l.HeaderBytes.Inc()
	case errBodyTooBig:
		l.RequestBody.Inc()
	}
}
