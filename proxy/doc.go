// Package proxy is the home of request handling; it holds no code of its
// own. Its packages:
//
//   - core: the request core every engine shares: where a client is, the
//     plan of regions and backends, what follows a failed attempt, the
//     outcome's metrics and access log; no net/http types.
//   - h1: the native engine, geoproxy's own HTTP/1.1 server (event loops
//     and goroutines) and backend client with its connection pools.
//   - nethttp: the net/http engine (HTTP/2 over cleartext, streamed
//     bodies), which reaches backends through h1's pools.
//   - reqcheck: the rules both engines apply to a client's request.
package proxy
