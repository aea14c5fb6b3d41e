package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestMainExitCodes(t *testing.T) {
	parse := func(args []string) (string, error) {
		fs := NewFlagSet("prog", "bench/prog.sh", "Does things.")
		fs.SetOutput(new(bytes.Buffer))
		x := fs.String("x", "", "what to do")
		if err := fs.Parse(args); err != nil {
			return "", err
		}
		return *x, nil
	}
	run := func(ctx context.Context, x string) error {
		switch x {
		case "fail":
			return errors.New("it failed")
		case "signal":
			// The signal reaches the context, not the default action.
			if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
				return err
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(5 * time.Second):
				return errors.New("no signal seen")
			}
		}
		return nil
	}
	for _, c := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{nil, 0, ""},
		{[]string{"-h"}, 0, ""},
		{[]string{"-nope"}, 2, "prog: flag provided but not defined: -nope\n"},
		{[]string{"-x", "fail"}, 1, "prog: it failed\n"},
		{[]string{"-x", "signal"}, 130, "prog: interrupted; every process started was stopped\n"},
	} {
		var stderr bytes.Buffer
		if code := runMain(&stderr, "prog", c.args, parse, run); code != c.code || stderr.String() != c.stderr {
			t.Errorf("%v: exit %d, stderr %q; want %d, %q", c.args, code, stderr.String(), c.code, c.stderr)
		}
	}
}

func TestUsage(t *testing.T) {
	fs := NewFlagSet("prog", "bench/prog.sh", "Does things,\non two lines.")
	var out bytes.Buffer
	fs.SetOutput(&out)
	fs.Int("n", 3, "how many")
	if err := fs.Parse([]string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v", err)
	}
	want := "Usage: bench/prog.sh [flags]\n\nDoes things,\non two lines.\n\nFlags:\n  -n int\n    \thow many (default 3)\n"
	if out.String() != want {
		t.Errorf("got %q\nwant %q", out.String(), want)
	}
}

func TestNames(t *testing.T) {
	known := []string{"direct", "nginx", "geoproxy"}
	got, err := Names("geoproxy, direct,,nginx,direct", known, "target", "no target")
	if err != nil || strings.Join(got, ",") != "direct,nginx,geoproxy" {
		t.Errorf("got %v, %v; want the known order, no repeats", got, err)
	}
	if _, err := Names("envoy", known, "target", "no target"); err == nil || err.Error() != `unknown target "envoy" (known: direct, nginx, geoproxy)` {
		t.Errorf("unknown name: %v", err)
	}
	if _, err := Names(" , ", known, "target", "no target"); err == nil || err.Error() != "no target" {
		t.Errorf("no name: %v", err)
	}
}

func TestWriteFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b", "c.conf")
	if err := WriteFile(path, "x = 1\n"); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "x = 1\n" {
		t.Errorf("read back %q, %v", b, err)
	}
	if err := WriteFile(filepath.Join(path, "under-a-file"), ""); err == nil {
		t.Error("no error writing under a file")
	}
}
