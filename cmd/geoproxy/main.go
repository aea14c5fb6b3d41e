// Command geoproxy is a geo-aware global load balancer and reverse proxy:
// it sends each client to the nearest healthy region of a multi-region app.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/geoproxy/geoproxy/config"
	"github.com/geoproxy/geoproxy/demo"
	"github.com/geoproxy/geoproxy/geo"
	"github.com/geoproxy/geoproxy/proxy/core"
	"github.com/geoproxy/geoproxy/route"
	"github.com/geoproxy/geoproxy/server"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = ""

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `geoproxy sends each client to the nearest healthy region of a multi-region app.

Usage:
  geoproxy serve    -config FILE [-log-level LEVEL]   run the proxy
  geoproxy validate [-config] FILE                    check a config file and the geo database it names
  geoproxy lookup   -config FILE IP...                where would these clients go
  geoproxy demo     [flags]                           try it all on this machine
  geoproxy app      -region NAME [-listen ADDR]       run one demo regional app (for containers)
  geoproxy healthcheck [-url URL]                     exit 0 if URL answers 2xx (a container's HEALTHCHECK)
  geoproxy version                                    print version and geo data

Run 'geoproxy COMMAND -h' for a command's flags.
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		_, _ = fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return cmdServe(rest, stdout, stderr)
	case "validate":
		return cmdValidate(rest, stdout, stderr)
	case "lookup":
		return cmdLookup(rest, stdout, stderr)
	case "demo":
		return cmdDemo(rest, stdout, stderr)
	case "app":
		return cmdApp(rest, stdout, stderr)
	case "healthcheck":
		return cmdHealthcheck(rest, stdout, stderr)
	case "version", "-version", "--version":
		return cmdVersion(stdout, stderr)
	case "help", "-h", "-help", "--help":
		_, _ = fmt.Fprint(stdout, usage)
		return 0
	}
	_, _ = fmt.Fprintf(stderr, "geoproxy: unknown command %q\n\n%s", cmd, usage)
	return 2
}

func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		_, _ = fmt.Fprintf(stderr, "Usage: geoproxy %s\n\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags; it returns an exit code and false when the command
// must stop (help asked: 0, bad flags: 2).
func parse(fs *flag.FlagSet, args []string) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	return 0, true
}

func cmdServe(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("serve", "serve -config FILE [-log-level LEVEL]\n\nRuns the proxy and its admin listener until SIGINT or SIGTERM,\nthen lets in-flight requests finish.", stderr)
	path := fs.String("config", "geoproxy.yaml", "config file (YAML)")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	grace := fs.Duration("shutdown-grace", 15*time.Second, "how long in-flight requests may take to finish at shutdown")
	accessLog := fs.String("access-log", "", "write the access log to this file instead of stderr; SIGUSR1 reopens it (for logrotate)")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	return withLogger(*level, stderr, func(log *zap.Logger, ctx context.Context) int {
		if *accessLog != "" {
			file, err := openLog(*accessLog)
			if err != nil {
				_, _ = fmt.Fprintf(stderr, "geoproxy: %v\n", err)
				return 1
			}
			defer func() { _ = file.Close() }()
			fileCore := zapcore.NewCore(zapcore.NewJSONEncoder(encoderConfig()), file, zapcore.InfoLevel)
			log = log.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
				return splitCore{access: fileCore, rest: c}
			}))
			defer func() { _ = log.Sync() }()
			stopUSR1 := onSignal(ctx, syscall.SIGUSR1, func() {
				if err := file.reopen(); err != nil {
					log.Error("access log not reopened", zap.Error(err))
					return
				}
				log.Info("SIGUSR1: access log reopened", zap.String("file", *accessLog))
			})
			defer stopUSR1()
		}
		cfg, err := config.Load(*path)
		if err != nil {
			_, _ = fmt.Fprintf(stderr, "geoproxy: %v\n", err)
			return 1
		}
		srv, err := server.New(server.Options{Config: cfg, Log: log, Version: versionString()})
		if err != nil {
			log.Error("cannot start", zap.Error(err))
			return 1
		}
		srv.SetMemoryLimit()
		// SIGHUP, which systemctl reload sends, reloads; it does not end
		// the process.
		stopHUP := onSignal(ctx, syscall.SIGHUP, func() {
			log.Info("SIGHUP: reloading the config and the geo database")
			srv.Reload()        // logs and counts its own outcome
			_ = srv.ReloadGeo() // likewise
		})
		defer stopHUP()
		if err := srv.Run(ctx, *grace); err != nil {
			log.Error("stopped", zap.Error(err))
			return 1
		}
		return 0
	})
}

// onSignal calls fn on each sig until ctx ends or the returned function is
// called (which waits for fn to return).
func onSignal(ctx context.Context, sig os.Signal, fn func()) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, sig)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-ch:
				fn()
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		cancel()
		<-done
	}
}

// withLogger runs fn with a JSON logger at level on stderr and a context
// that ends on SIGINT or SIGTERM.
func withLogger(level string, stderr io.Writer, fn func(*zap.Logger, context.Context) int) int {
	log, err := newLogger(level, stderr)
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "geoproxy: %v\n", err)
		return 2
	}
	defer func() { _ = log.Sync() }()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return fn(log, ctx)
}

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("validate", "validate [-config] FILE\n\nPrints every problem in the file, and in the geo database it names, and exits 1;\nor prints ok.", stderr)
	path := fs.String("config", "geoproxy.yaml", "config file (YAML); may also be given as the argument")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	switch {
	case fs.NArg() > 1:
		_, _ = fmt.Fprintln(stderr, "geoproxy validate: give one config file")
		return 2
	case fs.NArg() == 1 && flagSet(fs, "config"):
		_, _ = fmt.Fprintln(stderr, "geoproxy validate: give the config file once, as -config FILE or as FILE")
		return 2
	case fs.NArg() == 1:
		*path = fs.Arg(0)
	}
	if _, err := config.LoadChecked(*path, checkGeoDatabase); err != nil {
		_, _ = fmt.Fprintln(stderr, err)
		return 1
	}
	_, _ = fmt.Fprintln(stdout, "ok")
	return 0
}

// flagSet reports whether the flag was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// checkGeoDatabase opens the geo database a config names, as serve would.
func checkGeoDatabase(cfg *config.Config) (string, error) {
	if cfg.GeoIP.Database == "" {
		return "", nil // the embedded one, checked by its own tests
	}
	db, err := geo.Open(cfg.GeoIP.Database)
	if err != nil {
		return "geoip.database", err
	}
	return "", db.Close()
}

func cmdLookup(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("lookup", "lookup -config FILE IP...\n\nPrints each address's location and the regions in the order they would\nbe tried (every backend assumed healthy; /admin/lookup shows live health).", stderr)
	path := fs.String("config", "geoproxy.yaml", "config file (YAML)")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() == 0 {
		_, _ = fmt.Fprintln(stderr, "geoproxy lookup: give at least one IP address")
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		_, _ = fmt.Fprintln(stderr, err)
		return 1
	}
	db, err := geo.Open(cfg.GeoIP.Database)
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "geoproxy: %v\n", err)
		return 1
	}
	defer func() { _ = db.Close() }()
	loc := server.NewLocator(cfg, db)
	specs, _, _ := server.Topology(cfg)
	snap := route.Build{Specs: specs, Rules: server.Rules(cfg),
		Backend: func(*route.Backend) (bool, float64) { return true, 1 }}.Snapshot()
	code := 0
	for _, raw := range fs.Args() {
		addr, err := netip.ParseAddr(raw)
		if err != nil {
			_, _ = fmt.Fprintf(stderr, "geoproxy lookup: %q is not an IP address\n", raw)
			code = 1
			continue
		}
		e := core.Explain(loc, snap, addr.Unmap())
		printExplanation(stdout, e)
	}
	return code
}

func printExplanation(w io.Writer, e core.Explanation) {
	l := e.Location
	place := strings.Trim(strings.Join([]string{l.City, l.Subdivision, l.Country, l.Continent}, ", "), ", ")
	for strings.Contains(place, ", , ") {
		place = strings.ReplaceAll(place, ", , ", ", ")
	}
	if place == "" {
		place = "unknown place"
	}
	_, _ = fmt.Fprintf(w, "%s: %s (%.2f, %.2f) [%s]\n", e.IP, place, l.Lat, l.Lon, e.GeoResult)
	if e.Rule != "" {
		rule := "  rule " + e.Rule
		if e.Allowed != nil {
			rule += ": allowed " + list(e.Allowed)
			if len(e.Fallback) > 0 {
				rule += ", fallback " + list(e.Fallback)
			}
		}
		if len(e.Preferred) > 0 {
			rule += ", preferred " + list(e.Preferred)
		}
		_, _ = fmt.Fprintln(w, rule)
	}
	if e.Rejected {
		_, _ = fmt.Fprintln(w, "  refused: no region its rule allows can serve now (503)")
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for i, r := range e.Regions {
		extra := ""
		if r.Bias != 0 {
			extra = fmt.Sprintf(" (bias %+d)", r.Bias)
		}
		_, _ = fmt.Fprintf(tw, "  %d.\t%s\t%.0f km%s\t%s\n", i+1, r.Name, r.DistanceKm, extra, r.Why)
	}
	_ = tw.Flush()
}

// list joins region names for a line of text.
func list(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

func cmdDemo(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("demo", "demo [flags]\n\nStarts three demo regional apps (us-east, us-west, europe-west) on loopback\nand geoproxy in front of them, and prints commands to try.", stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "proxy address")
	admin := fs.String("admin", "127.0.0.1:9090", "admin address (metrics, dashboard)")
	appPort := fs.Int("app-port", 9101, "first demo app port (the others follow); 0 picks free ports")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	return withLogger(*level, stderr, func(log *zap.Logger, ctx context.Context) int {
		err := demo.Run(ctx, demo.Options{
			Listen: *listen, Admin: *admin, AppHost: "127.0.0.1", AppPort: *appPort,
			Log: log, Version: versionString(), Out: stdout,
		})
		if err != nil {
			_, _ = fmt.Fprintf(stderr, "geoproxy: %v\n", err)
			return 1
		}
		return 0
	})
}

func cmdVersion(stdout, stderr io.Writer) int {
	_, _ = fmt.Fprintf(stdout, "geoproxy %s (%s, %s/%s)\n", versionString(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	db, err := geo.Open("")
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "geoproxy: %v\n", err)
		return 1
	}
	defer func() { _ = db.Close() }()
	info := db.Info()
	_, _ = fmt.Fprintf(stdout, "embedded geo data: %s (%s), built %s\n", info.DatabaseType, info.Kind, info.BuildTime.Format("2006-01-02"))
	if info.Source != "" {
		_, _ = fmt.Fprintf(stdout, "  source: %s, built %s\n", info.Source, info.SourceBuildTime.Format("2006-01-02"))
	}
	if info.Attribution != "" {
		_, _ = fmt.Fprintf(stdout, "  %s\n", info.Attribution)
	}
	if strings.Contains(info.Attribution, "DB-IP") {
		_, _ = fmt.Fprintf(stdout, "  licence: CC BY 4.0, https://creativecommons.org/licenses/by/4.0/\n")
	}
	if info.Modified != "" {
		_, _ = fmt.Fprintf(stdout, "  %s\n", info.Modified)
	}
	return 0
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// newLogger returns a JSON logger on w.
func newLogger(level string, w io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	core := zapcore.NewCore(zapcore.NewJSONEncoder(encoderConfig()), zapcore.Lock(zapcore.AddSync(w)), lvl)
	return zap.New(core, zap.ErrorOutput(zapcore.Lock(zapcore.AddSync(w)))), nil
}

// encoderConfig is the JSON encoding of every log line: ISO 8601 times,
// durations with their unit ("1.5s").
func encoderConfig() zapcore.EncoderConfig {
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	enc.EncodeDuration = zapcore.StringDurationEncoder
	return enc
}
