package core

import "math/rand/v2"

// RequestIDHeader carries a request's ID to the backend.
const RequestIDHeader = "X-Request-Id"

// AppendRequestID appends a new request ID: 16 hex digits.
func AppendRequestID(dst []byte) []byte {
	const hex = "0123456789abcdef"
	v := rand.Uint64()
	for i := 60; i >= 0; i -= 4 {
		dst = append(dst, hex[v>>uint(i)&0xf])
	}
	return dst
}

// ValidRequestID reports whether an X-Request-Id a trusted proxy sent may
// be kept: 1 to 128 visible ASCII characters.
func ValidRequestID[T string | []byte](v T) bool {
	if len(v) == 0 || len(v) > 128 {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] <= ' ' || v[i] >= 0x7f {
			return false
		}
	}
	return true
}
