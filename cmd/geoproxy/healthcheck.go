package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
)

func cmdHealthcheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("healthcheck", "healthcheck [-url URL] [-timeout 2s]\n\nSends GET URL and exits 0 on a 2xx answer, 1 otherwise, saying why: for a\ncontainer's HEALTHCHECK, in an image that has no shell and no curl.", stderr)
	target := fs.String("url", "http://127.0.0.1:9090/readyz", "URL to check (http or https)")
	timeout := fs.Duration("timeout", 2*time.Second, "limit for the whole check")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		_, _ = fmt.Fprintln(stderr, "geoproxy healthcheck: give the URL with -url")
		return 2
	}
	if u, err := url.Parse(*target); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		_, _ = fmt.Fprintf(stderr, "geoproxy healthcheck: -url %q: give an absolute http or https URL\n", *target)
		return 2
	}
	if *timeout <= 0 {
		_, _ = fmt.Fprintln(stderr, "geoproxy healthcheck: -timeout must be positive")
		return 2
	}
	status, body, err := check(*target, *timeout)
	switch {
	case err != nil:
		_, _ = fmt.Fprintf(stderr, "unhealthy: %v\n", err)
		return 1
	case status/100 != 2:
		_, _ = fmt.Fprintf(stderr, "unhealthy: GET %s: %d %s%s\n", *target, status, http.StatusText(status), body)
		return 1
	}
	_, _ = fmt.Fprintf(stdout, "healthy: GET %s: %d %s%s\n", *target, status, http.StatusText(status), body)
	return 0
}

// check sends one GET, through no proxy, without following redirects, and
// returns the status and the start of the body (": ..." or "").
func check(target string, timeout time.Duration) (int, string, error) {
	client := &http.Client{
		Timeout:   timeout,
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	resp, err := client.Get(target)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	text := strings.Join(strings.FieldsFunc(string(b), func(r rune) bool {
		return unicode.IsSpace(r) || !unicode.IsPrint(r)
	}), " ")
	if text != "" {
		text = ": " + text
	}
	return resp.StatusCode, text, nil
}
