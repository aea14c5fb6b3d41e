package core

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/geoproxy/geoproxy/route"
)

// Answers when no attempt succeeded; both engines send them.
const (
	MsgNoRegion    = "geoproxy: no healthy region can serve this request"
	MsgTimeout     = "geoproxy: the backend did not answer in time"
	MsgUnreachable = "geoproxy: no backend could be reached"
	MsgResidency   = "geoproxy: this request cannot be served in its jurisdiction now"
)

// StatusError is a backend answer with a status in the retry list: the
// attempt counts as failed and the request moves on.
type StatusError struct{ Code int }

func (e *StatusError) Error() string { return "backend answered " + strconv.Itoa(e.Code) }

// DialFailed reports whether err happened while connecting: the request
// never reached the backend.
func DialFailed(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// MayRetry reports whether a failed attempt may be repeated on another
// backend as far as the error and the method go: the request never left,
// or its method is idempotent. Failed adds what had happened.
func MayRetry(err error, method string) bool {
	return DialFailed(err) || Idempotent(method)
}

// Progress is what had happened when an attempt failed, as the engine saw
// it.
type Progress struct {
	// Answered: part of an answer already went to the client.
	Answered bool
	// BodySpent: some of the request body was read from the client and
	// cannot be sent again (an engine that holds bodies never sets it).
	BodySpent bool
	// ClientGone: the client has gone, or writing to it failed.
	ClientGone bool
	// Stopping: the engine is shutting down.
	Stopping bool
}

// Failed is the one rule, for every engine, of what follows an attempt on
// be that failed with err before its answer went through: it reports
// whether the request goes on to the next backend (Next), else the engine
// answers with Failure, unless the client already has part of an answer or
// is gone. A failure that is the backend's (not the client's, nor a
// shutdown's) is counted against the backend.
func (b *Balancer) Failed(d *Decision, be *route.Backend, err error, method string, p Progress) bool {
	if p.ClientGone || p.Stopping {
		return false
	}
	if p.Answered {
		return false // the client has part of it: nothing can be repeated
	}
	if b.deadline > 0 && timedOut(err) && time.Since(d.Start) >= b.deadline {
		// The request's time ran out, not the backend's: the wait was
		// cut short. No retry, and nothing counted against the backend.
		d.OutOfTime = true
		return false
	}
	b.UpstreamError(be)
	d.freeRetry = DialFailed(err)
	if b.passive != nil {
		var se *StatusError
		if errors.As(err, &se) {
			b.passive.Answered(be.Index, se.Code)
		} else {
			b.passive.Failed(be.Index)
		}
	}
	return !p.BodySpent && MayRetry(err, method)
}

// RetryStatus returns a StatusError when a backend's answer code should be
// retried elsewhere instead of sent: the code is in the configured list, the
// request is idempotent and has no body, and another attempt is possible.
func (b *Balancer) RetryStatus(d *Decision, code int, method string, hasBody bool) error {
	d.freeRetry = false // the backend answered: a retry costs budget
	if code < 500 || hasBody || !slices.Contains(b.retryOnStatus, code) || !Idempotent(method) || !b.HasNext(d) {
		return nil
	}
	return &StatusError{Code: code}
}

// Failure returns the status and one-line message to answer when no attempt
// succeeded; err is the last attempt's error, if any. A 503 and a 429 go
// with a Retry-After field: the engine's for a 503, d.RetryAfter for a 429.
func Failure(d *Decision, err error) (int, string) {
	switch {
	case d.Limited:
		return 429, MsgClientRate
	case d.Plan.Rejected:
		return 503, MsgResidency
	case d.Plan.Serving < 0:
		return 503, MsgNoRegion
	case d.OutOfTime || err != nil && timedOut(err):
		return 504, MsgTimeout
	case d.fenced:
		// The allowed regions failed the request, and only regions its
		// rule does not allow were left.
		return 503, MsgResidency
	}
	return 502, MsgUnreachable
}

func timedOut(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
