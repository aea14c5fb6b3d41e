// Package cli is the command-line frame both benchmark programs share: the
// flag set and its usage text, lists of names given in a flag, the context
// that a signal ends, exit codes, progress lines on stderr, and the files a
// run writes.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Main parses args with parse and runs run with the options, under a
// context that SIGINT, SIGTERM or SIGHUP ends, and returns the program's
// exit code: 0, or 0 after -h, 2 for bad flags, 130 when a signal ended the
// run, 1 after any other error, which it prints to stderr after name.
func Main[O any](name string, args []string, parse func([]string) (O, error), run func(context.Context, O) error) int {
	return runMain(os.Stderr, name, args, parse, run)
}

func runMain[O any](stderr io.Writer, name string, args []string, parse func([]string) (O, error), run func(context.Context, O) error) int {
	o, err := parse(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, name+":", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	err = run(ctx, o)
	interrupted := ctx.Err() != nil
	stop()
	if err != nil {
		if interrupted {
			fmt.Fprintln(stderr, name+": interrupted; every process started was stopped")
			return 130
		}
		fmt.Fprintln(stderr, name+":", err)
		return 1
	}
	return 0
}

// NewFlagSet returns the flag set of program name, which returns its
// errors; its usage names the script that runs the program, then says about
// it and lists the flags.
func NewFlagSet(name, script, about string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s [flags]\n\n%s\n\nFlags:\n", script, about)
		fs.PrintDefaults()
	}
	return fs
}

// Names splits the comma-separated list s, checks each name against known,
// drops repeats and sorts them in the order of known. An unknown name's
// error calls it a noun; none is the error when s names nothing.
func Names(s string, known []string, noun, none string) ([]string, error) {
	var out []string
	for n := range strings.SplitSeq(s, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if !slices.Contains(known, n) {
			return nil, fmt.Errorf("unknown %s %q (known: %s)", noun, n, strings.Join(known, ", "))
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return nil, errors.New(none)
	}
	slices.SortFunc(out, func(a, b string) int { return slices.Index(known, a) - slices.Index(known, b) })
	return out, nil
}

// Progress writes one line to stderr, after the time of day.
func Progress(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
}

// WriteFile writes content to path, making its directory first.
func WriteFile(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(content), 0o644)
}
